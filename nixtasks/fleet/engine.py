"""The fleet engine: deploys, of one host or many, through the one flow (fleet/flow.py), and
the steps the recipes combine.

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
from typing import TypeVar

from ..actions import cache, closures, secrets
from ..actions.journal import Journal, deployer_journal_path
from ..actions.plan import approval_question, fleet_question, needs_approval, render, render_git
from ..errors import DeployFailed
from ..host import gitstate
from ..host.facts import Facts, read_facts
from ..host.prompts import NO, Approval, Prompter
from ..models import (
    READS_AT_ONCE,
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
from . import batches, follow, health, hooks, pipeline, reboot, selection, watchdog
from .flow import Choice, Course, Readings, Tools, carry_out, choose_steps, finish, stopped
from .interrupts import BEFORE_IT_STARTED, shielded
from .pipeline import Change, Context

T = TypeVar("T")


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
    return carry_out(course(prep, tools), prep.changes, prep.skipped, tools, prep.journal)


def course(prep: Prepared, tools: Tools) -> Course[Change]:
    """A deploy's part of the one flow after its plan is made (recipes take these steps one by
    one: `show_plan`, `approve`, `activate`, `report`)."""
    return Course(verb=prep.request.action.value, host_of=lambda c: c.host, show=lambda _: show_plan(prep, tools),
                  asks=lambda c: needs_approval(c.action, c.host, prep.git),
                  question=lambda asking: default_question(prep, prep.changes, asking),
                  left_as_is=pipeline.unchanged, run=lambda go: activate(prep, go, tools),
                  report=lambda _left_out, ran, interrupted: report(prep, ran, interrupted),
                  records=lambda c: c.action.changes_host)


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


@dataclass
class Making:
    """What a deploy learns while it chooses its hosts' steps (`prepare`)."""

    builds: closures.Builds = field(default_factory=lambda: closures.Builds({}, {}))
    build_seconds: float = 0.0
    warnings: tuple[str, ...] = ()
    pushed: cache.Pushed | None = None
    deliveries: dict[str, Delivery] = field(default_factory=dict)  # by host: how its closure got there


