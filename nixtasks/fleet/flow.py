"""The one flow of every host operation (deploy, rollback, gc, and the steps the recipes
combine): `choose_steps` does everything before the plan the same way for all of them (refused
without a terminal, every host read, the unreachable named or skipped and journalled, a sudo
wanting a password stopping the run, each admitted host's step chosen before anything changes
anywhere); `carry_out` does the rest (one plan, one approval whose no is journalled, the
approved in batches, one report whose exit code is never 0 after a failure). Each operation
says only what is its own: a `Choice` and a `Course`. Ctrl-C anywhere ends in `reported`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from ..actions.journal import Journal
from ..actions.plan import render_report
from ..errors import DeployFailed, Interrupted, Refused
from ..host.facts import Facts
from ..host.prompts import Prompter
from ..host.runner import Runner
from ..models import WORK_AT_ONCE, Action, Echo, Host, HostResult, Outcome, Policy, Report, at_once
from . import pipeline, selection
from .interrupts import BEFORE_IT_STARTED, BEFORE_THE_PLAN, Ledger, all_or_stop, shielded
from .pipeline import Change
from .progress import Progress

S = TypeVar("S")


@dataclass(frozen=True)
class Tools:
    """The effects one run uses."""

    runner: Runner
    prompter: Prompter
    progress: Progress
    echo: Echo
    journal_path: Path | None = None
    ledger: Ledger = field(default_factory=Ledger)  # the run's hosts as they end, and its Ctrl-C


@dataclass(frozen=True)
class Readings:
    """What reading the hosts found: each host's facts, in the hosts' order, and the hosts that
    go no further before they are admitted (a deploy's systems that failed to build, with
    --keep-going), as results; they are journalled once the run goes on."""

    facts: Sequence[Facts]
    out: tuple[HostResult, ...] = ()


@dataclass(frozen=True)
class Choice(Generic[S]):
    """How an operation chooses its step on each host, before anything changes anywhere."""

    verb: str  # in refusals and the journals
    action: Action | str  # of a host skipped as unreachable
    reported_as: Action | str  # the report's (a recipe's name: blue-green, emergency)
    asks: Callable[[Host], bool]  # whether a host needs the approval
    choose: Callable[[Host, Facts], S]  # an admitted host's step (its checks and copies: a deploy's)
    read: Callable[[Sequence[Host]], Readings] | None = None  # None: every host read in parallel
    admitted: Callable[[Sequence[Host]], None] | None = None  # before any step: a deploy's push to its cache
    refuse: bool = True  # refuse without a terminal (a gc dry run only prints)


@dataclass(frozen=True)
class Course(Generic[S]):
    """What an operation does with the steps chosen: its plan, its question, its run, its report."""

    verb: str
    host_of: Callable[[S], Host]
    show: Callable[[Sequence[S]], None]  # the plan
    asks: Callable[[S], bool]
    question: Callable[[Sequence[S]], str]  # for the steps that ask
    left_as_is: Callable[[S, Outcome, str], HostResult]  # declined, not selected, not started
    run: Callable[[Sequence[S]], tuple[Sequence[HostResult], bool]]  # the approved, in batches; interrupted?
    # The report of the hosts left out before the plan, and of the others (not approved, or run);
    # None: both in that order, as they are.
    report: Callable[[tuple[HostResult, ...], tuple[HostResult, ...], bool], Report] | None = None
    records: Callable[[S], bool] = lambda step: True  # whether its result is journalled (a dry activation's is not)


def run_operation(choice: Choice[S], course: Course[S], hosts: Sequence[Host], policy: Policy, tools: Tools,
                  journal: Journal) -> Report:
    """The whole flow for an operation that needs nothing between its steps and its plan."""
    steps, left_out = choose_steps(choice, hosts, policy, tools, journal)
    return carry_out(course, steps, left_out, tools, journal)


def choose_steps(choice: Choice[S], hosts: Sequence[Host], policy: Policy, tools: Tools,
                 journal: Journal) -> tuple[list[S], tuple[HostResult, ...]]:
    """Everything before the plan; changes nothing any host runs or boots. Returns each admitted
    host's step, and the results of the hosts that go no further (failed to build, skipped as
    unreachable), journalled."""
    tools.ledger.begin(hosts, choice.reported_as, journal)
    if choice.refuse:
        selection.refuse_without_terminal(choice.verb, [h for h in hosts if choice.asks(h)], tools.prompter, journal)
    readings = choice.read(hosts) if choice.read else Readings(selection.read_hosts(hosts, tools.runner))
    out = {r.host for r in readings.out}
    going = [(h, f) for h, f in zip(hosts, readings.facts) if h.name not in out]
    admitted, skipped = selection.admit([h for h, _ in going], [f for _, f in going], policy, choice.action,
                                        journal, tools.echo)
    by_name = {h.name: h for h in hosts}

    def journal_left_out() -> None:
        for result in skipped + readings.out:
            journal.write(by_name[result.host], choice.verb, result.outcome.value, on_host=False,
                          message=result.message)

    # The hosts left out are journalled only once the run goes on, or is stopped by Ctrl-C (whose
    # report has every host): a run stopped by an error first (an unreachable host, a failed
    # push, a host lost before its copy) has no report, so it leaves no record of them either.
    try:
        if choice.admitted:
            choice.admitted([h for h, _ in admitted])
        width = at_once(len(admitted), policy.widened(WORK_AT_ONCE))
        steps = all_or_stop(lambda hf: choice.choose(*hf), admitted, width, tools.runner)
    except KeyboardInterrupt:
        journal_left_out()
        raise
    journal_left_out()
    return steps, readings.out + skipped


def carry_out(course: Course[S], steps: Sequence[S], left_out: tuple[HostResult, ...], tools: Tools,
              journal: Journal) -> Report:
    """One plan, one approval (a host not approved journalled at once), the approved through
    the operation's run, one record per host, one report."""
    course.show(steps)
    tools.ledger.plan(journal, [s for s in steps if isinstance(s, Change)])
    asking = [s for s in steps if course.asks(s)]

    def journalled(step: S, result: HostResult) -> None:
        if course.records(step):
            journal.write_result(course.host_of(step), course.verb, result)

    go, left = selection.ask(steps, asking, course.question(asking) if asking else "", tools.prompter,
                             host_of=course.host_of, left_as_is=course.left_as_is, journal=journalled)
    results, interrupted = course.run(go)
    for step, result in zip(go, results):  # one record per host: those Ctrl-C kept from starting too
        if result.outcome is Outcome.NOT_STARTED and course.host_of(step).name not in journal.settled:
            journalled(step, result)
    ran = left + tuple(results)
    return finish(course.report(left_out, ran, interrupted) if course.report else
                  Report(course.verb, left_out + ran, interrupted=interrupted), tools.echo)


