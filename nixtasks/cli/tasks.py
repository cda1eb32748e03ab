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
from invoke.tasks import Task, task

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
    "keep-going": "a host whose evaluation or build fails is reported failed; the others go on (non-zero exit)",
    "allow-secret": "a file the secrets guard lets into the Nix store on purpose (repeat)",
    "ask-sudo-password": "ask once for the sudo password of the hosts' ssh user (also NIXTASKS_ASK_SUDO_PASSWORD=1; "
                         "without a terminal: NIXTASKS_SUDO_PASSWORD_FILE)",
    "impure": "pass --impure to nix eval (the configuration may read the environment and any file)",
    "option": "a Nix setting for the evaluation and build, NAME=VALUE or 'NAME VALUE' (repeat), like nix's "
              "--option NAME VALUE",
    "override-input": "evaluate with a flake input replaced: INPUT=REF or 'INPUT REF' (repeat)",
    "print-build-logs": "-L: show the build logs of what the evaluation builds",
    "max-jobs": "builds at once on the build machine (a number, or auto)",
    "cores": "cores each build may use (0: all)",
    "copy-timeout": "seconds one host's copy may take (default 3600)",
    "activation-timeout": "seconds one host's activation may take (default 1800)",
    "cache": "send the release through the inventory's [cache] (the default when it has one)",
    "no-cache": "copy every closure straight from here, even when the inventory has a [cache]",
    "cache-only": "a host that cannot take its system from the cache fails, rather than get a direct copy",
    "builders": "a Nix remote builder, like 'ssh://builder x86_64-linux - 4' (repeat); with --max-jobs 0 this "
                "machine builds nothing itself",
}


def reports_errors(body: Callable[..., Any]) -> Callable[..., Any]:
    """Any nixtasks error becomes one `error: ...` line and its exit code."""

    @functools.wraps(body)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..errors import EXIT_INTERRUPTED, NixtasksError

        try:
            check_flags_have_values(body.__name__.replace("_", "-"), sys.argv)
            return body(*args, **kwargs)
        except NixtasksError as exc:
            print(exc.line, file=sys.stderr)
            raise Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            raise Exit(code=EXIT_INTERRUPTED) from None

    return wrapper


def check_flags_have_values(name: str, argv: list[str]) -> None:
    """A bare `--host` (or `--tag`) at the end or before another flag reaches the task as no
    selection at all, which means this machine: refuse it instead (invoke cannot tell)."""
    from ..errors import UsageError

    if name not in ns.task_names or name not in argv:
        return
    flags = {f"-{'-' if len(n) > 1 else ''}{n.replace('_', '-')}": a.name for a in ns[name].get_arguments()
             if a.name in ("host", "tag") for n in a.names}
    rest = argv[argv.index(name) + 1:]
    for i, token in enumerate(rest):
        if token in flags and (i + 1 == len(rest) or rest[i + 1].startswith("-")):
            flag = f"--{flags[token]}"
            raise UsageError(f"{token} needs a value: {flag} NAME, or a comma list; to act on this machine, "
                             f"leave out {flag}")


def sudo_choice(sudo: bool, no_sudo: bool) -> bool | None:
    return True if sudo else False if no_sudo else None


def cache_choice(cache: bool, no_cache: bool, cache_only: bool) -> bool | None:
    """--cache / --no-cache (--cache-only implies --cache); None: the inventory decides."""
    from ..errors import UsageError

    if no_cache and (cache or cache_only):
        raise UsageError(f"give --{'cache-only' if cache_only else 'cache'} or --no-cache, not both")
    return True if cache or cache_only else False if no_cache else None


def options(host: Any, target_host: str | None = None, sudo: bool = False, no_sudo: bool = False,
            dry_run: bool = False, yes: bool = False, reason: str = "", inventory: str | None = None,
            tag: Any = None, all_hosts: bool = False, ask_sudo_password: bool = False) -> Any:
    from .options import Options

    return Options(hosts=tuple(host or ()), tags=tuple(tag or ()), all_hosts=all_hosts, target_host=target_host,
                   sudo=sudo_choice(sudo, no_sudo), dry_run=dry_run, yes=yes, reason=reason, inventory=inventory,
                   ask_sudo_password=ask_sudo_password)


def help_for(*names: str, **extra: str) -> dict[str, str]:
    return {**{n: HELP[n] for n in names}, **extra}


