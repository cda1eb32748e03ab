"""The host operations that are not deploys, each through the one flow (fleet/flow.py), saying
only what is its own: rollback (a host back to a generation it has) and gc (old generations
deleted, garbage collected)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..actions import collection, generations
from ..actions.journal import Journal, deployer_journal_path, read_local
from ..actions.plan import render
from ..host.facts import Facts
from ..models import Action, Host, HostResult, Outcome, Plan, Policy, Report
from . import lock, pipeline
from .engine import describe_policy, run_batches, run_changes, unwatched_hosts
from .flow import Choice, Course, Tools, run_operation
from .pipeline import Change, Context


@dataclass(frozen=True)
class RollbackRequest:
    hosts: tuple[Host, ...]
    generation: int | None = None  # None: the previous one
    boot: bool = False
    policy: Policy = Policy()
    reason: str = ""
    full_diff: bool = False


def rollback(req: RollbackRequest, tools: Tools) -> Report:
    """Each host back to its previous generation (past those that failed) or generation N."""
    runner, echo = tools.runner, tools.echo
    journal = Journal(runner, tools.journal_path or deployer_journal_path(), None, req.reason, echo)
    request = generations.Request(req.hosts, req.generation, req.boot, req.reason)
    action = Action.BOOT if req.boot else Action.SWITCH
    here = read_local(journal.path)  # the deployer's records: which generations failed before
    chosen: dict[str, generations.Step] = {}

    def choose(host: Host, facts: Facts) -> Change:
        step = chosen[host.name] = generations.prepare(host, request, runner, echo, here)
        return Change(host, action, step.target.path, facts, generation=step.target.number, diff=step.plan.closure_diff)

    def show(changes: Sequence[Change]) -> None:
        steps = [chosen[c.host.name] for c in changes]
        echo(render(Plan(action, tuple(s.plan for s in steps), None, (), req.reason), full_diff=req.full_diff))
        for note in (n for s in steps for n in s.notes):
            echo(f"  warning: {note}")
        echo(describe_policy(req.policy, [c.host.name for c in changes], action,
                             unwatched=unwatched_hosts(changes, req.policy)))

    def question(asking: Sequence[Change]) -> str:
        return (generations.question(chosen[asking[0].host.name]) if len(asking) == 1
                else f"Roll back {', '.join(c.host.name for c in asking)} ({len(asking)} hosts)?")

    def asks(host: Host) -> bool:
        return not host.is_local

    choice = Choice(verb="rollback", action=action, reported_as="rollback", asks=asks, choose=choose)
    course = Course(verb="rollback", host_of=lambda c: c.host, show=show, asks=lambda c: asks(c.host),
                    question=question, left_as_is=pipeline.unchanged,
                    run=lambda go: run_changes(go, Context(runner, req.policy, tools.progress, "rollback",
                                                           stop=tools.ledger.stop), journal))
    return run_operation(choice, course, req.hosts, req.policy, tools, journal)


def gc(hosts: tuple[Host, ...], keep: int, policy: Policy, tools: Tools) -> Report:
    """Old generations deleted and garbage collected, with the deploys' approval, lock and report."""
    runner, echo = tools.runner, tools.echo
    journal = Journal(runner, tools.journal_path or deployer_journal_path(), None, "", echo)
    systemd: dict[str, bool] = {}

    def choose(host: Host, facts: Facts) -> collection.GcStep:
        systemd[host.name] = facts.systemd
        return collection.choose(host, keep, runner)

    def show(chosen: Sequence[collection.GcStep]) -> None:
        for step in chosen:
            echo(collection.describe(step, keep))

    def question(asking: Sequence[collection.GcStep]) -> str:
        names = [s.host.name for s in asking]
        return (f"Delete {len(asking[0].doomed)} generation(s) on {names[0]} and collect garbage?" if len(names) == 1
                else f"Delete old generations and collect garbage on {', '.join(names)} ({len(names)} hosts)?")

    def left_as_is(step: collection.GcStep, outcome: Outcome, message: str) -> HostResult:
        return HostResult(host=step.host.name, action="gc", outcome=outcome,
                          message=message.replace("nothing changed", "nothing deleted"))

    def work(step: collection.GcStep) -> HostResult:
        host = step.host
        with lock.held(host, "gc", policy.lock_timeout, runner,
                       systemd=systemd[host.name] and not runner.dry_run) as lease:
            refused = lease.refused
            if refused:
                result = HostResult(host=host.name, action="gc",
                                    outcome=Outcome.LOCKED if lock.by_another(refused) else Outcome.FAILED,
                                    message=f"{refused}; nothing deleted")
            else:
                result = collection.collect(step, runner, echo)
        if not runner.dry_run:
            journal.write(host, "gc", result.outcome.value, message=result.message)
        return result

    def run(go: Sequence[collection.GcStep]) -> tuple[list[HostResult], bool]:
        return run_batches(go, work, replace(policy, batches=()), echo, None,
                           lambda s, why: left_as_is(s, Outcome.NOT_STARTED, why), tools.ledger.stop)

    # A dry run only prints what it would delete: it is not refused without a terminal.
    choice = Choice(verb="gc", action="gc", reported_as="gc", asks=lambda h: True, choose=choose,
                    refuse=not runner.dry_run)
    course = Course(verb="gc", host_of=lambda s: s.host, show=show, asks=lambda s: True, question=question,
                    left_as_is=left_as_is, run=run)
    return run_operation(choice, course, hosts, policy, tools, journal)