# --- the report and its exit code -----------------------------------------------------------


def finish(report: Report, echo: Echo) -> Report:
    """The report shown, then the run's one error line, if any: never exit 0 after a failure, a
    rollback, a host not started, declined or skipped as unreachable (the selection is not done).
    Exit 3 says "nothing was changed": only when no host was, so a no after hosts went out (a
    recipe's later question, after its canary) is a selection partly done, exit 1."""
    echo(render_report(report))
    if report.interrupted:
        raise Interrupted(f"interrupted; {summary(report)}", report)
    skipped = [r.host for r in report.results if r.outcome is Outcome.SKIPPED]
    also = f"; skipped as unreachable: {', '.join(skipped)}" if skipped else ""
    failed = report.failed()
    if failed:
        first = failed[0]
        more = f" ({len(failed) - 1} more host(s) failed)" if len(failed) > 1 else ""
        raise DeployFailed(f"{first.host}: {first.outcome.value}: {first.message}{more}{also}", report)
    stopped = [r.host for r in report.results if r.outcome is Outcome.NOT_STARTED]
    # Hosts left out of a chosen subset count for nothing: the exit code is that of those approved.
    declined = [r.host for r in report.results if r.outcome is Outcome.DECLINED]
    if declined:
        went = [f"{r.host} ({'in an earlier step' if r.outcome is Outcome.DECLINED else r.outcome.value})"
                for r in report.results if r.changed]  # a declined host changed: e.g. an emergency's test
        if not went:
            rest = f"; not started: {', '.join(stopped)}" if stopped else ""
            raise Refused(f"not approved for {', '.join(declined)}; nothing was changed on any host{rest}{also}")
        raise DeployFailed(f"not approved for {', '.join(declined)}; this run changed {', '.join(went)} before that, "
                           f"so the selection is only partly done: the report says what each host runs{also}", report)
    if stopped:
        raise DeployFailed(f"not started: {', '.join(stopped)}{also}", report)
    if skipped:  # the others went out, but not the whole selection (as deploy-rs users asked in its #214)
        raise DeployFailed(f"skipped as unreachable (--skip-unreachable): {', '.join(skipped)}; nothing was changed "
                           f"there; {again(report.action, skipped)}", report)
    return report


