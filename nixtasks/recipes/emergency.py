"""emergency: a fix out fast, but never blind. Builds (a dirty tree is shown, not refused),
`test`-activates with the watchdog, runs the checks, asks, then `switch`es, and follows the
hosts' warnings and errors for a while. A test activation that fails its checks is rolled
back and nothing is switched; the hosts whose test passed run the tested system and boot the
old one: said so, and they are offered to go back to their booted system at once (--yes: they
go back). The reason is required and the journal marks it. A no at the switch leaves a host
on the tested system and booting the old one: said so, and (at a terminal) the host can go
back to its booted system at once. Every record says what the host runs at that point."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..actions.journal import Journal, Record
from ..actions.plan import store_name
from ..errors import DeployFailed, Refused, UsageError
from ..fleet import engine, flow
from ..fleet.pipeline import Change, unchanged
from ..models import Action, Host, HostResult, Outcome, Report

TESTED = ": it runs the test-activated system"  # where a kept host's row says what it runs


def emergency(req: engine.DeployRequest, tools: flow.Tools, follow: float) -> Report:
    if not req.reason.strip():
        raise UsageError('emergency needs --reason "..." (REASON=... for make): it goes into the journal')
    test = replace(req, action=Action.TEST, reason=f"EMERGENCY: {req.reason}")
    prep = engine.prepare(test, tools, report_as="emergency")
    names = ", ".join(c.host.name for c in prep.changes)
    engine.show_plan(prep, tools)
    guards = ", ".join(g for g, on in (("watchdog", req.policy.watchdog), ("checks", req.policy.checks)) if on)
    go, left = engine.approve(prep, prep.changes, tools, verb="emergency-test", question=(
        f"EMERGENCY: test-activate {names} (the boot entry stays; {guards or 'NO watchdog, NO checks'})?"))
    tested, interrupted = engine.activate(prep, go, tools, verb="emergency-test")
    # The same systems, now made the boot entry; a failure goes back to what ran before the test.
    switches = [replace(c, action=Action.SWITCH, expect_running=c.system) for c, r in zip(go, tested)
                if r.outcome is Outcome.OK]
    failed = [r for r in tested if r.failed]
    if failed and switches and not interrupted:
        return after_a_failed_test(prep, left, tested, switches, failed, req, tools)
    if interrupted or engine.declined(left) or failed:
        return flow.finish(engine.report(prep, left + tested, interrupted, "emergency"), tools.echo)
    tested_names = ", ".join(c.host.name for c in switches)
    # The hosts left at this question are journalled here, once their rows say what they run.
    asked = replace(prep, journal=Unwritten(tools.runner, prep.journal.path))
    go_switch, left_switch, interrupted = engine.gate(asked, switches, tools, verb="emergency-switch", question=(
        f"EMERGENCY: {tested_names} passed the test activation and its checks. Switch (make it the boot entry)?"))
    switched, stopped = engine.activate(prep, go_switch, tools, verb="emergency-switch")
    interrupted = interrupted or stopped
    by_name = {c.host.name: c for c in switches}
    # Not switched after Ctrl-C: they run the tested system all the same (said so, as after a no).
    switched = tuple(still_tested(by_name[r.host], r) if r.outcome is Outcome.NOT_STARTED else r for r in switched)
    on_test = [(by_name[r.host], r) for r in left_switch]
    kept = journalled(prep, on_test, tuple(still_tested(c, r) for c, r in on_test))
    if on_test and not interrupted:
        kept, interrupted = offer_to_go_back(prep, on_test, kept, req, tools)
    report = engine.report(prep, left + kept + switched, interrupted, "emergency")
    if follow and switched and not report.failed() and not interrupted:
        engine.follow_journals([c.host for c in go_switch], follow, tools)
    tested_still = [r for r in kept if r.outcome in (Outcome.DECLINED, Outcome.NOT_SELECTED)
                    and r.new_system != by_name[r.host].before.boot_path]
    try:
        flow.finish(report, tools.echo)
    except Refused:  # "declined": true only of hosts that went back
        if not tested_still:
            raise
    if tested_still:
        first = tested_still[0]
        more = f" (and {len(tested_still) - 1} more host(s))" if len(tested_still) > 1 else ""
        raise DeployFailed(f"{first.host}: {first.message}{more}", report)
    return report


class Unwritten(Journal):
    """The switch question's journal, which writes nothing: a host left on its tested system
    there is journalled by the recipe with what it runs ("declined; nothing changed", the
    engine's words for a host no question changed, would not be true)."""

    def send(self, host: Host, action: str, outcome: str, *, on_host: bool = True, **fields: Any) -> Record | None:
        return None


def journalled(prep: engine.Prepared, on_test: Sequence[tuple[Change, HostResult]],
               kept: tuple[HostResult, ...]) -> tuple[HostResult, ...]:
    """Each host left on its tested system, journalled as `emergency-switch` with its row."""
    for (change, _), row in zip(on_test, kept):
        prep.journal.write_result(change.host, "emergency-switch", row)
    return kept


def after_a_failed_test(prep: engine.Prepared, left: tuple[HostResult, ...], tested: Sequence[HostResult],
                switches: Sequence[Change], failed: Sequence[HostResult], req: engine.DeployRequest,
                tools: flow.Tools) -> Report:
    """A test activation failed on some host (rolled back there): nothing is switched, and the
    hosts whose test passed run the tested system and boot the old one. Said so per host, then
    offered to go back now (yes at a terminal or --yes: back to the boot entry's system); exit 1."""
    why = f"not switched: {', '.join(r.host for r in failed)} failed the test activation"
    on_test = [(c, unchanged(c, Outcome.NOT_STARTED, why)) for c in switches]
    kept = journalled(prep, on_test, tuple(still_tested(c, r) for c, r in on_test))
    kept, interrupted = offer_to_go_back(prep, on_test, kept, req, tools)
    rows = {r.host: r for r in kept}
    return flow.finish(engine.report(prep, left + tuple(rows.get(r.host, r) for r in tested), interrupted,
                                       "emergency"), tools.echo)


def still_tested(change: Change, left: HostResult) -> HostResult:
    """A host not switched after its test activation: it runs the tested system and boots the
    old one, which its next boot goes back to; said so, not "nothing changed"."""
    before = change.before
    why = "declined the switch" if left.outcome is Outcome.DECLINED else left.message.split(";")[0]
    return replace(left, new_system=change.system, generation=before.generation, tried_system=change.system,
                   message=(f"{why}{TESTED} {store_name(change.system)} and boots the "
                            f"old one (generation {before.generation}, {store_name(before.boot_path)}): its next "
                            f"boot goes back. Back now: invoke rollback --host {change.host.name} --generation "
                            f"{before.generation}; to keep the fix: invoke switch --host {change.host.name}"))


def offer_to_go_back(prep: engine.Prepared, on_test: Sequence[tuple[Change, HostResult]],
                     kept: tuple[HostResult, ...], req: engine.DeployRequest,
                     tools: flow.Tools) -> tuple[tuple[HostResult, ...], bool]:
    """At a terminal (a no was answered there): back to the booted system now? Yes: the boot
    profile's system `test`-activated, under the lock, with the watchdog and checks, journalled
    as emergency-back. Returns the hosts' results and whether Ctrl-C came."""
    backs = [back_change(c) for c, _r in on_test if c.before.boot_path]
    for result in kept:  # what is so, before the question (the how-to is in the report)
        tools.echo(f"{result.host}: {result.message.split('. Back now:')[0]}")
    if not backs or not tools.prompter.can_ask:
        return kept, False
    hosts = ", ".join(c.host.name for c in backs)
    again = engine.confirm(tools, f"Go back to the booted system on {hosts} now (its boot entry, "
                                  "switch-to-configuration test)?")
    if not again:
        return kept, again is None  # None: Ctrl-C at the question
    went, interrupted = engine.activate(prep, backs, tools, verb="emergency-back")
    done = {r.host: r for r in went}
    return tuple(went_back(r, done[r.host]) if r.host in done else r for r in kept), interrupted


def back_change(change: Change) -> Change:
    """From the tested system (what runs now, and what a failed go-back returns to) to the boot
    profile's system, as a `test` activation that leaves the boot entry alone."""
    now = replace(change.before, running=change.system)
    return replace(change, action=Action.TEST, system=change.before.boot_path, before=now, expect_running=None,
                   diff="", copy_seconds=0.0)


def went_back(kept: HostResult, back: HostResult) -> HostResult:
    """One row per host: not switched (declined, or another host failed) and back on its booted
    system, or what the go-back came to (not started after Ctrl-C: still on the tested system, as
    its row says)."""
    if back.outcome is Outcome.NOT_STARTED:
        return kept
    why = kept.message.partition(TESTED)[0]
    if back.outcome is Outcome.OK:
        return replace(kept, new_system=back.new_system, generation=back.generation, stages=back.stages,
                       message=f"{why}; back on the booted system ({store_name(back.new_system)}, "
                               f"generation {back.generation}), as before the emergency")
    return replace(back, message=f"{why}; going back to the booted system: {back.message}")
