"""The fleet engine: every deploy and rollback, of one host or many, goes through here.

Before anything changes: the refusal without a terminal, one evaluation and build, one
probe per host (in parallel with the build), the unreachable hosts named, copies and
closure diffs in parallel, one plan and one approval. Then batches: hosts of a batch in
parallel, each through `pipeline.apply`, a halt when a batch fails beyond the threshold,
Ctrl-C that lets running hosts finish, a journal record per host as soon as it is known,
and one report whose exit code is never 0 after a failure or a rollback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Generic, TypeVar

from ..actions import cache, closures, collection, generations, secrets
from ..actions.journal import Journal, deployer_journal_path, read_local
from ..actions.plan import approval_question, fleet_question, needs_approval, render, render_git, render_report
from ..errors import DeployFailed, Interrupted, Refused
from ..host import gitstate
from ..host.facts import Facts, read_facts
from ..host.prompts import NO, Approval, Prompter
from ..host.runner import Runner
from ..models import (
    READS_AT_ONCE,
    WORK_AT_ONCE,
    Action,
    Cache,
    Delivery,
    Echo,
    GitState,
    Host,
    HostPlan,
    HostResult,
    NixFlags,
    Outcome,
    Plan,
    Policy,
    Report,
    Stage,
    Target,
    at_once,
)
from . import batches, follow, health, hooks, lock, pipeline, reboot, selection, watchdog
from .interrupts import BEFORE_IT_STARTED, BEFORE_THE_PLAN, Ledger, all_or_stop, shielded
from .pipeline import Change, Context
from .progress import Progress

T = TypeVar("T")
S = TypeVar("S")
R = TypeVar("R")


@dataclass(frozen=True)
class DeployRequest:
    action: Action
    hosts: tuple[Host, ...]
    flake: str
    policy: Policy = Policy()
    show_trace: bool = False
    nix_options: tuple[str, ...] = ()  # the inventory's
    reason: str = ""
    full_diff: bool = False  # the whole closure diff per host, not its summary
    allow_secrets: tuple[str, ...] = ()  # files the secrets guard lets through
    result_links: Path | None = None  # build: leave ./result (./result-NAME) links in this directory
    nix_flags: NixFlags = NixFlags()  # the command line's Nix options
    cache: Cache | None = None  # the binary cache the release goes through; None: straight from here

    def build_request(self) -> closures.BuildRequest:
        return closures.BuildRequest(self.action, self.hosts, self.flake, self.show_trace, self.nix_options,
                                  self.nix_flags)

    @property
    def all_nix_options(self) -> tuple[str, ...]:
        return (*self.nix_options, *self.nix_flags.for_eval())


@dataclass(frozen=True)
class RollbackRequest:
    hosts: tuple[Host, ...]
    generation: int | None = None  # None: the previous one
    boot: bool = False
    policy: Policy = Policy()
    reason: str = ""
    full_diff: bool = False


@dataclass(frozen=True)
class Tools:
    """The effects one engine run uses."""

    runner: Runner
    prompter: Prompter
    progress: Progress
    echo: Echo
    journal_path: Path | None = None
    ledger: Ledger = field(default_factory=Ledger)  # the run's hosts as they end, and its Ctrl-C


# --- deploy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A deploy up to its plan: built, every host probed, copied and diffed; nothing activated."""

    request: DeployRequest
    git: GitState
    journal: Journal
    changes: tuple[Change, ...]
    skipped: tuple[HostResult, ...] = ()  # in every report: unreachable hosts (update-deploy adds its own)
    build_seconds: float = 0.0
    warnings: tuple[str, ...] = ()  # what Nix warned while this deploy built
    deliveries: Mapping[str, Delivery] = field(default_factory=dict)  # by host: how its closure got there
    sent_bytes: int | None = None  # what left this machine: the push to the cache and the direct copies

    def only(self, names: Sequence[str]) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.host.name in names)


def deploy(req: DeployRequest, tools: Tools) -> Report:
    """Build, plan, one approval, then every host through the pipeline in batches."""
    if not req.action.activates:
        return build_only(req, tools)
    prep = prepare(req, tools)
    show_plan(prep, tools)
    go, left = approve(prep, prep.changes, tools)
    results, interrupted = activate(prep, go, tools)
    return finish(report(prep, left + results, interrupted), tools.echo)


def build_only(req: DeployRequest, tools: Tools) -> Report:
    """build and dry-build: one evaluation, nothing copied or activated."""
    read_git(req, tools)  # shows uncommitted and untracked files
    try:
        builds = closures.build(req.build_request(), tools.runner, tools.echo, keep_going=req.policy.keep_going)
    except KeyboardInterrupt:
        return finish(Report(req.action, tuple(HostResult(host=h.name, action=req.action, outcome=Outcome.NOT_STARTED,
                                                          message=INTERRUPTED_BUILD) for h in req.hosts),
                             interrupted=True), tools.echo)
    made = [h for h in req.hosts if closures.key(h) in builds.built]
    if made and req.result_links is not None and req.action is Action.BUILD and not tools.runner.dry_run:
        closures.result_links(made, builds.built, req.result_links, tools.runner, tools.echo)
    return finish(Report(req.action, tuple(
        HostResult(host=h.name, action=req.action, outcome=Outcome.FAILED, message=builds.failed[closures.key(h)])
        if closures.key(h) in builds.failed else
        HostResult(host=h.name, action=req.action, outcome=Outcome.OK,
                   new_system=builds.built[closures.key(h)].path if builds.built else None) for h in req.hosts)),
        tools.echo)


