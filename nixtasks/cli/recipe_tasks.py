"""The runners of the recipe tasks: each checks its own options, then runs its recipe
with one deploy request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .. import inventory
from ..errors import Refused, UsageError
from ..fleet import engine, flow
from ..host.prompts import DRY_RUN, prompter_for
from ..models import Action, Report
from .options import Options, approved, needs_selection, number, reason, split_hosts
from .session import deploy_request, live_tools, prompter, session, with_report


def run_recipe(opts: Options, recipe: Callable[[engine.DeployRequest, flow.Tools], Report],
               action: Action = Action.SWITCH) -> Report:
    reason(opts)  # a bad --reason is refused before anything runs
    with session(opts) as (inv, runner, hosts):
        request = deploy_request(opts, inv, hosts, action)
        return with_report(opts, lambda tools: recipe(request, tools), runner)


def run_canary(opts: Options, canaries: str | None, soak: str | None) -> Report:
    from ..recipes import canary

    needs_selection(opts, "canary")
    named = split_hosts((canaries,)) if canaries else ()
    seconds = number(soak, "--soak", 0, whole=False) or 0.0
    return run_recipe(opts, lambda req, tools: canary.canary(req, tools, named, seconds))


def run_rolling(opts: Options) -> Report:
    from ..recipes import rolling

    needs_selection(opts, "rolling")
    return run_recipe(opts, rolling.rolling)


def run_blue_green(opts: Options, to: str | None) -> Report:
    from ..recipes import blue_green

    inv = inventory.load(opts.inventory)
    groups = inv.blue_green.groups
    if not to:
        raise UsageError(f"blue-green needs --to GROUP, the idle group to deploy to"
                         f"{' (' + ' or '.join(groups) + ')' if groups else ''}")
    if groups and to not in groups:
        raise UsageError(f"--to {to}: not one of the groups in [blue_green] groups ({', '.join(groups)})")
    if opts.hosts or opts.tags or opts.all_hosts:
        raise UsageError("blue-green deploys the group given by --to; leave out --host, --tag and --all")
    settings = inv.blue_green
    return run_recipe(replace(opts, tags=(to,)), lambda req, tools: blue_green.blue_green(
        req, tools, to, settings.switch_traffic, settings.reboot_timeout))


def run_update_deploy(opts: Options, inputs: tuple[str, ...], message: str, soak: str | None) -> Report:
    from ..recipes import update_deploy

    if not message.strip() or any(ord(ch) < 32 for ch in message):
        raise UsageError("--message: one line of text, like \"chore: update flake inputs\"")
    seconds = number(soak, "--soak", 0, whole=False) or 0.0
    names = split_hosts(inputs)
    opts = update_deploy_selection(opts, inventory.load(opts.inventory))
    return run_recipe(opts, lambda req, tools: update_deploy.update_deploy(req, tools, names, message, seconds))


def update_deploy_selection(opts: Options, inv: inventory.Inventory) -> Options:
    """The command line's hosts, else the inventory's [recipes.update-deploy], else (asked on a
    terminal, where every host with a changed system is named) the whole inventory. Without
    a question to show them, nothing is deployed to hosts nobody named."""
    if opts.hosts or opts.tags or opts.all_hosts:
        return opts
    default = inv.recipes.get("update-deploy")
    if default:
        return replace(opts, hosts=default.hosts, tags=default.tags)
    how = ("name the hosts: --host NAME, --tag TAG or --all (make update-deploy HOSTS=... or TAG=...), or set "
           'a default in nixtasks.toml: [recipes.update-deploy] tags = ["web"]')
    if not prompter(opts).can_ask:
        raise Refused(f"update-deploy needs an approval and there is no terminal to ask on; pass --yes and {how}. "
                      "Nothing was changed")
    if approved(opts) or opts.dry_run:
        raise UsageError(f"update-deploy --yes deploys without asking, so it does not pick the hosts itself; {how}")
    return replace(opts, all_hosts=True)


def run_stage(opts: Options, plan_file: str, action: str) -> None:
    from ..recipes import stage

    needs_selection(opts, "stage")
    try:
        chosen = Action(action)
    except ValueError:
        raise UsageError(f"--action {action!r}: stage plans a switch, boot or test") from None
    if chosen not in (Action.SWITCH, Action.BOOT, Action.TEST):
        raise UsageError(f"--action {action}: stage plans a switch, boot or test")
    reason(opts)  # a bad --reason is refused before anything runs
    with session(opts, root=False) as (inv, runner, hosts):  # copies and diffs: nothing as root
        request = deploy_request(opts, inv, hosts, chosen, full_diff=True)
        # Staging changes nothing a host runs, so it never asks.
        with live_tools(opts, runner, DRY_RUN if opts.dry_run else prompter_for(True)) as tools:
            stage.stage(request, tools, Path(plan_file))


def run_apply(opts: Options, plan_file: str) -> Report:
    """The hosts are the plan's: the task has no --host, --tag or --all to give."""
    from ..actions import seal
    from ..recipes import stage

    path = Path(plan_file)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"{plan_file}: cannot read the plan ({exc.strerror}); make one with `invoke stage`") from None
    plan = stage.parse_plan(text, plan_file, seal.load_key(seal.key_path(), make=False))
    return run_recipe(replace(opts, hosts=tuple(plan.hosts)), lambda req, tools: stage.apply(req, tools, plan),
                      plan.action)


def run_emergency(opts: Options, follow: str | None) -> Report:
    from ..recipes import emergency

    needs_selection(opts, "emergency")
    seconds = number(follow, "--follow", 0, whole=False)
    return run_recipe(opts, lambda req, tools: emergency.emergency(req, tools, 60.0 if seconds is None else seconds))


