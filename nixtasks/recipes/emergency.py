"""emergency: a fix out fast, but never blind. Builds (a dirty tree is shown, not refused),
`test`-activates with the watchdog, runs the checks, asks, then `switch`es, and follows the
hosts' warnings and errors for a while. A test activation that fails its checks is rolled
back and nothing is switched. The reason is required and the journal marks it."""

from __future__ import annotations

from dataclasses import replace

from ..errors import UsageError
from ..fleet import engine
from ..models import Action, Outcome, Report


def emergency(req: engine.DeployRequest, tools: engine.Tools, follow: float) -> Report:
    if not req.reason.strip():
        raise UsageError('emergency needs --reason "..." (REASON=... for make): it goes into the journal')
    test = replace(req, action=Action.TEST, reason=f"EMERGENCY: {req.reason}")
    prep = engine.prepare(test, tools)
    names = ", ".join(c.host.name for c in prep.changes)
    engine.show_plan(prep, tools)
    guards = ", ".join(g for g, on in (("watchdog", req.policy.watchdog), ("checks", req.policy.checks)) if on)
    go, left = engine.approve(prep, prep.changes, tools, verb="emergency-test", question=(
        f"EMERGENCY: test-activate {names} (the boot entry stays; {guards or 'NO watchdog, NO checks'})?"))
    tested, interrupted = engine.activate(prep, go, req.policy, tools, verb="emergency-test")
    if interrupted or engine.declined(left) or any(r.failed for r in tested):
        return engine.finish(engine.report(prep, left + tested, interrupted, "emergency"), tools.echo)
    # The same systems, now made the boot entry; a failure goes back to what ran before the test.
    switches = [replace(c, action=Action.SWITCH, expect_running=c.system) for c, r in zip(go, tested)
                if r.outcome is Outcome.OK]
    tested_names = ", ".join(c.host.name for c in switches)
    go_switch, left_switch, interrupted = engine.gate(prep, switches, tools, verb="emergency-switch", question=(
        f"EMERGENCY: {tested_names} passed the test activation and its checks. Switch (make it the boot entry)?"))
    switched, stopped = engine.activate(prep, go_switch, req.policy, tools, verb="emergency-switch")
    interrupted = interrupted or stopped
    report = engine.report(prep, left + left_switch + switched, interrupted, "emergency")
    if follow and switched and not report.failed() and not interrupted:
        engine.follow_journals([c.host for c in go_switch], follow, tools)
    return engine.finish(report, tools.echo)