def read_git(req: DeployRequest, tools: Tools) -> GitState:
    """The flake's git state, shown; and no plaintext secret in what the build would copy."""
    git = gitstate.read(tools.runner, req.flake)
    for line in render_git(git):
        tools.echo(line)
    secrets.guard(req.flake, req.allow_secrets, tools.runner)
    return git


def prepare(req: DeployRequest, tools: Tools, systems: Mapping[str, str] | None = None,
            git: GitState | None = None, *, as_root: bool = True, report_as: str | None = None) -> Prepared:
    """Everything before the plan: the refusal without a terminal, the git check, one evaluation
    and build (or, with `systems`, the store paths of a staged plan: no evaluation), every host
    probed while that runs, unreachable hosts named, and (`as_root`: what follows runs as root
    there; staging does not) hosts whose sudo wants a password not given, then the NixOS and space
    checks, copies and closure diffs in parallel. Changes nothing a host runs or boots. `git`: the
    state of the commit `req.flake` names (update-deploy's, before it is on the branch), checked
    already. `report_as`: the recipe's name for its report and journal (blue-green, emergency)."""
    runner, echo = tools.runner, tools.echo
    warned = len(runner.warnings)
    # A key that cannot be used is refused before anything is built (checked, never shown).
    key = cache.read_key(req.cache) if req.cache is not None and not runner.dry_run else None
    git = git or read_git(req, tools)
    journal = Journal(runner, tools.journal_path or deployer_journal_path(), git, req.reason, echo,
                      gitstate.repository(runner, req.flake))
    tools.ledger.begin(req.hosts, report_as or req.action, journal)
    selection.refuse_without_terminal(req.action.value, [h for h in req.hosts if needs_approval(req.action, h, git)],
                            tools.prompter, journal)
    build_req = req.build_request()
    interrupted = False
    with ThreadPoolExecutor(max_workers=at_once(len(req.hosts), READS_AT_ONCE)) as pool:
        # The hosts are asked what they run while the systems build: both take a while.
        probes = [pool.submit(read_facts, h, runner, sudo_probe=as_root) for h in req.hosts]
        started = time.monotonic()
        try:
            builds = (closures.build(build_req, runner, echo, keep_going=req.policy.keep_going) if systems is None
                      else closures.Builds({}, {}))
        except KeyboardInterrupt:  # the build is stopped (the runner stopped it); no host was touched
            interrupted, builds = True, closures.Builds({}, {})
        build_seconds = round(time.monotonic() - started, 3)
        facts = [p.result() for p in probes]
    warnings = tuple(runner.warnings[warned:])  # the build's (a host's fetch warns about its own things)
    journal.know(req.hosts, (f.machine_id for f in facts))
    if interrupted:
        raise stopped(tools, INTERRUPTED_BUILD)
    unbuilt = build_failures(req, builds.failed, journal, build_seconds, echo)
    going = [(h, f) for h, f in zip(req.hosts, facts) if closures.key(h) not in builds.failed]
    hosts, skipped = selection.admit([h for h, _ in going], [f for _, f in going], req.policy, req.action,
                                     req.action.value, journal, echo)
    journal_unbuilt(req, unbuilt, journal)  # only now: an unreachable host stopped it with no report
    # (a staged plan's systems are on their hosts already: nothing goes through the cache)
    through = closures.unique(b.path for b in (builds.built[closures.key(h)] for h, _ in hosts)
                           if b.at.is_local) if key is not None and systems is None else []
    # The release goes to the cache once, before any host takes it: a failed push stops here.
    pushed = cache.push(req.cache, through, key, runner, echo) if req.cache and key and through else None
    deliveries: dict[str, Delivery] = {}

    def one(host: Host, before: Facts) -> Change:
        built = (builds.built[closures.key(host)] if systems is None
                 else closures.given(host, systems[host.name], runner))
        closures.check_is_nixos(host, built, runner)
        lacking = closures.check_space(host, built, req.action, before.store_free, runner)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"diff-{host.name}") as beside:
            here = beside.submit(closures.diff_here, host, before.running, built, runner)  # needs no copy
            started = time.monotonic()
            delivery = cache.deliver(host, built, lacking, req.cache, runner, echo, req.policy.copy_timeout)
            seconds = round(time.monotonic() - started, 3)
            diff = here.result()
        if delivery is not None:
            deliveries[host.name] = delivery
        if diff is None:
            diff = closures.diff_on_host(host, before.running, built, runner)
        return Change(host, req.action, built.path, before, diff=diff, copy_seconds=seconds)

    # Every host is checked (a NixOS closure, room for it) and copied before any activation.
    changes = tuple(all_or_stop(lambda hf: one(*hf), hosts, at_once(len(hosts), WORK_AT_ONCE), runner))
    sent = (pushed.bytes if pushed else 0) + sum(d.bytes for d in deliveries.values() if d.source == "deployer")
    return Prepared(req, git, journal, changes, unbuilt + skipped, build_seconds, warnings,
                    deliveries, sent if deliveries or pushed else None)