def again(action: Action | str, skipped: Sequence[str]) -> str:
    """What a host skipped as unreachable still needs, once it answers."""
    them = "it" if len(skipped) == 1 else "them"
    if action == "gc":
        return (f"collect {'its' if len(skipped) == 1 else 'their'} garbage once reachable: invoke gc --host "
                f"{','.join(skipped)}")
    if action == "rollback":
        return f"roll {them} back once reachable: invoke rollback --host {','.join(skipped)}"
    return f"deploy {them} once reachable"


def summary(report: Report) -> str:
    counts: dict[str, int] = {}
    for r in report.results:
        counts[r.outcome.value] = counts.get(r.outcome.value, 0) + 1
    return ", ".join(f"{n} {outcome}" for outcome, n in counts.items())


# --- Ctrl-C ---------------------------------------------------------------------------------


def reported(run: Callable[[Tools], Report], tools: Tools) -> Report:
    """Every deploy, rollback, gc and recipe runs through here (cli/session.py): a Ctrl-C that
    lands where no wait notes it (a journal record being sent, a copy, a question, a recipe
    between two steps) ends here, in the report of every host as it is (`stopped`). Locks and
    holds are given back where they are taken; a host under way has finished by now (its
    batch waits for it)."""
    try:
        return run(tools)
    except KeyboardInterrupt:
        if not tools.ledger.hosts:  # e.g. update-deploy's `nix flake update`: no host reached yet
            raise Interrupted("interrupted before any host was reached; nothing was changed on any host") from None
    raise stopped(tools)


def stopped(tools: Tools, why: str | None = None) -> Interrupted:
    """Ctrl-C's end of a run: each host as it ended (journalled then), the oks held back for a
    soak or the batch's end journalled as they are, every other host "not started" (journalled
    now: on the host too once the plan was shown), and the report shown. A second Ctrl-C does
    not cut the records short. Returns the error to raise (exit 130)."""
    ledger = tools.ledger
    why = why or (BEFORE_IT_STARTED if ledger.planned else BEFORE_THE_PLAN)
    results = shielded(lambda: settle_the_rest(tools, why), ledger.stop, tools.echo)
    report = Report(ledger.action, results, interrupted=True)
    tools.echo(render_report(report))
    if not ledger.planned:
        return Interrupted(f"{why.split(';')[0]}; nothing was changed on any host", report)
    return Interrupted(f"interrupted; {summary(report)}", report)


def settle_the_rest(tools: Tools, why: str) -> tuple[HostResult, ...]:
    ledger, journal = tools.ledger, tools.ledger.journal
    assert journal is not None  # given with the hosts (Ledger.begin)
    journal.write_held()
    for host in ledger.hosts:
        if host.name in journal.settled:
            continue
        change = ledger.changes.get(host.name)
        result = (pipeline.unchanged(change, Outcome.NOT_STARTED, why) if change else
                  HostResult(host=host.name, action=ledger.action, outcome=Outcome.NOT_STARTED, message=why))
        if ledger.planned:
            journal.write_result(host, ledger.verb, result)
        else:  # nothing touched the host: its own journal neither
            journal.write(host, ledger.verb, result.outcome.value, on_host=False, message=why)
            journal.settle(host, result)
    return tuple(journal.settled[h.name] for h in ledger.hosts)
