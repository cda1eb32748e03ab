"""Invoke tasks: thin wrappers, exported as the `ns` collection. A user's tasks.py:

    from nixtasks.tasks import ns
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import task

HELP = {
    "host": "a host to act on (repeat, or a comma list); none means this machine",
    "target-host": "ssh target to deploy to, overriding the inventory ([user@]address)",
    "build-host": "machine to build on ([user@]address), or localhost",
    "sudo": "use sudo -n on the target",
    "no-sudo": "do not use sudo on the target",
    "show-trace": "pass --show-trace to Nix",
    "dry-run": "print the commands that would change something; run none of them",
    "yes": "approve the activation (also YES=1 for make, NIXTASKS_YES=1)",
    "reason": "why this deploy happens (also REASON=... for make)",
    "inventory": "the inventory file (default: nixtasks.toml, or NIXTASKS_INVENTORY)",
}


def reports_errors(body: Callable[..., Any]) -> Callable[..., Any]:
    """Any nixtasks error becomes one `error: ...` line and its exit code."""

    @functools.wraps(body)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..errors import EXIT_INTERRUPTED, NixtasksError

        try:
            return body(*args, **kwargs)
        except NixtasksError as exc:
            print(exc.line, file=sys.stderr)
            raise Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            raise Exit(code=EXIT_INTERRUPTED) from None

    return wrapper


def action_task(action_name: str, doc: str) -> Any:
    @task(name=action_name, iterable=["host"], help=HELP)
    @reports_errors
    def run(c: Any, host: Any = None, target_host: str | None = None, build_host: str | None = None,
            sudo: bool = False, no_sudo: bool = False, show_trace: bool = False, dry_run: bool = False,
            yes: bool = False, reason: str = "", inventory: str | None = None) -> None:
        from ..models import Action
        from .app import Options, run_action

        opts = Options(hosts=tuple(host or ()), target_host=target_host, build_host=build_host,
                       sudo=sudo_choice(sudo, no_sudo), show_trace=show_trace, dry_run=dry_run, yes=yes,
                       reason=reason, inventory=inventory)
        run_action(Action(action_name), opts)

    run.__doc__ = doc
    run.body.__doc__ = doc
    return run


def sudo_choice(sudo: bool, no_sudo: bool) -> bool | None:
    return True if sudo else False if no_sudo else None


def options(host: Any, target_host: str | None = None, sudo: bool = False, no_sudo: bool = False,
            dry_run: bool = False, yes: bool = False, reason: str = "", inventory: str | None = None,
            tag: Any = None, all_hosts: bool = False) -> Any:
    from .app import Options

    return Options(hosts=tuple(host or ()), tags=tuple(tag or ()), all_hosts=all_hosts, target_host=target_host,
                   sudo=sudo_choice(sudo, no_sudo), dry_run=dry_run, yes=yes, reason=reason, inventory=inventory)


def help_for(*names: str, **extra: str) -> dict[str, str]:
    return {**{n: HELP[n] for n in names}, **extra}


@task(iterable=["host"], help=help_for(
    "host", "target-host", "sudo", "no-sudo", "dry-run", "yes", "reason", "inventory",
    generation="roll back to this generation (default: the previous one)",
    boot="only make it the boot entry; activate at the next boot"))
@reports_errors
def rollback(c: Any, host: Any = None, generation: int = 0, boot: bool = False, target_host: str | None = None,
             sudo: bool = False, no_sudo: bool = False, dry_run: bool = False, yes: bool = False, reason: str = "",
             inventory: str | None = None) -> None:
    """Go back to the previous generation, or to --generation N, with plan, diff and approval."""
    from .app import run_rollback

    opts = options(host, target_host, sudo, no_sudo, dry_run, yes, reason, inventory)
    run_rollback(opts, generation or None, boot)


@task(iterable=["host"], help=help_for("host", "target-host", "sudo", "no-sudo", "inventory",
                                       json="print the generations as JSON"))
@reports_errors
def generations(c: Any, host: Any = None, json: bool = False, target_host: str | None = None, sudo: bool = False,
                no_sudo: bool = False, inventory: str | None = None) -> None:
    """List system generations, newest first: date, version, revision, running, boots."""
    from .app import run_generations

    run_generations(options(host, target_host, sudo, no_sudo, inventory=inventory), json)


SELECT = {"tag": "hosts with this tag from the inventory (repeat, or a comma list)",
          "all": "every host in the inventory"}


@task(iterable=["host", "tag"], help=help_for("host", "inventory", **SELECT, json="print the table as JSON"))
@reports_errors
def status(c: Any, host: Any = None, tag: Any = None, all: bool = False, json: bool = False,
           inventory: str | None = None) -> None:
    """One table for the fleet: reachable, generation, drift from the flake at HEAD, failed units."""
    from .app import run_status

    run_status(options(host, inventory=inventory, tag=tag, all_hosts=all), json)


@task(iterable=["host", "tag"], help=help_for("host", "target-host", "sudo", "no-sudo", "inventory", **SELECT))
@reports_errors
def verify(c: Any, host: Any = None, tag: Any = None, all: bool = False, target_host: str | None = None,
           sudo: bool = False, no_sudo: bool = False, inventory: str | None = None) -> None:
    """Check hosts: version, boot profile, drift, failed units, error journal, health checks."""
    from .app import run_verify

    run_verify(options(host, target_host, sudo, no_sudo, inventory=inventory, tag=tag, all_hosts=all))


@task(iterable=["host", "tag"], help=help_for("host", "inventory", **SELECT, json="print the records as JSON"))
@reports_errors
def history(c: Any, host: Any = None, tag: Any = None, all: bool = False, json: bool = False,
            inventory: str | None = None) -> None:
    """What was done to hosts: the deployer's journal merged with each host's own."""
    from .app import run_history

    run_history(options(host, inventory=inventory, tag=tag, all_hosts=all), json)


@task(iterable=["host", "tag"], help=help_for("host", "target-host", "sudo", "no-sudo", "dry-run", "yes", "inventory",
                                              **SELECT, keep="how many of the newest generations to keep"))
@reports_errors
def gc(c: Any, host: Any = None, keep: int = 3, tag: Any = None, all: bool = False, target_host: str | None = None,
       sudo: bool = False, no_sudo: bool = False, dry_run: bool = False, yes: bool = False,
       inventory: str | None = None) -> None:
    """Delete old generations (never the running or booting one) and collect garbage."""
    from .app import run_gc

    run_gc(options(host, target_host, sudo, no_sudo, dry_run, yes, inventory=inventory, tag=tag, all_hosts=all), keep)


@task(iterable=["host", "tag"], help=help_for("host", "target-host", "sudo", "no-sudo", "inventory", **SELECT))
@reports_errors
def doctor(c: Any, host: Any = None, tag: Any = None, all: bool = False, target_host: str | None = None,
           sudo: bool = False, no_sudo: bool = False, inventory: str | None = None) -> None:
    """Pre-flight: ssh, sudo, Nix, copy trust, disk space, git; prints the fix for each problem."""
    from .app import run_doctor

    run_doctor(options(host, target_host, sudo, no_sudo, inventory=inventory, tag=tag, all_hosts=all))


@task(help={"user": "the ssh user nixtasks logs in as (default: deploy)"})
@reports_errors
def sudoers(c: Any, user: str = "deploy") -> None:
    """Print a sudoers snippet allowing exactly the commands nixtasks runs with sudo."""
    from .app import print_sudoers

    print_sudoers(user)


build = action_task("build", "Build the system closure; activate nothing.")
dry_build = action_task("dry-build", "Show what would be built or fetched; build nothing.")
switch = action_task("switch", "Build, set the boot profile and activate now.")
boot = action_task("boot", "Build and set the boot profile; activate at the next boot.")
test = action_task("test", "Build and activate now; leave the boot entry alone.")
dry_activate = action_task("dry-activate", "Build and show what activation would change.")

ns = Collection(build, dry_build, switch, boot, test, dry_activate, rollback, generations, status, verify,
                history, gc, doctor, sudoers)