def build_failures(req: DeployRequest, failed: Mapping[tuple[str, Target], str], journal: Journal,
                   build_seconds: float, echo: Echo) -> tuple[HostResult, ...]:
    """--keep-going: the hosts whose system did not evaluate or build, as failed results (in the
    deployer's journal: nothing reached them). When no host is left, the deploy stops here."""
    results = tuple(HostResult(host=h.name, action=req.action, outcome=Outcome.FAILED,
                               message=f"{failed[closures.key(h)]}; nothing changed there",
                               stages=((Stage.BUILD, build_seconds),))
                    for h in req.hosts if closures.key(h) in failed)
    for host, result in zip((h for h in req.hosts if closures.key(h) in failed), results):
        echo(f"warning: {host.name}: {result.message} (--keep-going: the others go on)")
    if results and len(results) == len(req.hosts):
        journal_unbuilt(req, results, journal)
        raise DeployFailed(f"no host's system could be made: {results[0].host}: {results[0].message}; fix the "
                           "configuration (`invoke build --host NAME --show-trace` shows Nix's whole trace)",
                           Report(req.action, results))
    return results


def journal_unbuilt(req: DeployRequest, results: Sequence[HostResult], journal: Journal) -> None:
    """The records of `build_failures`, once the deploy goes on (or ends with their report): a
    deploy that stops with no report, such as at an unreachable host, leaves none."""
    by_name = {h.name: h for h in req.hosts}
    for result in results:
        journal.write(by_name[result.host], req.action.value, result.outcome.value, on_host=False,
                      message=result.message)


def with_git(prep: Prepared, git: GitState) -> Prepared:
    """The same prepared changes, shown and journalled with `git` (a staged plan's revision)."""
    return replace(prep, git=git, journal=prep.journal.retold(git, prep.request.reason))


def recommitted(prep: Prepared, tools: Tools, reason: str) -> Prepared:
    """The same prepared changes, journalled with `reason` (update-deploy names its commit, which
    is on the branch only after the plan)."""
    again = replace(prep, request=replace(prep.request, reason=reason), journal=prep.journal.retold(prep.git, reason))
    tools.ledger.plan(again.journal, again.changes)
    return again


INTERRUPTED_BUILD = "interrupted during the build; nothing changed"


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
    for host, verb, ok in list(journal.held.values()):
        journal.write_result(host, verb, ok)
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


def with_policy(prep: Prepared, policy: Policy) -> Prepared:
    """The same prepared deploy going out by `policy`: a recipe's step (its canaries all at once,
    the rest one by one). The policy a deploy goes out by arrives with it, once."""
    return replace(prep, request=replace(prep.request, policy=policy))


def show_plan(prep: Prepared, tools: Tools, *, reboot: float | None = None, first: Sequence[str] = ()) -> None:
    """The plan: each host as it is and what it gets, the hosts left out, then what the run does
    by the deploy's policy (see `describe_policy` for `reboot` and `first`)."""
    req, policy = prep.request, prep.request.policy
    tools.ledger.plan(prep.journal, prep.changes)
    plans = tuple(HostPlan(c.host, c.action, c.system, c.before.running or None, c.diff,
                           running_generation=c.before.running_generation, boot_system=c.before.boot_path or None,
                           boot_generation=c.before.generation, delivery=prep.deliveries.get(c.host.name))
                  for c in prep.changes)
    tools.echo(render(Plan(req.action, plans, prep.git, prep.warnings, req.reason, req.all_nix_options),
                      full_diff=req.full_diff))
    for left in prep.skipped:
        tools.echo(f"  left out: {left.host} ({left.message.splitlines()[0] if left.message else left.outcome.value})")
    tools.echo(describe_policy(policy, [c.host.name for c in prep.changes], req.action, reboot=reboot, first=first,
                               unwatched=unwatched_hosts(prep.changes, policy)))


def gate(prep: Prepared, changes: Sequence[Change], tools: Tools, question: str,
         verb: str | None = None) -> tuple[list[Change], tuple[HostResult, ...], bool]:
    """A recipe's later approval: like `approve`, and Ctrl-C at the question is an answer (no
    host approved, the run interrupted), so the report of what already went out is kept."""
    asking, question = the_question(prep, changes, question)
    try:  # the question alone: a Ctrl-C while the answers are journalled is not an answer
        answer = tools.prompter.approve(question, [c.host.name for c in asking]) if asking else NO
    except KeyboardInterrupt:
        tools.ledger.stop.set()
        why = "interrupted at the question"
        return [], not_started(changes, why, prep.journal, verb or prep.request.action.value), True
    go, declined = answered(changes, asking, answer, prep.journal, verb or prep.request.action.value)
    return go, declined, False


