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
    "tag": "hosts with this tag from the inventory (repeat, or a comma list)",
    "all": "every host in the inventory",
    "verbose": "log every command nixtasks runs",
    "json": "print the report as JSON on stdout (with seconds per stage)",
    "diff": "show each host's whole closure diff in the plan, not its summary",
    "parallel": "hosts activated at once within a batch (default 10)",
    "batch-size": "hosts per batch: a number, or a percentage like 20%",
    "batches": "batch sizes in order, the last repeating, like Ansible's serial: 1,5,20%",
    "pause": "seconds to wait between batches",
    "max-fail-percentage": "halt when more than this percentage of a batch fails (default 0)",
    "rollback-batch-on-failure": "when a batch halts the deploy, roll back its healthy hosts too",
    "no-checks": "skip the health checks after activation (the journal says so)",
    "no-rollback": "leave a failed host as it is, for debugging",
    "no-watchdog": "activate remote hosts without the watchdog that reverts a host cut off by its activation",
    "confirm-timeout": "seconds a host waits for the confirmation before its watchdog reverts it (default 30)",
    "skip-unreachable": "report unreachable hosts as skipped instead of stopping",
}
FLEET = ("tag", "all", "verbose", "json", "diff", "parallel", "batch-size", "batches", "pause", "max-fail-percentage",
         "rollback-batch-on-failure", "no-checks", "no-rollback", "no-watchdog", "confirm-timeout", "skip-unreachable")


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
    @task(name=action_name, iterable=["host", "tag"], help=HELP)
    @reports_errors
    def run(c: Any, host: Any = None, tag: Any = None, all: bool = False, target_host: str | None = None,
            build_host: str | None = None, sudo: bool = False, no_sudo: bool = False, show_trace: bool = False,
            dry_run: bool = False, yes: bool = False, reason: str = "", inventory: str | None = None,
            verbose: bool = False, json: bool = False, diff: bool = False, parallel: str | None = None,
            batch_size: str | None = None, batches: str | None = None, pause: str | None = None,
            max_fail_percentage: str | None = None, rollback_batch_on_failure: bool = False,
            no_checks: bool = False, no_rollback: bool = False, no_watchdog: bool = False,
            confirm_timeout: str | None = None, skip_unreachable: bool = False) -> None:
        from ..models import Action
        from .app import Options, policy_flags, run_action

        flags = policy_flags(parallel=parallel, batch_size=batch_size, batches=batches, pause=pause,
                             max_fail_percentage=max_fail_percentage,
                             rollback_batch_on_failure=rollback_batch_on_failure, no_checks=no_checks,
                             no_rollback=no_rollback, no_watchdog=no_watchdog, confirm_timeout=confirm_timeout,
                             skip_unreachable=skip_unreachable)
        opts = Options(hosts=tuple(host or ()), tags=tuple(tag or ()), all_hosts=all, target_host=target_host,
                       build_host=build_host, sudo=sudo_choice(sudo, no_sudo), show_trace=show_trace,
                       dry_run=dry_run, yes=yes, reason=reason, inventory=inventory, verbose=verbose, json=json,
                       full_diff=diff, policy=flags)
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


@task(iterable=["host", "tag"], help=help_for(
    "host", "target-host", "sudo", "no-sudo", "dry-run", "yes", "reason", "inventory", *FLEET,
    generation="roll back to this generation (default: the previous one)",
    boot="only make it the boot entry; activate at the next boot"))
@reports_errors
def rollback(c: Any, host: Any = None, tag: Any = None, all: bool = False, generation: str | None = None,
             boot: bool = False, target_host: str | None = None, sudo: bool = False, no_sudo: bool = False,
             dry_run: bool = False, yes: bool = False, reason: str = "", inventory: str | None = None,
             verbose: bool = False, json: bool = False, diff: bool = False, parallel: str | None = None,
             batch_size: str | None = None, batches: str | None = None, pause: str | None = None,
             max_fail_percentage: str | None = None, rollback_batch_on_failure: bool = False,
             no_checks: bool = False, no_rollback: bool = False, no_watchdog: bool = False,
             confirm_timeout: str | None = None, skip_unreachable: bool = False) -> None:
    """Go back to the previous generation, or to --generation N, with plan, diff and approval."""
    from dataclasses import replace

    from .app import number, policy_flags, run_rollback

    flags = policy_flags(parallel=parallel, batch_size=batch_size, batches=batches, pause=pause,
                         max_fail_percentage=max_fail_percentage,
                         rollback_batch_on_failure=rollback_batch_on_failure, no_checks=no_checks,
                         no_rollback=no_rollback, no_watchdog=no_watchdog, confirm_timeout=confirm_timeout,
                         skip_unreachable=skip_unreachable)
    opts = replace(options(host, target_host, sudo, no_sudo, dry_run, yes, reason, inventory, tag, all),
                   verbose=verbose, json=json, full_diff=diff, policy=flags)
    run_rollback(opts, number(generation, "--generation", 1) if generation is not None else None, boot)


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
                                              "parallel", "json", "verbose", **SELECT,
                                              keep="how many of the newest generations to keep (default 3)"))
@reports_errors
def gc(c: Any, host: Any = None, keep: str = "3", tag: Any = None, all: bool = False, target_host: str | None = None,
       sudo: bool = False, no_sudo: bool = False, dry_run: bool = False, yes: bool = False,
       inventory: str | None = None, parallel: str | None = None, json: bool = False, verbose: bool = False) -> None:
    """Delete old generations (never the running or booting one) and collect garbage."""
    from dataclasses import replace

    from .app import number, policy_flags, run_gc

    opts = options(host, target_host, sudo, no_sudo, dry_run, yes, inventory=inventory, tag=tag, all_hosts=all)
    flags = policy_flags(parallel=parallel)
    run_gc(replace(opts, json=json, verbose=verbose, policy=flags), number(keep, "--keep", 1))


@task(iterable=["host", "tag"], help=help_for("host", "yes", "inventory", **SELECT))
@reports_errors
def unlock(c: Any, host: Any = None, tag: Any = None, all: bool = False, yes: bool = False,
           inventory: str | None = None) -> None:
    """Show who holds a host's deploy lock, and remove it after a confirmation."""
    from .app import run_unlock

    opts = options(host, yes=yes, inventory=inventory, tag=tag, all_hosts=all)
    if not (opts.hosts or opts.tags or opts.all_hosts):
        from ..errors import UsageError

        raise UsageError("unlock needs --host NAME (or --tag, --all): which host's lock")
    run_unlock(opts)


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
                history, gc, unlock, doctor, sudoers)
