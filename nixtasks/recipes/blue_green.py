"""blue-green: `boot` the new system on the idle group, reboot it, wait until it answers
running the new system, check it, then, after an approval that names the group, run the
inventory's `switch_traffic` on the deployer. The group goes as a whole: a host that cannot
be kept for the reboot stops the run before anything is booted; a host whose `boot` fails,
that does not come back, or fails its checks, puts the whole group back (boot entries set
back, rebooted hosts booted back into their previous generation), and traffic is never
switched. A no at the traffic question leaves the group on the new system, said so, exit 1."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import replace

from ..errors import DeployFailed, NixtasksError, Refused
from ..fleet import engine, flow, hooks, interrupts, reboot
from ..fleet.pipeline import Change, Context
from ..models import Action, HostResult, Outcome, Report


def blue_green(req: engine.DeployRequest, tools: flow.Tools, to: str, switch_traffic: str,
               reboot_timeout: float) -> Report:
    boot = replace(req, action=Action.BOOT)
    prep = engine.prepare(boot, tools, report_as="blue-green")
    names = [c.host.name for c in prep.changes]
    engine.show_plan(prep, tools, reboot=reboot_timeout)
    tools.echo(f"  blue-green: boot the new system on {to} ({', '.join(names)}), reboot, check; then switch "
               f"traffic to {to}" + ("" if switch_traffic else " (no switch_traffic in [blue_green]: by hand)"))
    tools.echo(on_failure(prep.changes, to, req.policy.rollback))
    go, left = engine.approve(prep, prep.changes, tools, question=(
        f"Boot the new system on {to} ({', '.join(names)}) and reboot {'it' if len(names) == 1 else 'them'}?"),
        verb="blue-green")
    if left and not engine.declined(left):  # traffic never moves to a part of a group
        raise Refused(f"blue-green boots {to} as a whole ({', '.join(names)}), not a chosen subset; nothing was "
                      "changed. Run it again and answer yes or no")
    handed: list[Change] = []  # to the reboot step, which lets each go after its checks
    kept = list(go)  # until they are known: each may hold this run's hold
    try:
        # Kept from here through the checks after the reboot: no other deploy gets in between.
        kept, refused = reboot.keep_for_reboot(go, tools.runner, req.policy, "blue-green")
        for result in refused:
            prep.journal.write_result(next(c.host for c in go if c.host.name == result.host), "blue-green", result)
        if refused:  # the group as a whole, or none of it
            why = (f"not started: {', '.join(r.host for r in refused)} could not be kept for the reboot, and "
                   f"blue-green boots {to} as a whole; nothing changed")
            stopped = engine.not_started(kept, why, prep.journal, "blue-green")
            return flow.finish(engine.report(prep, tuple(refused) + stopped, False, "blue-green"), tools.echo)
        results, interrupted = engine.activate(prep, kept, tools, verb="blue-green", hold=True)
        failed = [r for r in results if r.failed]
        if failed and not interrupted and req.policy.rollback:
            results = set_back(prep, kept, results, failed, req, tools)
        else:
            if not req.policy.rollback:
                results = left_as_they_are(kept, results, failed)
            if interrupted or left or failed:  # each ok is final: its boot entry is the new system
                engine.journal_held(prep, kept, results, "blue-green")
            # else the reboot step journals each host once, as it ends: one record per host
        if interrupted or left or failed:
            return finish(engine.report(prep, left + results, interrupted, "blue-green"), to, tools)
        handed = list(kept)
        # With a traffic question to come, each ok waits for its answer: one record per host.
        rebooted, interrupted = engine.reboot_into_new(prep, handed, reboot_timeout, tools, "blue-green",
                                                       hold=bool(switch_traffic))
    finally:  # hosts that never got to their reboot (the rebooted ones are let go by the reboot step), even on Ctrl-C
        interrupts.shielded(lambda: reboot.let_go([c for c in kept if c not in handed], tools.runner, req.policy,
                                                   "blue-green"), tools.ledger.stop, tools.echo)
    try:
        return after_reboot(prep, rebooted, interrupted, names, to, switch_traffic, tools, handed)
    finally:  # the traffic command failed, or Ctrl-C in it: each ok still held is journalled as it is
        interrupts.shielded(prep.journal.write_held, tools.ledger.stop, tools.echo)


def after_reboot(prep: engine.Prepared, rebooted: Sequence[HostResult], interrupted: bool, names: Sequence[str],
                 to: str, switch_traffic: str, tools: flow.Tools, handed: Sequence[Change]) -> Report:
    """The group is back (or not): traffic is switched only after a healthy reboot of every
    host and a yes. Each host's one record is written once its outcome is final."""
    healthy = not interrupted and not any(r.failed for r in rebooted) and not prep.skipped
    if healthy and switch_traffic:
        switch = engine.confirm(tools, f"{to} ({', '.join(names)}) runs the new system and is healthy. Switch "
                                       f"traffic to {to}?")
        if not switch:  # None: Ctrl-C at the question
            return traffic_declined(prep, handed, rebooted, to, hooks.fill(switch_traffic, to, names), tools,
                                    interrupted=switch is None)
        engine.switch_traffic(switch_traffic, to, names, tools)
        tools.echo(f"traffic switched to {to}; the other group is left for a later run")
    interrupts.shielded(prep.journal.write_held, tools.ledger.stop, tools.echo)  # a Ctrl-C meanwhile is noted
    if interrupted or tools.ledger.stop.is_set():  # traffic is never switched after Ctrl-C
        return flow.finish(engine.report(prep, rebooted, True, "blue-green"), tools.echo)
    if not healthy:
        missing = f" ({', '.join(r.host for r in prep.skipped)} could not be reached)" if prep.skipped else ""
        tools.echo(f"traffic stays where it is: {to} did not come back healthy as a whole{missing}")
        finish(engine.report(prep, rebooted, False, "blue-green"), to, tools)
        raise NixtasksError(f"traffic was not switched to {to}: {', '.join(r.host for r in prep.skipped)} could "
                            "not be reached")  # finish() raised already when a host failed
    return flow.finish(engine.report(prep, rebooted, False, "blue-green"), tools.echo)