def confirm(tools: Tools, question: str) -> bool | None:
    """A recipe's yes/no after hosts went out; None for Ctrl-C at the question (the run's stop
    flag is set: the recipe reports, interrupted)."""
    try:
        return tools.prompter.confirm(question)
    except KeyboardInterrupt:
        tools.ledger.stop.set()
        return None


def approve(prep: Prepared, changes: Sequence[Change], tools: Tools, question: str | None = None,
            verb: str | None = None, preselect: bool = False) -> tuple[list[Change], tuple[HostResult, ...]]:
    """One question for the hosts of `changes` that need an approval: those approved, and
    the others as results (declined, or not selected; journalled)."""
    asking, question = the_question(prep, changes, question)
    return ask(changes, asking, question, tools.prompter, prep.journal, verb or prep.request.action.value, preselect)


def the_question(prep: Prepared, changes: Sequence[Change], question: str | None) -> tuple[list[Change], str]:
    """The hosts of `changes` that need an approval, and the question (the default one unless given)."""
    asking = [c for c in changes if needs_approval(c.action, c.host, prep.git)]
    if question is None:
        question = (approval_question(HostPlan(changes[0].host, changes[0].action, changes[0].system, None))
                    if len(changes) == 1 else fleet_question(prep.request.action, [c.host.name for c in asking]))
    return asking, question


def activate(prep: Prepared, changes: Sequence[Change], tools: Tools, verb: str | None = None, *,
             hold: bool = False) -> tuple[tuple[HostResult, ...], bool]:
    """The changes through the pipeline, by the deploy's policy. `hold`: an ok is not journalled
    here (a soak follows that may still take the host back): the caller journals it once it is
    final (`soak`, or `journal_held`)."""
    ctx = Context(tools.runner, prep.request.policy, tools.progress, verb or prep.request.action.value,
                  stop=tools.ledger.stop)
    return run_changes(changes, ctx, prep.journal, hold=hold)


def journal_held(prep: Prepared, changes: Sequence[Change], results: Sequence[HostResult], verb: str) -> None:
    """The oks `activate(hold=True)` left to the caller, as they are final."""
    for change, result in zip(changes, results):
        if result.outcome is Outcome.OK and change.action.changes_host:
            prep.journal.write_result(change.host, verb, result)


def report(prep: Prepared, results: Sequence[HostResult], interrupted: bool,
           action: Action | str | None = None) -> Report:
    timed = tuple(replace(r, stages=((Stage.BUILD, prep.build_seconds), *r.stages),
                          delivery=prep.deliveries.get(r.host)) if r.stages else r for r in results)
    return Report(action or prep.request.action, prep.skipped + timed, interrupted=interrupted,
                  sent_bytes=prep.sent_bytes)


def describe_policy(policy: Policy, names: Sequence[str], action: Action, *, reboot: float | None = None,
                    first: Sequence[str] = (), unwatched: Mapping[str, str] | None = None) -> str:
    """What the run will do after the approval, as it really happens for `action`: which hosts go
    in which batch, what halts the run, when checks run and where the watchdog guards. `reboot`:
    the hosts are rebooted into their new boot entry (blue-green), given that many seconds to come
    back. `first`: hosts that go before the batches (the canary). `unwatched`: hosts the watchdog
    cannot guard, and why."""
    lines = batch_lines(policy, [n for n in names if n not in first], first, action.changes_host)
    rolled = "rolled back" if policy.rollback else "LEFT AS IT IS (--no-rollback)"
    if action is Action.DRY_ACTIVATE:
        lines.append("  effect:   none: each host only says what an activation would change (no lock, checks or "
                     "watchdog)")
    elif reboot is not None:
        back = ("booted back into its previous generation" if policy.rollback
                else "LEFT AS IT IS (--no-rollback)")
        checks = ("after the reboot, on the new system (never before the host answers with a new boot id)"
                  if policy.checks else "SKIPPED (--no-checks); after the reboot it must still run the new system")
        lines += [f"  effect:   the boot entry is set (a host whose boot entry is not the new system is {rolled}), "
                  f"then each host is rebooted into it and has {reboot:g} s to answer running it",
                  f"  checks:   {checks}; a host that fails is {back}",
                  "  watchdog: none: nothing is activated without a reboot; a host that does not answer after it is "
                  "reported failed, its previous generation still in its boot menu"]
    elif action is Action.BOOT:
        lines += ["  effect:   only the boot entry is set: each host runs what it runs now until it reboots; a host "
                  f"whose boot entry is not the new system is {rolled}",
                  "  checks:   none: they would test the system that runs now, not the new one (after the reboot: "
                  "invoke verify)",
                  "  watchdog: none: nothing is activated now"]
    else:
        if action.boots_after_checks:
            gates = " and ".join(g for g, on in (("the watchdog's confirmation", policy.watchdog),
                                                 ("the checks", policy.checks)) if on) or "the activation"
            lines.append("  effect:   each host activates the new system with switch-to-configuration test; it "
                         f"becomes the boot entry (profile, boot loader) only after {gates}: a host restarted "
                         "before that boots what it booted before")
        checks = ("after each host's activation: its inventory checks, and no unit failing that did not before"
                  if policy.checks else "SKIPPED (--no-checks)")
        lines.append(f"  checks:   {checks}; a failed host is {rolled}")
        if not policy.watchdog:
            lines.append("  watchdog: OFF (--no-watchdog)")
        else:
            lines.append(f"  watchdog: a remote host reverts by itself unless it confirms within "
                         f"{policy.confirm_timeout:g} s" + unwatched_text(unwatched or {}))
    return "\n".join(lines)


