"""Roll hosts back to the previous generation, or to generation N: the same plan, closure
diff and approval as a deploy, then `nix-env --switch-generation` and activation of the
profile, verified. After a failed activation the profile and the running system are left
on the same generation, or the report says loudly that they are not."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import CommandFailed, Refused
from ..host import commands
from ..host.generations import Generation, HostGenerations, choose_target, kernel_changes, parse, render
from ..host.prompts import HOW_TO_APPROVE, Prompter
from ..host.runner import Runner
from ..models import SYSTEM_PROFILE, Action, Host, HostPlan, HostResult, Outcome, Plan, Report
from .deploy import finish, host_state, unchanged
from .journal import Journal, deployer_journal_path
from .plan import render as render_plan
from .plan import store_name

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Request:
    hosts: tuple[Host, ...]
    generation: int | None = None  # None: the previous one
    boot: bool = False  # only make it the boot entry
    reason: str = ""


def read_generations(host: Host, runner: Runner) -> HostGenerations:
    listed = runner.run(commands.list_generations(), host.target, label=host.name)
    details = runner.run(commands.generation_details(), host.target, label=host.name)
    return parse(listed.stdout, details.stdout)


def show_generations(hosts: tuple[Host, ...], runner: Runner) -> dict[str, HostGenerations]:
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        return dict(zip((h.name for h in hosts), pool.map(lambda h: read_generations(h, runner), hosts)))


@dataclass(frozen=True)
class Step:
    plan: HostPlan
    target: Generation
    boot_before: Generation | None  # the boot entry before the rollback
    running_before: Generation | None  # the generation whose system was running, if any


def execute(req: Request, runner: Runner, prompter: Prompter, echo: Echo, journal_path: Path | None = None) -> Report:
    action = Action.BOOT if req.boot else Action.SWITCH
    journal = Journal(runner, journal_path or deployer_journal_path(), None, req.reason, echo)
    remote = [h for h in req.hosts if not h.is_local]
    if remote and not prompter.can_ask:
        for host in remote:
            journal.write(host, "rollback", "refused", on_host=False, message="no terminal and no approval")
        raise Refused(f"rollback of {', '.join(h.name for h in remote)} needs an approval and there is no "
                      f"terminal to ask on; {HOW_TO_APPROVE}. Nothing was changed")
    # Every host's target is chosen before anything changes anywhere.
    with ThreadPoolExecutor(max_workers=min(16, len(req.hosts))) as pool:
        steps = list(pool.map(lambda h: prepare(h, req, action, runner, echo), req.hosts))
    results: list[HostResult] = []
    for step in steps:
        host = step.plan.host
        echo(render_plan(Plan(action, (step.plan,), None, (), req.reason)))
        if any(r.outcome is Outcome.FAILED for r in results):
            result = unchanged(step.plan, Outcome.SKIPPED, "not attempted after a failure")
        elif not host.is_local and not prompter.confirm(question(step)):
            result = unchanged(step.plan, Outcome.DECLINED, "declined; nothing changed")
        else:
            result = activate(step, runner)
        results.append(result)
        journal.write_result(host, "rollback", result)
    return finish(Report("rollback", tuple(results)), echo)


def prepare(host: Host, req: Request, action: Action, runner: Runner, echo: Echo) -> Step:
    gens = read_generations(host, runner)
    target = choose_target(host.name, gens, req.generation)
    boot = gens.boot_generation()
    if kernel_changes(gens, target):
        advice = "" if req.boot else "; pass --boot to make it the boot entry only"
        echo(f"warning: {host.name}: generation {target.number} has another kernel than the running one: "
             f"kernel modules will not match until a reboot{advice}")
    diff = ""
    if gens.running_path and gens.running_path != target.path and not runner.dry_run:
        diff = runner.run(commands.diff_closures(gens.running_path, target.path), host.target, check=False).stdout
    plan = HostPlan(host, action, target.path, gens.running_path or None, diff, boot.number if boot else None)
    running = next((g for g in gens.generations if g.running), None)
    return Step(plan, target, boot, running)


def question(step: Step) -> str:
    host = step.plan.host
    verb = "Make generation {n} the boot entry of" if step.plan.action is Action.BOOT else "Roll back"
    return (f"{verb.format(n=step.target.number)} {host.name} ({host.target})"
            f"{'' if step.plan.action is Action.BOOT else f' to generation {step.target.number}'}"
            f" ({store_name(step.target.path)})?")


def activate(step: Step, runner: Runner) -> HostResult:
    plan, target = step.plan, step.target
    host = plan.host
    try:
        systemd = runner.run(commands.has_systemd(), host.target, check=False).ok
        runner.run(commands.switch_generation(target.number), host.target, label=host.name, stream=True)
        runner.run(commands.switch_to_configuration(SYSTEM_PROFILE, plan.action, systemd=systemd), host.target,
                   label=host.name, stream=True)
    except CommandFailed as exc:
        return reconcile(step, exc, runner)
    if runner.dry_run:
        return HostResult(host.name, plan.action, Outcome.OK, target.path, plan.current_system, "",
                          plan.current_generation, target.number)
    try:
        running, generation = host_state(host, runner)
    except CommandFailed as exc:
        return HostResult(host.name, plan.action, Outcome.FAILED, None, plan.current_system,
                          f"the rollback ran, but {host.name} no longer answers ({exc}); check it by hand",
                          plan.current_generation)
    expected_running = plan.current_system if plan.action is Action.BOOT else target.path
    if running != expected_running or generation != target.number:
        return HostResult(host.name, plan.action, Outcome.FAILED, running, plan.current_system,
                          f"after the rollback {host.name} runs {running or 'nothing'} and boots generation "
                          f"{generation}, not generation {target.number}", plan.current_generation, generation)
    return HostResult(host.name, plan.action, Outcome.OK, running, plan.current_system, "",
                      plan.current_generation, generation)


def reconcile(step: Step, exc: CommandFailed, runner: Runner) -> HostResult:
    """The activation failed: leave profile and running system on one generation."""
    plan, target, host = step.plan, step.target, step.plan.host
    failed = f"rollback to generation {target.number} failed (exit {exc.returncode})"
    failed += f": {exc.detail}" if exc.detail else ""
    try:
        running, generation = host_state(host, runner)
    except CommandFailed:
        return HostResult(host.name, plan.action, Outcome.FAILED, None, plan.current_system,
                          f"{failed}; {host.name} no longer answers, check it by hand", plan.current_generation)
    # What the profile should point to now that the old system still runs: for --boot, the old
    # boot entry; for a switch, the generation of the system that is still running.
    back = step.boot_before if plan.action is Action.BOOT else step.running_before
    inconsistent = (f"INCONSISTENT: {host.name} runs {running or 'nothing'} but boots generation {generation}; "
                    f"check it and run `invoke rollback --host {host.name} --generation N`")
    if plan.action is Action.SWITCH and running == target.path and generation == target.number:
        note = f"{host.name} runs generation {target.number} and boots it"
    elif running == plan.current_system and back is not None and generation == back.number:
        note = f"{host.name} still runs {'and boots ' if plan.action is Action.SWITCH else ''}what it did before"
    elif running == plan.current_system and back is not None:
        try:
            runner.run(commands.switch_generation(back.number), host.target, label=host.name, stream=True)
            generation = back.number
            note = f"the profile is back on generation {back.number}"
        except CommandFailed as put_back:
            note = f"{inconsistent} (putting the profile back failed: {put_back})"
    else:
        note = inconsistent
    return HostResult(host.name, plan.action, Outcome.FAILED, running, plan.current_system, f"{failed}; {note}",
                      plan.current_generation, generation)


def render_all(found: dict[str, HostGenerations]) -> str:
    return "\n".join(render(name, gens) for name, gens in found.items())