def finish(report: Report, to: str, tools: flow.Tools) -> Report:
    """`flow.finish`, whose error line names the host that failed first (not one that only
    went back with its group), and the hosts that went back with it."""
    try:
        return flow.finish(report, tools.echo)
    except DeployFailed as exc:
        causes = [r for r in report.results if r.failed and not reboot.with_the_group(r)]
        along = [r.host for r in report.results if r.failed and reboot.with_the_group(r)]
        if not causes or not along:
            raise
        first = causes[0]
        more = f" ({len(causes) - 1} more host(s) failed)" if len(causes) > 1 else ""
        raise DeployFailed(f"{first.host}: {first.outcome.value}: {first.message}{more}; {to} went back as a whole "
                           f"({', '.join(along)} too: see the report); traffic stays where it is", exc.report) from None


def on_failure(changes: Sequence[Change], to: str, rollback: bool) -> str:
    """The plan's line for a failure on one host: what becomes of every host of the group."""
    if rollback:
        return (f"  on a failure: {to} goes back as a whole: every host's boot entry is set back to its previous "
                "generation, and a host already rebooted is rebooted into it; traffic stays")
    undo = "; ".join(f"{c.host.name}: invoke rollback --host {c.host.name} --generation {c.before.generation}"
                     for c in changes)
    return ("  on a failure: every host is LEFT AS IT IS (--no-rollback): one whose boot went fine boots the new "
            f"system at its next boot; traffic stays. To undo, per host: {undo}")


def set_back(prep: engine.Prepared, kept: Sequence[Change], results: Sequence[HostResult],
             failed: Sequence[HostResult], req: engine.DeployRequest, tools: flow.Tools) -> tuple[HostResult, ...]:
    """A `boot` failed on a host of the group: every host whose boot went fine has its boot
    entry set back (a failed release must not come back at its next boot), each with one
    record saying so. Ctrl-C meanwhile lets the setting back finish."""
    went = [(c, r) for c, r in zip(kept, results) if r.outcome is Outcome.OK]
    if not went:
        return tuple(results)
    tools.echo(f"{', '.join(r.host for r in failed)} failed: setting the boot entry of "
               f"{', '.join(c.host.name for c, _ in went)} back")
    ctx = Context(tools.runner, req.policy, tools.progress, "blue-green", stop=tools.ledger.stop)
    backs = interrupts.shielded(lambda: reboot.set_back([c for c, _ in went], [r for _, r in went], ctx, failed),
                                tools.ledger.stop, tools.echo)
    done = {}
    for (change, _), back in zip(went, backs):
        tools.progress.done(back)
        prep.journal.write_result(change.host, "blue-green", back)
        done[back.host] = back
    return tuple(done.get(r.host, r) for r in results)


def left_as_they_are(kept: Sequence[Change], results: Sequence[HostResult],
                      failed: Sequence[HostResult]) -> tuple[HostResult, ...]:
    """--no-rollback and a host failed: the others keep the new boot entry; their rows say so,
    and how to undo it."""
    if not failed:
        return tuple(results)
    names = ", ".join(r.host for r in failed)
    return tuple(replace(r, message=f"{r.message}; kept though {names} failed (--no-rollback): it boots the new system "
                                    f"at its next boot; undo: invoke rollback --host {c.host.name} --generation "
                                    f"{c.before.generation}") if r.outcome is Outcome.OK else r
                 for c, r in zip(kept, results))


def traffic_declined(prep: engine.Prepared, changes: Sequence[Change], rebooted: Sequence[HostResult], to: str,
                     command: str, tools: flow.Tools, *, interrupted: bool = False) -> Report:
    """A no (or Ctrl-C: `interrupted`, exit 130) at the traffic question: the group runs and
    boots the new system, and traffic was not switched. Each host's row and record say so, with
    the command that switches it; exit 1 (hosts changed: not "nothing was changed")."""
    rows = []
    said = "Ctrl-C at the question" if interrupted else "declined"
    for change, result in zip(changes, rebooted):
        row = replace(result, outcome=Outcome.DECLINED, message=(
            f"runs and boots the new system (generation {result.generation}), healthy; traffic was NOT switched to "
            f"{to} ({said}): to switch it, run on the deployer: {command}"))
        prep.journal.write_result(change.host, "blue-green", row)
        rows.append(row)
    report = engine.report(prep, rows, interrupted, "blue-green")
    if interrupted:
        return flow.finish(report, tools.echo)  # raises Interrupted: exit 130
    why = (f"traffic was not switched to {to} (declined); {to} ({', '.join(r.host for r in rows)}) runs and boots the "
           f"new system, the other group the old. To switch traffic, run on the deployer: {command}")
    with contextlib.suppress(DeployFailed):  # the engine's general line; this one says what to do
        flow.finish(report, tools.echo)
    raise DeployFailed(why, report)  # also if finish() let it pass: hosts changed, traffic did not