def batch_lines(policy: Policy, names: Sequence[str], first: Sequence[str], changes_host: bool) -> list[str]:
    """The batches, host by host, and what a failing batch does."""
    groups = batches.split(names, policy.batches)
    if first and not groups:
        return [f"  batches:  {', '.join(first)} (the canary), all at once"]
    at_once = min(policy.parallel, max((len(g) for g in groups), default=1))
    ahead = f"{', '.join(first)} first (the canary), then " if first else ""
    if len(groups) <= 1:
        lines = [f"  batches:  {ahead}one ({', '.join(names) or 'no host'}), {at_once} at a time"]
    else:
        pause = f", {policy.pause:g} s apart (--pause)" if policy.pause else ""
        lines = [f"  batches:  {ahead}{len(groups)}, one after another{pause}, up to {at_once} host(s) at a time"]
        lines += [f"    {number}: {', '.join(group)}" for number, group in enumerate(groups, start=1)]
    if not changes_host or not groups or (len(groups) == 1 and not policy.rollback_batch_on_failure):
        return lines  # one batch: nothing after it to halt
    limit = halt_text(policy.max_fail_percentage, sorted({len(g) for g in groups}, reverse=True))
    if not limit:
        return [*lines, f"  halt:     never ({policy.max_fail_percentage:g}% of a batch may fail: "
                        "--max-fail-percentage)"]
    then = ["the batches after it do not start"] if len(groups) > 1 else []
    then.append("its healthy hosts are rolled back too (--rollback-batch-on-failure)"
                if policy.rollback_batch_on_failure else
                "its healthy hosts keep the new system (--rollback-batch-on-failure rolls them back too)")
    return [*lines, f"  halt:     {limit}: {'; '.join(then)}"]


def halt_text(percentage: float, sizes: Sequence[int]) -> str:
    """When a batch halts the run, in hosts ("" for never): "when more than 25% of a batch fails
    (failed hosts that halt it: 2 of 4, 1 of 1)"."""
    counts = [(batches.halting_count(size, percentage), size) for size in sizes]
    if all(needed > size for needed, size in counts):
        return ""
    if percentage == 0:
        return "when a host of a batch fails (--max-fail-percentage 0)"
    said = ", ".join(f"{needed} of {size}" for needed, size in counts if needed <= size)
    return f"when more than {percentage:g}% of a batch fails (failed hosts that halt it: {said})"


def unwatched_text(unwatched: Mapping[str, str]) -> str:
    reasons: dict[str, list[str]] = {}
    for name, why in unwatched.items():
        reasons.setdefault(why, []).append(name)
    return "".join(f"; not on {', '.join(names)} ({why})" for why, names in reasons.items())


def unwatched_hosts(changes: Sequence[Change], policy: Policy) -> dict[str, str]:
    """The hosts a `switch` or `test` activates without the watchdog, and why."""
    return {c.host.name: ("this machine" if c.host.is_local else "no systemd" if not c.before.systemd
                          else "it runs no system yet to go back to")
            for c in changes if c.action.changes_running_system and policy.watchdog
            and not watchdog.wanted(c.host, c.action, c.before, policy)}


# --- rollback -------------------------------------------------------------------------------


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
        steps_ = [chosen[c.host.name] for c in changes]
        echo(render(Plan(action, tuple(s.plan for s in steps_), None, (), req.reason), full_diff=req.full_diff))
        for note in (n for s in steps_ for n in s.notes):
            echo(f"  warning: {note}")
        echo(describe_policy(req.policy, [c.host.name for c in changes], action,
                             unwatched=unwatched_hosts(changes, req.policy)))

    def question(asking: Sequence[Change]) -> str:
        return (generations.question(chosen[asking[0].host.name]) if len(asking) == 1
                else f"Roll back {', '.join(c.host.name for c in asking)} ({len(asking)} hosts)?")

    operation = Operation(
        verb="rollback", action=action, choose=choose, host_of=lambda c: c.host, show=show, question=question,
        asks=lambda h: not h.is_local, left_as_is=pipeline.unchanged,
        run=lambda go: run_changes(go, Context(runner, req.policy, tools.progress, "rollback", stop=tools.ledger.stop),
                                   journal))
    return run_operation(operation, req.hosts, req.policy, tools, journal)


