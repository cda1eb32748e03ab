"""Generations, and the choice of a rollback's target: the previous generation or
generation N, with the closure diff against what runs. The fleet engine activates it
(`nix-env --switch-generation`, then the profile's switch-to-configuration)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..host import commands
from ..host.generations import Generation, HostGenerations, choose_target, kernel_changes, parse, render
from ..host.runner import Runner
from ..models import Action, Host, HostPlan
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


def prepare(host: Host, req: Request, runner: Runner, echo: Echo) -> Step:
    """Choose the host's target generation and diff it against what runs: changes nothing."""
    action = Action.BOOT if req.boot else Action.SWITCH
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
    return Step(plan, target)


def question(step: Step) -> str:
    host = step.plan.host
    verb = "Make generation {n} the boot entry of" if step.plan.action is Action.BOOT else "Roll back"
    return (f"{verb.format(n=step.target.number)} {host.name} ({host.target})"
            f"{'' if step.plan.action is Action.BOOT else f' to generation {step.target.number}'}"
            f" ({store_name(step.target.path)})?")


def render_all(found: dict[str, HostGenerations]) -> str:
    return "\n".join(render(name, gens) for name, gens in found.items())
