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
        from .errors import EXIT_INTERRUPTED, NixtasksError

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
        from .app import Options, run_action
        from .models import Action

        opts = Options(tuple(host or ()), target_host, build_host, True if sudo else False if no_sudo else None,
                       show_trace, dry_run, yes, reason, inventory)
        run_action(Action(action_name), opts)

    run.__doc__ = doc
    run.body.__doc__ = doc
    return run


def options(host: Any, target_host: str | None = None, sudo: bool = False, no_sudo: bool = False,
            dry_run: bool = False, yes: bool = False, reason: str = "", inventory: str | None = None) -> Any:
    from .app import Options

    return Options(tuple(host or ()), target_host, None, True if sudo else False if no_sudo else None, False,
                   dry_run, yes, reason, inventory)


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


build = action_task("build", "Build the system closure; activate nothing.")
dry_build = action_task("dry-build", "Show what would be built or fetched; build nothing.")
switch = action_task("switch", "Build, set the boot profile and activate now.")
boot = action_task("boot", "Build and set the boot profile; activate at the next boot.")
test = action_task("test", "Build and activate now; leave the boot entry alone.")
dry_activate = action_task("dry-activate", "Build and show what activation would change.")

ns = Collection(build, dry_build, switch, boot, test, dry_activate, rollback, generations)