# Every deploy-like task (the actions, rollback and the recipes) takes these, with these defaults.
# Numbers are taken as text and checked by cli/options.py, so a bad value is one `error:` line.
DEPLOY_PARAMS: dict[str, Any] = {
    "host": None, "tag": None, "all": False, "target_host": None, "build_host": None, "sudo": False,
    "no_sudo": False, "show_trace": False, "dry_run": False, "yes": False, "reason": "", "inventory": None,
    "verbose": False, "json": False, "diff": False, "parallel": None, "batch_size": None, "batches": None,
    "pause": None, "max_fail_percentage": None, "rollback_batch_on_failure": False, "no_checks": False,
    "no_rollback": False, "no_watchdog": False, "confirm_timeout": None, "skip_unreachable": False,
    "keep_going": False,
    "allow_secret": None, "ask_sudo_password": False, "copy_timeout": None, "activation_timeout": None,
    "impure": False, "option": None, "override_input": None, "print_build_logs": False, "max_jobs": None,
    "cores": None, "cache": False, "no_cache": False, "cache_only": False, "builders": None,
}
NIX_PARAMS = ("impure", "option", "override_input", "print_build_logs", "max_jobs", "cores")
CACHE_PARAMS = ("cache", "no_cache", "cache_only", "builders")  # how a release's closures travel
POLICY_PARAMS = ("parallel", "batch_size", "batches", "pause", "max_fail_percentage", "rollback_batch_on_failure",
                 "no_checks", "no_rollback", "no_watchdog", "confirm_timeout", "skip_unreachable", "keep_going",
                 "copy_timeout", "activation_timeout")


