"""Garbage collection of one host: delete old system generations (never the running one or the one that
boots), then collect garbage and say what was freed."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import CommandFailed
from ..host import commands
from ..host.generations import Generation, numbers_text, to_delete
from ..host.runner import Runner
from ..models import Host, HostResult, Outcome
from .rollback import read_generations

Echo = Callable[[str], None]
FREED = re.compile(r"^\d+ store paths deleted, .* freed$", re.M)


@dataclass(frozen=True)
class GcStep:
    host: Host
    doomed: tuple[Generation, ...]  # deleted
    kept: tuple[Generation, ...]


def choose(host: Host, keep: int, runner: Runner) -> GcStep:
    """What goes: generations beyond the newest `keep`, never the running one or the one that boots."""
    gens = read_generations(host, runner)
    doomed = tuple(to_delete(gens, keep))
    return GcStep(host, doomed, tuple(g for g in gens.generations if g not in doomed))


def describe(step: GcStep, keep: int) -> str:
    return (f"{step.host.name}: delete generation(s) {numbers_text(step.doomed)}; keep {numbers_text(step.kept)} "
            f"(the newest {keep}, the running one and the one that boots), then collect garbage")


def collect(step: GcStep, runner: Runner, echo: Echo) -> HostResult:
    host = step.host
    try:
        if step.doomed:
            runner.run(commands.delete_generations([g.number for g in step.doomed]), host.target, label=host.name,
                       stream=True)
        out = runner.run(commands.collect_garbage(), host.target, label=host.name)
    except CommandFailed as exc:
        return HostResult(host=host.name, action="gc", outcome=Outcome.FAILED, message=str(exc))
    if runner.dry_run:
        return HostResult(host=host.name, action="gc", outcome=Outcome.OK, message="dry run: nothing deleted")
    freed = FREED.search(out.stdout + out.stderr)
    message = f"deleted generation(s) {numbers_text(step.doomed)}; {freed[0] if freed else 'collected'}"
    echo(f"{host.name}: {message}")
    return HostResult(host=host.name, action="gc", outcome=Outcome.OK, message=message)