# --- approval, batches, report --------------------------------------------------------------


def ask(changes: Sequence[Change], asking: Sequence[Change], question: str, prompter: Prompter, journal: Journal,
        verb: str, preselect: bool = False) -> tuple[list[Change], tuple[HostResult, ...]]:
    """`selection.ask` for a deploy's changes: a host left as it is journalled when its action
    would have changed it."""
    answer = prompter.approve(question, [c.host.name for c in asking], preselect=preselect) if asking else NO
    return answered(changes, asking, answer, journal, verb)


def answered(changes: Sequence[Change], asking: Sequence[Change], answer: Approval, journal: Journal,
             verb: str) -> tuple[list[Change], tuple[HostResult, ...]]:
    def journalled(change: Change, result: HostResult) -> None:
        if change.action.changes_host:
            journal.write_result(change.host, verb, result)

    return selection.answered(changes, asking, answer, host_of=lambda c: c.host, left_as_is=pipeline.unchanged,
                              journal=journalled)


def declined(results: Sequence[HostResult]) -> bool:
    """A no at the question (not a subset chosen): recipes stop there."""
    return any(r.outcome is Outcome.DECLINED for r in results)


def run_changes(changes: Sequence[Change], ctx: Context, journal: Journal, *,
                hold: bool = False) -> tuple[tuple[HostResult, ...], bool]:
    """Every change through the pipeline, in the policy's batches. Returns the results and
    whether Ctrl-C stopped the run. One record per host: at once, under its lock; with
    --rollback-batch-on-failure an ok waits for its batch's end (it may yet go back); with
    `hold`, the caller journals the oks."""
    held = ctx.policy.rollback_batch_on_failure or hold
    journalled = replace(ctx, journal=journal, hold_ok=held)

    def work(change: Change) -> HostResult:
        try:
            result = pipeline.apply(change, journalled if change.action.changes_host else ctx)
        except Exception as exc:  # an unforeseen error must not lose the host's record
            result = pipeline.unknown(change, Outcome.FAILED, f"nixtasks stopped on this host with an unexpected "
                                      f"error ({exc!r}); check it by hand", ctx.runner)
            if change.action.changes_host:
                journal.write_result(change.host, ctx.verb, result)
        if held and result.outcome is Outcome.OK and change.action.changes_host:
            journal.hold(change.host, ctx.verb, result)
        ctx.progress.done(result)
        return result

    def settle(batch: Sequence[Change], results: Sequence[HostResult], halted: bool) -> list[HostResult]:
        """The batch's end: when it halted, its healthy hosts go back too; then each ok that
        waited is journalled, once, as it ends (ok, or rolled back with its batch)."""
        failed = [r for r in results if r.failed]
        out = []
        for change, result in zip(batch, results):
            if result.outcome is not Outcome.OK or not change.action.changes_host:
                out.append(result)
                continue
            if halted and ctx.policy.rollback_batch_on_failure:
                back = roll_back_one(change, ctx, batch_failure(failed),
                                     why=f"its batch failed ({', '.join(r.host for r in failed)})")
                result = with_its_batch(result, back)
                ctx.progress.done(result)
            if result.outcome is not Outcome.OK or not hold:
                journal.write_result(change.host, ctx.verb, result)
            out.append(result)
        return out

    results, interrupted = run_batches(changes, work, ctx.policy, ctx.runner.echo, settle if held else None,
                                       lambda c, why: pipeline.unchanged(c, Outcome.NOT_STARTED, why), ctx.stop)
    for change, result in zip(changes, results):
        if result.outcome is Outcome.NOT_STARTED and change.action.changes_host:
            journal.write_result(change.host, ctx.verb, result)
    return tuple(results), interrupted


def batch_failure(failed: Sequence[HostResult]) -> str:
    """Why a healthy host goes back with its batch: which hosts failed, and how the first did."""
    first = failed[0].message.split("; ")[0] if failed else ""
    names = ", ".join(r.host for r in failed)
    return f"with its batch: {names} failed" + (f" ({failed[0].outcome.value}: {first})" if first else "")


def with_its_batch(went: HostResult, back: HostResult) -> HostResult:
    """One result for a host that went out fine, then back (with its batch, or after a canary's
    soak): the rollback's outcome and what the host runs after it, with the whole way's stages
    and the system that was tried (it was activated)."""
    stages = went.stages + tuple(s for s in back.stages if s[0] is not Stage.COPY)
    return replace(back, stages=stages, duration=round(went.duration + back.duration, 3),
                   tried_system=went.tried_system, previous_system=went.previous_system,
                   previous_generation=went.previous_generation)