class DeployTask(Task):  # type: ignore[type-arg]
    """A task whose --print-build-logs is also -L, as in nix and nixos-rebuild."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names)
        if name == "print_build_logs":
            opts["names"] = [*opts["names"], "L"]
        return opts


def deploy_task(name: str, doc: str, run: Callable[..., object], skip: tuple[str, ...] = (),
                positional: tuple[str, ...] = (), iterable: tuple[str, ...] = (), **extra: tuple[Any, str]) -> Any:
    """A task with every deploy option (less `skip`) and its own `extra` ones ({name: (default,
    help)}); `run(options, **extra values)` does the work."""
    import inspect

    names = {k: v for k, v in DEPLOY_PARAMS.items() if k not in skip}
    defaults = {**names, **{k: v[0] for k, v in extra.items()}}
    params = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    ordered = [*positional, *(k for k in defaults if k not in positional)]  # positional ones first
    params += [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults[k]) for k in ordered]

    def body(c: Any, **kwargs: Any) -> None:
        from .options import Options, nix_flags, policy_flags

        values = {**defaults, **kwargs}
        flags = policy_flags(**{k: values[k] for k in POLICY_PARAMS if k in values})
        nix = nix_flags(**{k: values[k] for k in NIX_PARAMS if k in values})
        opts = Options(hosts=tuple(values.get("host") or ()), tags=tuple(values.get("tag") or ()),
                       all_hosts=values.get("all", False),
                       target_host=values.get("target_host"), build_host=values.get("build_host"),
                       sudo=sudo_choice(values.get("sudo", False), values.get("no_sudo", False)),
                       show_trace=values.get("show_trace", False), dry_run=values.get("dry_run", False),
                       yes=values.get("yes", False), reason=values["reason"], inventory=values["inventory"],
                       verbose=values["verbose"], json=values["json"], full_diff=values.get("diff", False),
                       allow_secrets=tuple(values.get("allow_secret") or ()),
                       ask_sudo_password=values.get("ask_sudo_password", False), policy=flags, nix=nix,
                       cache=cache_choice(values.get("cache", False), values.get("no_cache", False),
                                          values.get("cache_only", False)),
                       cache_only=values.get("cache_only", False), builders=tuple(values.get("builders") or ()))
        run(opts, **{k: values[k] for k in extra})

    body.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    body.__name__ = name.replace("-", "_")
    body.__doc__ = doc
    helps = {k.replace("_", "-"): HELP[k.replace("_", "-")] for k in names if k.replace("_", "-") in HELP}
    helps.update({k.replace("_", "-"): v[1] for k, v in extra.items()})
    iterable += ("allow_secret",) if "allow_secret" in names else ()
    iterable += tuple(k for k in ("option", "override_input", "builders") if k in names)
    return task(name=name, iterable=["host", "tag", *iterable], positional=list(positional), auto_shortflags=False,
                help=helps, klass=DeployTask)(reports_errors(body))


def action_task(action_name: str, doc: str, **extra: tuple[Any, str]) -> Any:
    def run(opts: Any, no_link: bool = False) -> None:
        from dataclasses import replace

        from ..models import Action
        from .app import run_action

        run_action(Action(action_name), replace(opts, no_link=no_link))

    return deploy_task(action_name, doc, run, **extra)


def run_rollback_task(opts: Any, generation: str | None, boot: bool) -> None:
    from .app import run_rollback
    from .options import number

    run_rollback(opts, generation=number(generation, "--generation", 1), boot=boot)


rollback = deploy_task(
    "rollback", "Go back to the previous generation, or to --generation N, with plan, diff and approval.",
    run_rollback_task, skip=("build_host", "show_trace", "keep_going", *NIX_PARAMS, *CACHE_PARAMS),
    generation=(None, "roll back to this generation (default: the previous one)"),
    boot=(False, "only make it the boot entry; activate at the next boot"))


@task(iterable=["host"], help=help_for("host", "target-host", "sudo", "no-sudo", "inventory", "ask-sudo-password",
                                       json="print the generations as JSON"))
@reports_errors
def generations(c: Any, host: Any = None, json: bool = False, target_host: str | None = None, sudo: bool = False,
                no_sudo: bool = False, inventory: str | None = None, ask_sudo_password: bool = False) -> None:
    """List system generations, newest first: date, version, revision, running, boots."""
    from .app import run_generations

    run_generations(options(host, target_host, sudo, no_sudo, inventory=inventory,
                            ask_sudo_password=ask_sudo_password), json)


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
                                              "parallel", "json", "verbose", "ask-sudo-password", "skip-unreachable",
                                              **SELECT, keep="how many of the newest generations to keep (default 3)"))
@reports_errors
def gc(c: Any, host: Any = None, keep: str = "3", tag: Any = None, all: bool = False, target_host: str | None = None,
       sudo: bool = False, no_sudo: bool = False, dry_run: bool = False, yes: bool = False,
       inventory: str | None = None, parallel: str | None = None, json: bool = False, verbose: bool = False,
       ask_sudo_password: bool = False, skip_unreachable: bool = False) -> None:
    """Delete old generations (never the running or booting one) and collect garbage."""
    from dataclasses import replace

    from .app import run_gc
    from .options import number, policy_flags

    opts = options(host, target_host, sudo, no_sudo, dry_run, yes, inventory=inventory, tag=tag, all_hosts=all,
                   ask_sudo_password=ask_sudo_password)
    flags = policy_flags(parallel=parallel, skip_unreachable=skip_unreachable)
    run_gc(replace(opts, json=json, verbose=verbose, policy=flags), keep=number(keep, "--keep", 1))


@task(iterable=["host", "tag"], help=help_for("host", "yes", "inventory", "ask-sudo-password", **SELECT))
@reports_errors
def unlock(c: Any, host: Any = None, tag: Any = None, all: bool = False, yes: bool = False,
           inventory: str | None = None, ask_sudo_password: bool = False) -> None:
    """Show who holds a host's deploy lock, and remove it after a confirmation."""
    from .app import run_unlock

    opts = options(host, yes=yes, inventory=inventory, tag=tag, all_hosts=all, ask_sudo_password=ask_sudo_password)
    if not (opts.hosts or opts.tags or opts.all_hosts):
        from ..errors import UsageError

        raise UsageError("unlock needs --host NAME (or --tag, --all): which host's lock")
    run_unlock(opts)


@task(iterable=["host", "tag"], help=help_for("host", "target-host", "sudo", "no-sudo", "inventory",
                                              "ask-sudo-password", **SELECT))
@reports_errors
def doctor(c: Any, host: Any = None, tag: Any = None, all: bool = False, target_host: str | None = None,
           sudo: bool = False, no_sudo: bool = False, inventory: str | None = None,
           ask_sudo_password: bool = False) -> None:
    """Pre-flight: ssh, sudo, Nix, copy trust, disk space, git; prints the fix for each problem."""
    from .app import run_doctor

    run_doctor(options(host, target_host, sudo, no_sudo, inventory=inventory, tag=tag, all_hosts=all,
                       ask_sudo_password=ask_sudo_password))


@task(help={"user": "the ssh user nixtasks logs in as (default: deploy)",
            "password": "make sudo ask for the user's password for these commands (PASSWD:, for "
                        "--ask-sudo-password) instead of allowing them without one"})
@reports_errors
def sudoers(c: Any, user: str = "deploy", password: bool = False) -> None:
    """Print a sudoers snippet allowing exactly the commands nixtasks runs with sudo."""
    from .app import print_sudoers

    print_sudoers(user, password)


# Each recipe task names the runner it calls (in cli/recipe_tasks.py, imported when it runs) and
# passes its own options by keyword.


