"""Garbage collection of one host: delete old system generations (never the running one or the one that
boots), then collect garbage and say what was freed."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import CommandFailed
from ..host import commands
from ..host.generations import Generation, numbers_text, to_delete
from ..host.runner import Runner
from ..models import Echo, Host, HostResult, Outcome
from .generations import read_generations

FREED = re.compile(r"^\d+ store paths deleted, .* freed$", re.M)


@dataclass(frozen=True)
class GcStep:
    host: Host
    doomed: tuple[Generation, ...]  # deleted
    kept: tuple[Generation, ...]
    held: tuple[str, ...] = ()  # what runs and what boots: held as roots while garbage is collected


def choose(host: Host, keep: int, runner: Runner) -> GcStep:
    """What goes: generations beyond the newest `keep`, never the running one or the one that boots."""
    gens = read_generations(host, runner)
    doomed = tuple(to_delete(gens, keep))
    boots = gens.boot_generation()
    held = tuple(dict.fromkeys(p for p in (gens.running_path, boots.path if boots else "") if p))
    return GcStep(host, doomed, tuple(g for g in gens.generations if g not in doomed), held)


def describe(step: GcStep, keep: int) -> str:
    return (f"{step.host.name}: delete generation(s) {numbers_text(step.doomed)}; keep {numbers_text(step.kept)} "
            f"(the newest {keep}, the running one and the one that boots), then collect garbage; what runs and "
            "what boots are held as garbage-collector roots meanwhile")


def collect(step: GcStep, runner: Runner, echo: Echo) -> HostResult:
    """Generations deleted, then garbage collected, with what runs and what boots held as roots
    until it is done: never collected, whatever roots the host keeps itself."""
    host = step.host
    try:
        for number, path in enumerate(step.held):
            runner.run(commands.hold_gc_root(path, number), host.target, label=host.name)
        if step.doomed:
            runner.run(commands.delete_generations([g.number for g in step.doomed]), host.target, label=host.name,
                       stream=True)
        out = runner.run(commands.collect_garbage(), host.target, label=host.name)
    except CommandFailed as exc:
        return HostResult(host=host.name, action="gc", outcome=Outcome.FAILED, message=str(exc))
    finally:
        if step.held:
            released = runner.run(commands.release_gc_roots(len(step.held)), host.target, check=False)
            if not released.ok:
                echo(f"warning: {host.name}: the temporary roots {commands.GC_HOLD}-* are still there; "
                     "remove them by hand to let a later gc collect what they hold")
    if runner.dry_run:
        return HostResult(host=host.name, action="gc", outcome=Outcome.OK, message="dry run: nothing deleted")
    freed = FREED.search(out.stdout + out.stderr)
    message = f"deleted generation(s) {numbers_text(step.doomed)}; {freed[0] if freed else 'collected'}"
    echo(f"{host.name}: {message}")
    return HostResult(host=host.name, action="gc", outcome=Outcome.OK, message=message)