def prepare(req: DeployRequest, tools: Tools, systems: Mapping[str, str] | None = None,
            git: GitState | None = None, *, as_root: bool = True, report_as: str | None = None) -> Prepared:
    """Everything before the plan, by the one flow (`flow.choose_steps`): the refusal without a
    terminal, the git check, one evaluation and build (or, with `systems`, the store paths of a
    staged plan: no evaluation), every host probed while that runs, unreachable hosts named,
    and (`as_root`: what follows runs as root there; staging does not) hosts whose sudo wants a
    password not given; then the push to the cache, the NixOS and space checks, copies and
    closure diffs in parallel. Changes nothing a host runs or boots. `git`: the state of the
    commit `req.flake` names (update-deploy's, before it is on the branch), checked already.
    `report_as`: the recipe's name for its report and journal (blue-green, emergency)."""
    runner, echo = tools.runner, tools.echo
    warned = len(runner.warnings)
    # A key that cannot be used is refused before anything is built (checked, never shown).
    key = cache.read_key(req.cache) if req.cache is not None and not runner.dry_run else None
    git = git or read_git(req, tools)
    journal = Journal(runner, tools.journal_path or deployer_journal_path(), git, req.reason, echo,
                      gitstate.repository(runner, req.flake))
    making = Making()

    def read(hosts: Sequence[Host]) -> Readings:
        """The hosts are asked what they run while the systems build: both take a while."""
        interrupted = False
        with ThreadPoolExecutor(max_workers=at_once(len(hosts), req.policy.widened(READS_AT_ONCE))) as pool:
            probes = [pool.submit(read_facts, h, runner, sudo_probe=as_root) for h in hosts]
            started = time.monotonic()
            try:
                if systems is None:
                    making.builds = closures.build(req.build_request(), runner, echo,
                                                   keep_going=req.policy.keep_going)
            except KeyboardInterrupt:  # the build is stopped (the runner stopped it); no host was touched
                interrupted = True
            making.build_seconds = round(time.monotonic() - started, 3)
            facts = [p.result() for p in probes]
        making.warnings = tuple(runner.warnings[warned:])  # the build's (a host's fetch warns about its own)
        journal.know(hosts, (f.machine_id for f in facts))
        if interrupted:
            raise stopped(tools, INTERRUPTED_BUILD)
        return Readings(facts, build_failures(req, making.builds.failed, journal, making.build_seconds, echo))

    def push(hosts: Sequence[Host]) -> None:
        """The release to the cache once, before any host takes it: a failed push stops here. (A
        staged plan's systems are on their hosts already: nothing goes through the cache.)"""
        if req.cache is None or key is None or systems is not None:
            return
        through = closures.unique(b.path for b in (making.builds.built[closures.key(h)] for h in hosts)
                                  if b.at.is_local)
        if through:
            making.pushed = cache.push(req.cache, through, key, runner, echo)

    def one(host: Host, before: Facts) -> Change:
        """Checked (a NixOS closure, room for it) and copied, with its closure diff."""
        built = (making.builds.built[closures.key(host)] if systems is None
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
            making.deliveries[host.name] = delivery
        if diff is None:
            diff = closures.diff_on_host(host, before.running, built, runner)
        return Change(host, req.action, built.path, before, diff=diff, copy_seconds=seconds)

    choice = Choice(verb=req.action.value, action=req.action, reported_as=report_as or req.action,
                    asks=lambda h: needs_approval(req.action, h, git), choose=one, read=read, admitted=push)
    changes, left_out = choose_steps(choice, req.hosts, req.policy, tools, journal)
    deliveries, pushed = making.deliveries, making.pushed
    sent = (pushed.bytes if pushed else 0) + sum(d.bytes for d in deliveries.values() if d.source == "deployer")
    return Prepared(req, git, journal, tuple(changes), left_out, making.build_seconds, making.warnings,
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
    return asking, default_question(prep, changes, asking) if question is None else question


def default_question(prep: Prepared, changes: Sequence[Change], asking: Sequence[Change]) -> str:
    if len(changes) == 1:
        return approval_question(HostPlan(changes[0].host, changes[0].action, changes[0].system, None))
    return fleet_question(prep.request.action, [c.host.name for c in asking])


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
                back = pipeline.roll_back_locked(change, ctx, batch_failure(failed),
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
            back = pipeline.roll_back_locked(change, ctx, f"unhealthy during the soak ({why})")
            backs.append(with_its_batch(ok, back))
            prep.journal.write_result(change.host, verb, backs[-1])
        return tuple(backs)

    return shielded(back, stop, tools.echo), stop.is_set()


def reboot_into_new(prep: Prepared, changes: Sequence[Change], timeout: float, tools: Tools, verb: str, *,
                    hold: bool = False) -> tuple[tuple[HostResult, ...], bool]:
    """Hosts whose boot entry is the new system: rebooted, waited for, checked; one that fails is
    booted back into its old entry. Returns the results, and whether Ctrl-C came meanwhile (the
    reboots under way were let finish). `hold`: an ok is not journalled yet (a question about it
    follows: blue-green's traffic); the caller journals it once it is final."""
    stop = tools.ledger.stop

    def rebooted() -> tuple[HostResult, ...]:  # journalled within the shield: a Ctrl-C loses no record
        ctx = Context(tools.runner, prep.request.policy, tools.progress, verb, stop=stop)
        results = reboot.reboot_into(changes, ctx, timeout)
        for change, result in zip(changes, results):
            tools.progress.done(result)
            if hold and result.outcome is Outcome.OK:
                prep.journal.hold(change.host, verb, result)
            else:
                prep.journal.write_result(change.host, verb, result)
        return tuple(results)

    return shielded(rebooted, stop, tools.echo), stop.is_set()


def follow_journals(hosts: Sequence[Host], seconds: float, tools: Tools) -> None:
    tools.echo(f"following the warnings and errors of {', '.join(h.name for h in hosts)} for {seconds:g} s "
               "(Ctrl-C ends it)")
    follow.follow(hosts, seconds, tools.runner)


def switch_traffic(template: str, to: str, hosts: Sequence[str], tools: Tools) -> None:
    hooks.switch_traffic(template, to, hosts, tools.runner)