def run_canary(opts: Any, canary: str | None, soak: str | None) -> None:
    from . import recipe_tasks

    recipe_tasks.run_canary(opts, canaries=canary, soak=soak)


def run_rolling(opts: Any) -> None:
    from . import recipe_tasks

    recipe_tasks.run_rolling(opts)


def run_blue_green(opts: Any, to: str | None) -> None:
    from . import recipe_tasks

    recipe_tasks.run_blue_green(opts, to=to)


def run_update_deploy(opts: Any, input: Any, message: str, soak: str | None) -> None:
    from . import recipe_tasks

    recipe_tasks.run_update_deploy(opts, inputs=tuple(input or ()), message=message, soak=soak)


def run_stage(opts: Any, plan: str, action: str) -> None:
    from . import recipe_tasks

    recipe_tasks.run_stage(opts, plan_file=plan, action=action)


def run_apply(opts: Any, plan: str) -> None:
    from . import recipe_tasks

    recipe_tasks.run_apply(opts, plan_file=plan)


def run_emergency(opts: Any, follow: str | None) -> None:
    from . import recipe_tasks

    recipe_tasks.run_emergency(opts, follow=follow)


SOAK = (None, "seconds to keep checking the canary hosts before the second approval (default 0)")
canary = deploy_task(
    "canary", "Canary hosts first (switch, checks, soak, rollback on failure), a second approval, then the rest.",
    run_canary, canary=(None, "the canary host(s), a comma list (default: the inventory's canary hosts)"),
    soak=SOAK)
rolling = deploy_task(
    "rolling", "One host at a time (or --batch-size/--batches), checks after each, halt on the first failure.",
    run_rolling)
blue_green = deploy_task(
    "blue-green", "Boot the new system on the idle group, reboot it, check it, then switch traffic to it.",
    run_blue_green, skip=("host", "tag", "all"), to=(None, "the idle group (an inventory tag) to deploy to"))
update_deploy = deploy_task(
    "update-deploy", "nix flake update, build, plan, one approval, commit flake.lock, then deploy the chosen hosts.",
    run_update_deploy, iterable=("input",), input=(None, "update only this input (repeat, or a comma list)"),
    message=("chore: update flake inputs", "the commit message of the flake.lock commit"), soak=SOAK)
stage = deploy_task(
    "stage", "Build the selection, copy it, show each closure diff, and write a plan file for `apply`.",
    run_stage, skip=("yes",), plan=("nixtasks-plan.json", "the plan file to write"),
    action=("switch", "what apply will do: switch, boot or test"))
apply = deploy_task(
    "apply", "Deploy exactly the store paths of a staged plan file, after one approval.", run_apply,
    skip=("host", "tag", "all", "build_host", "show_trace", *NIX_PARAMS, *CACHE_PARAMS), positional=("plan",),
    plan=(None, "the plan file `invoke stage` wrote, e.g. nixtasks-plan.json (required; make apply gives "
                "PLAN, by default that one)"))
emergency = deploy_task(
    "emergency", "A fix out fast: build, test-activate with the watchdog, check, ask, switch, follow the journal.",
    run_emergency, follow=(None, "seconds to follow the hosts' warnings and errors afterwards (default 60)"))


build = action_task("build", "Build the system closure; activate nothing; leave ./result (./result-NAME for several).",
                    no_link=(False, "leave no ./result link (a garbage-collector root) to the built system"))
dry_build = action_task("dry-build", "Show what would be built or fetched; build nothing.")
switch = action_task("switch", "Build, set the boot profile and activate now.")
boot = action_task("boot", "Build and set the boot profile; activate at the next boot.")
test = action_task("test", "Build and activate now; leave the boot entry alone.")
dry_activate = action_task("dry-activate", "Build and show what activation would change.")

@task
@reports_errors
def init(c: Any) -> None:
    """Write tasks.py, the thin Makefile and nixtasks.toml (hosts from the flake) here; never overwrites."""
    from .scaffold import run_init

    run_init()


@task(help={"path": "where to write it (default: .github/workflows/nixtasks-build.yml)"})
@reports_errors
def ci_workflow(c: Any, path: str | None = None) -> None:
    """Write a GitHub Actions workflow that builds every host on push and pull request (never deploys)."""
    from .scaffold import run_ci_workflow

    run_ci_workflow(path)


ns = Collection(build, dry_build, switch, boot, test, dry_activate, rollback, canary, rolling, blue_green,
                update_deploy, stage, apply, emergency, generations, status, verify, history, gc, unlock, doctor,
                sudoers, init, ci_workflow)
