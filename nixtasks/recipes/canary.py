"""canary: the canary hosts first (switch, checks, rollback on failure), a soak that keeps
checking them, a second approval that names the rest, then the rest as a rolling deploy. A
bad release stops at the canary, which is rolled back; the other hosts never see it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ..errors import UsageError
from ..fleet import engine, flow
from ..models import HostResult, Outcome, Report
from . import rolling


def choose(req: engine.DeployRequest, named: Sequence[str]) -> tuple[str, ...]:
    """--canary NAME, else the selection's hosts marked `canary = true` or tagged canary."""
    selected = [h.name for h in req.hosts]
    if named:
        unknown = [n for n in named if n not in selected]
        if unknown:
            raise UsageError(f"--canary {', '.join(unknown)}: not in the selection ({', '.join(selected)})")
        return tuple(named)
    marked = tuple(h.name for h in req.hosts if h.canary)
    if not marked:
        raise UsageError("no canary host in the selection: mark one with `canary = true` in its [hosts.NAME], "
                         "tag it canary, or pass --canary NAME")
    return marked


def canary(req: engine.DeployRequest, tools: flow.Tools, named: Sequence[str] = (), soak: float = 0.0) -> Report:
    names = choose(req, named)
    prep = engine.prepare(req, tools)
    engine.show_plan(engine.with_policy(prep, rolling.policy(req.policy)), tools, first=names)
    tools.echo(describe(prep, names, soak))
    return go_out(prep, names, tools, soak)


def describe(prep: engine.Prepared, names: Sequence[str], soak: float, then: str = "after a second approval") -> str:
    """The canary's line of the plan."""
    rest = [c.host.name for c in prep.changes if c.host.name not in names]
    return (f"  canary:   {', '.join(names)} first{f', then {soak:g} s of checks' if soak else ''}; "
            f"then, {then}, {', '.join(rest) or 'no other host'}")


def go_out(prep: engine.Prepared, names: Sequence[str], tools: flow.Tools, soak: float = 0.0) -> Report:
    """From the plan on: gate 1, the canaries, the soak, gate 2, the rest as a rolling deploy.
    update-deploy hands over the changes its one question approved, with a prompter that says so."""
    req = prep.request
    first = prep.only(names)
    rest = tuple(c for c in prep.changes if c.host.name not in names)
    verb = req.action.value

    def stop(done: tuple[HostResult, ...], why: str, interrupted: bool = False) -> Report:
        skipped = engine.not_started(rest, f"not started: {why}", prep.journal, verb)
        return flow.finish(engine.report(prep, done + skipped, interrupted), tools.echo)

    missing = [r for r in prep.skipped if r.host in names]
    if missing:  # a canary that cannot be reached, or whose system could not be made, proves nothing
        why = "could not be reached" if all(r.outcome is Outcome.SKIPPED for r in missing) else \
            "could not be reached or its system could not be made (--keep-going)"
        return stop((), f"the canary {', '.join(r.host for r in missing)} {why}")
    go, left = engine.approve(prep, first, tools, question=(
        f"Canary: {verb} {', '.join(names)} first ({len(first)} host{'s' if len(first) != 1 else ''})?"))
    # With a soak, a canary's record waits for its end: ok, or rolled back by the soak.
    results, interrupted = engine.activate(engine.with_policy(prep, replace(req.policy, batches=())), go, tools,
                                           hold=bool(soak))
    done = left + results
    if interrupted or engine.declined(left) or any(r.failed for r in results):
        if soak:
            engine.journal_held(prep, go, results, verb)
        return stop(done, "interrupted" if interrupted else "the canary was not approved" if engine.declined(left)
                    else "the canary failed", interrupted)
    if soak:
        backs, interrupted = engine.soak(prep, go, results, soak, tools, verb)
        if backs:
            return stop(left + backs, "the canary turned unhealthy during its soak", interrupted)
        if interrupted:
            return stop(done, "interrupted during the soak", True)
    if not rest:
        return flow.finish(engine.report(prep, done, False), tools.echo)
    tools.echo(f"canary: {', '.join(c.host.name for c in go)} healthy on the new system")
    go_rest, left_rest, interrupted = engine.gate(prep, rest, tools, question=(
        f"The canary is healthy. {verb.capitalize()} the rest: "
        f"{', '.join(c.host.name for c in rest)} ({len(rest)} host{'s' if len(rest) != 1 else ''})?"))
    more, stopped = engine.activate(engine.with_policy(prep, rolling.policy(req.policy)), go_rest, tools)
    return flow.finish(engine.report(prep, done + left_rest + more, interrupted or stopped), tools.echo)