def roll_back_one(change: Change, ctx: Context, failure: str, why: str = "") -> HostResult:
    """A host that went out fine goes back anyway (its batch or its canary soak failed): under
    its lock, to what it ran before."""
    clock = pipeline.Clock(change.host.name, ctx.progress)
    with lock.held(change.host, ctx.verb, ctx.policy.lock_timeout, ctx.runner,
                   systemd=change.before.systemd) as lease:
        refused = lease.refused
        if refused:  # it runs the new system still, or not known: read again
            return pipeline.outcome_result(change, Outcome.FAILED, clock,
                                           f"{failure}; could not roll it back: {refused}",
                                           read_facts(change.host, ctx.runner))
        with clock.stage(Stage.ROLLBACK):
            back = pipeline.roll_back(change, ctx, clock, failure, why=why)
        return replace(back, stages=(*back.stages, clock.stages[-1]))  # timed once it is over


def run_batches(items: Sequence[T], work: Callable[[T], HostResult], policy: Policy, echo: Echo,
                settle: Callable[[Sequence[T], Sequence[HostResult], bool], list[HostResult]] | None,
                left_as_is: Callable[[T, str], HostResult],
                stop: threading.Event | None = None) -> tuple[list[HostResult], bool]:
    """Batches one after another, the hosts of a batch in parallel (at most `policy.parallel`).
    Ctrl-C: nothing new starts, running hosts finish (with their checks and rollback). `settle`
    (given: with --rollback-batch-on-failure) ends each batch, told whether it halted the run;
    Ctrl-C does not stop it. `left_as_is` makes the result of a host that does not start. The
    batches run beside the main thread, which only waits: a Ctrl-C lands in that wait (and is
    noted in `stop`, the run's flag), never between two steps."""
    stop = stop or threading.Event()

    def guarded(item: T) -> HostResult:
        return left_as_is(item, BEFORE_IT_STARTED) if stop.is_set() else work(item)

    def run() -> list[HostResult]:
        halted = ""
        results: list[HostResult] = []
        with ThreadPoolExecutor(max_workers=max(1, policy.parallel)) as pool:
            for number, batch in enumerate(batches.split(items, policy.batches), start=1):
                if not stop.is_set() and not halted and number > 1 and policy.pause:
                    echo(f"pausing {policy.pause:g} s before batch {number}")
                    stop.wait(policy.pause)
                if stop.is_set() or halted:
                    results += [left_as_is(i, BEFORE_IT_STARTED if stop.is_set() else halted) for i in batch]
                    continue
                done = [f.result() for f in [pool.submit(guarded, item) for item in batch]]
                failed = sum(1 for r in done if r.failed)
                if batches.halts(failed, len(batch), policy.max_fail_percentage):
                    halted = (f"not started: batch {number} failed ({failed} of {len(batch)} host(s), more than "
                              f"{policy.max_fail_percentage:g}%)")
                    echo(f"halting: {failed} of {len(batch)} host(s) of batch {number} failed")
                if settle is not None:
                    done = settle(batch, done, bool(halted))
                results += done
        return results

    results = shielded(run, stop, echo)
    return results, stop.is_set()


def again(action: Action | str, skipped: Sequence[str]) -> str:
    """What a host skipped as unreachable still needs, once it answers."""
    them = "it" if len(skipped) == 1 else "them"
    if action == "gc":
        return (f"collect {'its' if len(skipped) == 1 else 'their'} garbage once reachable: invoke gc --host "
                f"{','.join(skipped)}")
    if action == "rollback":
        return f"roll {them} back once reachable: invoke rollback --host {','.join(skipped)}"
    return f"deploy {them} once reachable"


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


def summary(report: Report) -> str:
    counts: dict[str, int] = {}
    for r in report.results:
        counts[r.outcome.value] = counts.get(r.outcome.value, 0) + 1
    return ", ".join(f"{n} {outcome}" for outcome, n in counts.items())



# --- gc -------------------------------------------------------------------------------------


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

    operation = Operation(verb="gc", action="gc", choose=choose, host_of=lambda s: s.host, show=show,
                          question=question, asks=lambda h: True, left_as_is=left_as_is, run=run,
                          refuse=not runner.dry_run)
    return run_operation(operation, hosts, policy, tools, journal)


# --- one flow for every host operation ------------------------------------------------------


@dataclass(frozen=True)
class Operation(Generic[S]):
    """What a host operation says that is its own; `run_operation` gives it the rest of the flow
    (deploys go through the same selection steps, split by the recipes: `prepare`, `approve`)."""

    verb: str  # in the journals, refusals and the report
    action: Action | str  # of a host skipped as unreachable
    choose: Callable[[Host, Facts], S]  # each admitted host's step, read before anything changes anywhere
    host_of: Callable[[S], Host]
    show: Callable[[Sequence[S]], None]  # the plan
    question: Callable[[Sequence[S]], str]  # for the steps of hosts that ask
    asks: Callable[[Host], bool]  # whether a host needs the approval
    left_as_is: Callable[[S, Outcome, str], HostResult]  # declined, not selected, not started
    run: Callable[[Sequence[S]], tuple[Sequence[HostResult], bool]]  # the approved, in batches; interrupted?
    refuse: bool = True  # refuse without a terminal (a gc dry run only prints)


