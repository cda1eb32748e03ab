"""Generations, and the choice of a rollback's target: the newest earlier generation that
did not fail before (by the journals), or generation N, with the closure diff against what
runs. The fleet engine activates it as it does a switch: the generation's system with
`switch-to-configuration test`, then, once confirmed and checked, `nix-env --switch-generation`
and the profile's `switch-to-configuration boot` (`--boot`: those two only)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..host import commands
from ..host.generations import (
    Generation,
    HostGenerations,
    choose_target,
    kernel_changes,
    mark_failed,
    numbers_text,
    parse,
    render,
)
from ..host.runner import Runner
from ..models import WORK_AT_ONCE, Action, Echo, Host, HostPlan, at_once
from .journal import HOST_JOURNAL, Record, failed_systems, of_machine, parse_lines
from .plan import store_name


@dataclass(frozen=True)
class Request:
    hosts: tuple[Host, ...]
    generation: int | None = None  # None: the previous one
    boot: bool = False  # only make it the boot entry
    reason: str = ""


def read_generations(host: Host, runner: Runner, here: Sequence[Record] = ()) -> HostGenerations:
    """The host's generations, in one round trip with its journal; those whose system failed
    before (by the host's journal and `here`, the deployer's, for this machine) marked."""
    cmds = [commands.list_generations(), commands.generation_details(), commands.read_file(HOST_JOURNAL)]
    results = runner.run_all(cmds, host.target, label=host.name, check=False, keep_going=True)
    for cmd, result in zip(cmds[:2], results):
        if not result.ok:
            raise runner.failure(cmd, host.target, host.name, result)
    gens = parse(results[0].stdout, results[1].stdout)
    on_host = parse_lines(results[2].stdout) if len(results) > 2 and results[2].ok else []
    records = [*on_host, *(of_machine(here, host.name, gens.machine_id) if gens.machine_id else ())]
    return mark_failed(gens, {path: describe_failure(r) for path, r in failed_systems(records).items()})


def describe_failure(record: Record) -> str:
    return f"{record.action} {record.outcome} {record.time[:16].replace('T', ' ')}"


def show_generations(hosts: tuple[Host, ...], runner: Runner,
                     here: Sequence[Record] = ()) -> dict[str, HostGenerations]:
    with ThreadPoolExecutor(max_workers=at_once(len(hosts), WORK_AT_ONCE)) as pool:
        return dict(zip((h.name for h in hosts), pool.map(lambda h: read_generations(h, runner, here), hosts)))


@dataclass(frozen=True)
class Step:
    plan: HostPlan
    target: Generation
    notes: tuple[str, ...] = ()  # for the plan: the failed generations passed over, or that the target failed


def prepare(host: Host, req: Request, runner: Runner, echo: Echo, here: Sequence[Record] = ()) -> Step:
    """Choose the host's target generation (past those that failed before, by the journals:
    the host's and `here`, the deployer's) and diff it against what runs: changes nothing."""
    action = Action.BOOT if req.boot else Action.SWITCH
    gens = read_generations(host, runner, here)
    target, passed = choose_target(host.name, gens, req.generation)
    notes = [f"{host.name}: generation {target.number} FAILED before ({target.failed}); going to it as asked"
             ] if target.failed else []
    if passed:
        notes.append(f"{host.name}: skipping generation(s) {numbers_text(passed)}, which failed before "
                     f"({'; '.join(f'{g.number}: {g.failed}' for g in passed)}); rolling back to "
                     f"generation {target.number}, the newest earlier one that did not")
    boot = gens.boot_generation()
    if kernel_changes(gens, target):
        advice = "" if req.boot else "; pass --boot to make it the boot entry only"
        echo(f"warning: {host.name}: generation {target.number} has another kernel than the running one: "
             f"kernel modules will not match until a reboot{advice}")
    diff = ""
    if gens.running_path and gens.running_path != target.path and not runner.dry_run:
        diff = runner.run(commands.diff_closures(gens.running_path, target.path), host.target, check=False).stdout
    running = [g for g in gens.generations if g.running]  # newest first; a system deployed twice is two
    runs = boot if boot is not None and boot.running else next(iter(running), None)
    plan = HostPlan(host, action, target.path, gens.running_path or None, diff,
                    running_generation=runs.number if runs else None, boot_system=boot.path if boot else None,
                    boot_generation=boot.number if boot else None, new_generation=target.number)
    return Step(plan, target, tuple(notes))


def question(step: Step) -> str:
    host = step.plan.host
    verb = "Make generation {n} the boot entry of" if step.plan.action is Action.BOOT else "Roll back"
    return (f"{verb.format(n=step.target.number)} {host.name} ({host.target})"
            f"{'' if step.plan.action is Action.BOOT else f' to generation {step.target.number}'}"
            f" ({store_name(step.target.path)})?")


def render_all(found: dict[str, HostGenerations]) -> str:
    return "\n".join(render(name, gens) for name, gens in found.items())