def run_operation(op: Operation[S], hosts: Sequence[Host], policy: Policy, tools: Tools, journal: Journal) -> Report:
    """Refused without a terminal, every host read and admitted (unreachable: named, or skipped
    and journalled; a sudo wanting a password: stopped), each host's step chosen, one plan, one
    approval, the approved through the batches, one report."""
    runner = tools.runner
    tools.ledger.begin(hosts, op.verb, journal)
    if op.refuse:
        selection.refuse_without_terminal(op.verb, [h for h in hosts if op.asks(h)], tools.prompter, journal)
    facts = selection.read_hosts(hosts, runner)
    going, skipped = selection.admit(hosts, facts, policy, op.action, op.verb, journal, tools.echo)
    with ThreadPoolExecutor(max_workers=at_once(len(going), WORK_AT_ONCE)) as pool:
        # Every host's step is chosen before anything changes anywhere.
        chosen = list(pool.map(lambda hf: op.choose(*hf), going))
    op.show(chosen)
    tools.ledger.plan(journal, [s for s in chosen if isinstance(s, Change)])
    asking = [s for s in chosen if op.asks(op.host_of(s))]
    go, left = selection.ask(chosen, asking, op.question(asking) if asking else "", tools.prompter,
                             host_of=op.host_of, left_as_is=op.left_as_is,
                             journal=lambda s, r: journal.write_result(op.host_of(s), op.verb, r))
    results, interrupted = op.run(go)
    for item, result in zip(go, results):  # one record per host: those Ctrl-C kept from starting too
        if result.outcome is Outcome.NOT_STARTED and op.host_of(item).name not in journal.settled:
            journal.write_result(op.host_of(item), op.verb, result)
    return finish(Report(op.verb, skipped + left + tuple(results), interrupted=interrupted), tools.echo)


# --- steps the recipes combine --------------------------------------------------------------


def not_started(changes: Sequence[Change], why: str, journal: Journal, verb: str) -> tuple[HostResult, ...]:
    """Hosts a recipe stops before (a failed canary): reported and journalled as not started."""
    results = tuple(pipeline.unchanged(c, Outcome.NOT_STARTED, why) for c in changes)
    for change, result in zip(changes, results):
        journal.write_result(change.host, verb, result)
    return results


def soak(prep: Prepared, changes: Sequence[Change], went: Sequence[HostResult], seconds: float,
         tools: Tools, verb: str) -> tuple[tuple[HostResult, ...], bool]:
    """Keep checking hosts that went out (`went`: their oks, not journalled yet) for `seconds`;
    if one turns unhealthy, every one of them is rolled back. Each host's one record says how
    it ended. Returns the rollbacks (none when they stayed healthy), and whether Ctrl-C ended
    the soak (the hosts stay as they are)."""
    tools.echo(f"soak: checking {', '.join(c.host.name for c in changes)} for {seconds:g} s")
    stop = tools.ledger.stop
    found = shielded(lambda: health.soak([(c.host, c.before) for c in changes], seconds, tools.runner, tools.echo,
                                         stop=stop), stop, tools.echo)
    if not found:
        tools.echo("soak: interrupted" if stop.is_set() else "soak: healthy all along")
        journal_held(prep, changes, went, verb)
        return (), stop.is_set()
    ctx = Context(tools.runner, prep.request.policy, tools.progress, verb, stop=stop)
    why = "; ".join(f"{host}: {problem}" for host, problem in found.items())

    def back() -> tuple[HostResult, ...]:  # each journalled as it ends, within the shield
        backs = []
        for change, ok in zip(changes, went):
            backs.append(with_its_batch(ok, roll_back_one(change, ctx, f"unhealthy during the soak ({why})")))
            prep.journal.write_result(change.host, verb, backs[-1])
        return tuple(backs)

    return shielded(back, stop, tools.echo), stop.is_set()


def reboot_into_new(prep: Prepared, changes: Sequence[Change], timeout: float,
                    tools: Tools, verb: str) -> tuple[tuple[HostResult, ...], bool]:
    """Hosts whose boot entry is the new system: rebooted, waited for, checked; one that fails is
    booted back into its old entry. Returns the results, and whether Ctrl-C came meanwhile (the
    reboots under way were let finish)."""
    stop = tools.ledger.stop

    def rebooted() -> tuple[HostResult, ...]:  # journalled within the shield: a Ctrl-C loses no record
        ctx = Context(tools.runner, prep.request.policy, tools.progress, verb, stop=stop)
        results = reboot.reboot_into(changes, ctx, timeout)
        for change, result in zip(changes, results):
            tools.progress.done(result)
            prep.journal.write_result(change.host, verb, result)
        return tuple(results)

    return shielded(rebooted, stop, tools.echo), stop.is_set()


def follow_journals(hosts: Sequence[Host], seconds: float, tools: Tools) -> None:
    tools.echo(f"following the warnings and errors of {', '.join(h.name for h in hosts)} for {seconds:g} s "
               "(Ctrl-C ends it)")
    follow.follow(hosts, seconds, tools.runner)


def switch_traffic(template: str, to: str, hosts: Sequence[str], tools: Tools) -> None:
    hooks.switch_traffic(template, to, hosts, tools.runner)
