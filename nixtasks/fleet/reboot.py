"""Reboots as a fleet step (blue-green): reboot, wait until the host answers with a new boot
id and runs what its boot entry holds, run its checks; on failure, set the boot entry back
and reboot once more. Checks never run before the boot id changed (morph's users learned
that health checks can pass before a reboot has happened). The hosts go as a group: when one
fails, the others are set back too (`set_back` before the reboot, `reboot_into` after it), so
that a failed release never comes back at a host's next boot. The deploy lock is kept across
the reboots by a hold on the host's disk (fleet/lock.py), from the deploy's first step
through the checks after the reboot."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from ..actions.plan import store_name
from ..host import commands
from ..host.facts import Facts, read_facts
from ..host.runner import Runner
from ..models import Action, Host, HostResult, Outcome, Policy, Stage, at_once
from . import health, lock
from .pipeline import Change, Clock, Context, outcome_result, revert, roll_back_locked, unchanged

POLL = 1.0


def current_boot_id(host: Host, runner: Runner) -> str:
    """"" when it cannot be read: then any boot id that answers later counts as new."""
    result = runner.run(commands.boot_id(), host.target, check=False)
    return result.stdout.strip() if result.ok else ""


def reboot_and_wait(host: Host, runner: Runner, timeout: float) -> tuple[Facts, str]:
    """Reboot, then wait for a new boot id and a booted systemd. Returns the host's facts, and
    a problem ("" when it came back)."""
    before = current_boot_id(host, runner)
    runner.run(commands.reboot(), host.target, label=host.name, check=False)  # the connection may drop
    deadline = time.monotonic() + timeout
    facts = Facts(reachable=False, error="not asked yet")
    while time.monotonic() < deadline:
        time.sleep(POLL)
        answer = runner.run(commands.boot_id(), host.target, check=False, fresh=True)
        if not answer.ok or answer.stdout.strip() in ("", before):
            continue
        facts = read_facts(host, runner, fresh=True)
        if facts.reachable and facts.state not in ("initializing", "starting"):
            return facts, ""
    if facts.reachable:
        return facts, f"rebooted, but systemd is still {facts.state or 'not running'} after {timeout:g} s"
    return facts, f"did not answer with a new boot id within {timeout:g} s of its reboot"


def reboot_into(changes: Sequence[Change], ctx: Context, timeout: float) -> tuple[HostResult, ...]:
    """Every host (booted into its new system by a `boot` deploy) rebooted in parallel and
    checked; a host that fails gets its old boot entry back and is rebooted into it, and so
    does every other host of the group (unless --no-rollback): the release failed, and none of
    them is to run or boot it. The hosts are let go once the group is done."""
    def one(change: Change) -> HostResult:
        try:
            return reboot_kept(change, ctx, timeout)
        except Exception as exc:  # one host's surprise must not lose the others' records
            return outcome_result(change, Outcome.FAILED, None, f"the reboot step stopped with an unexpected error "
                                  f"({exc!r}); what the host runs and boots is not known: check it by hand")

    def back_with_the_group(change: Change, went: HostResult, why: str) -> HostResult:
        try:
            return boot_back_with_group(change, went, ctx, why, timeout)
        except Exception as exc:
            return outcome_result(change, Outcome.FAILED, None, f"{why}; booting it back stopped with an unexpected "
                                  f"error ({exc!r}); what the host runs and boots is not known: check it by hand")

    try:
        with ThreadPoolExecutor(max_workers=at_once(len(changes), ctx.policy.parallel)) as pool:
            results = list(pool.map(one, changes))
            failed = [r for r in results if r.failed]
            if failed and ctx.policy.rollback:
                why = f"rebooted into the new system, but {group_failure(failed)}"
                results = list(pool.map(lambda cr: back_with_the_group(cr[0], cr[1], why)
                                        if cr[1].outcome is Outcome.OK else cr[1], zip(changes, results)))
        return tuple(results)
    finally:
        let_go(changes, ctx.runner, ctx.policy, ctx.verb)


WITH_THE_GROUP = "its group goes as a whole and"


def group_failure(failed: Sequence[HostResult]) -> str:
    """Why a host that went fine goes back with its group: which hosts failed, and how the first did."""
    first = failed[0]
    names = ", ".join(r.host for r in failed)
    return (f"{WITH_THE_GROUP} {names} failed ({first.host}: {first.outcome.value}: "
            f"{first.message.split('; ')[0]})")


def with_the_group(result: HostResult) -> bool:
    """Whether a host went fine and only went back (or failed to) because another host of its group failed."""
    return WITH_THE_GROUP in result.message


def joined(went: HostResult, back: HostResult) -> HostResult:
    """One result for a host that went fine, then back with its group: the way back's outcome and
    what the host runs and boots after it, with the whole way's stages and the system tried."""
    return replace(back, stages=went.stages + back.stages, duration=round(went.duration + back.duration, 3),
                   tried_system=went.tried_system, previous_system=went.previous_system,
                   previous_generation=went.previous_generation)


def set_back(changes: Sequence[Change], went: Sequence[HostResult], ctx: Context,
             failed: Sequence[HostResult]) -> tuple[HostResult, ...]:
    """Before any reboot, another host of the group failed: each host whose `boot` went fine
    (`went`) gets its previous generation back as its boot entry (the profile's generation and
    `switch-to-configuration boot`), under its lock, which its hold admits. It never stopped
    running its old system; now it boots it again too. Returns one result per host."""
    why = f"its boot entry was set to the new system, but {group_failure(failed)}"

    def one(change: Change, result: HostResult) -> HostResult:
        before = change.before
        undo = f"invoke rollback --host {change.host.name} --generation {before.generation}"
        try:
            back = roll_back_locked(change, ctx, why, refused=lambda refused: (
                f"{why}; it could not be set back ({refused}): it boots the new system at its next boot; "
                f"undo: {undo}"))
        except Exception as exc:  # the others' results must not be lost
            return outcome_result(change, Outcome.FAILED, Clock(change.host.name, ctx.progress),
                                  f"{why}; setting it back stopped with an unexpected error ({exc!r}); check it "
                                  f"by hand, or: {undo}")
        if back.outcome is Outcome.ROLLED_BACK:
            back = replace(back, message=f"{why}; its boot entry is set back to generation {before.generation}: it "
                                         f"runs and boots {store_name(before.boot_path)} as before")
        return joined(result, back)

    with ThreadPoolExecutor(max_workers=at_once(len(changes), ctx.policy.parallel)) as pool:
        return tuple(pool.map(one, changes, went))


def keep_for_reboot(changes: Sequence[Change], runner: Runner, policy: Policy,
                    verb: str) -> tuple[list[Change], list[HostResult]]:
    """Before a deploy that reboots its hosts changes anything: each host kept for this run
    (`lock.keep`: a hold on its disk that only this run's takes pass) from its first step
    through the checks after its reboot. Returns the hosts kept, and those that could not be
    as results (locked, or failed: nothing changed)."""
    def one(change: Change) -> str | None:
        if runner.dry_run or not change.before.systemd:
            return None
        return lock.keep(change.host, verb, policy.lock_timeout, runner)

    with ThreadPoolExecutor(max_workers=at_once(len(changes), policy.parallel)) as pool:
        refusals = list(pool.map(one, changes))
    kept, refused = [], []
    for change, why in zip(changes, refusals):
        if why is None:
            kept.append(change)
        elif lock.by_another(why):
            refused.append(unchanged(change, Outcome.LOCKED, f"{why}; nothing changed. If that deployer is gone: "
                                     f"invoke unlock --host {change.host.name}"))
        else:
            refused.append(unchanged(change, Outcome.FAILED, f"{why}; nothing changed"))
    return kept, refused


def let_go(changes: Sequence[Change], runner: Runner, policy: Policy, verb: str) -> None:
    """The holds of `keep_for_reboot` removed (with any lock of ours): a host that never got
    to its reboot (a failed activation, Ctrl-C) is not kept until the hold expires."""
    hosts = [c.host for c in changes if c.before.systemd and not runner.dry_run]
    with ThreadPoolExecutor(max_workers=at_once(len(hosts), policy.parallel)) as pool:
        list(pool.map(lambda h: lock.let_go(h, verb, policy.lock_timeout, runner), hosts))


def reboot_one(change: Change, ctx: Context, timeout: float) -> HostResult:
    """`reboot_kept`, then the host let go, whatever happened."""
    try:
        return reboot_kept(change, ctx, timeout)
    finally:
        lock.let_go(change.host, ctx.verb, ctx.policy.lock_timeout, ctx.runner)


def reboot_kept(change: Change, ctx: Context, timeout: float) -> HostResult:
    """Under the host's lock and its hold (`keep_for_reboot`): the hold is renewed and outlives
    the reboot, which ends the lock unit; once the host is back the lock is taken again, for its
    checks and, if need be, the boot back. The caller lets both go (`let_go`)."""
    host, runner, ttl = change.host, ctx.runner, ctx.policy.lock_timeout
    clock = Clock(host.name, ctx.progress)
    refused = lock.renew_hold(host, ctx.verb, ttl, runner)
    if refused:
        return outcome_result(change, Outcome.LOCKED if lock.by_another(refused) else Outcome.FAILED, clock,
                              f"{refused}; not rebooted (it boots the new system at its next boot)")
    with clock.stage(Stage.REBOOT):
        facts, problem = reboot_and_wait(host, runner, timeout)
    if problem:  # no lock to take on a host that did not come back
        return after_reboot(change, ctx, clock, facts, problem, timeout)
    refused = lock.retake(host, ctx.verb, ttl, runner)
    if refused:
        return outcome_result(change, Outcome.LOCKED if lock.by_another(refused) else Outcome.FAILED, clock,
                              f"rebooted into the new system, but {refused} before its checks ran", facts)
    return after_reboot(change, ctx, clock, facts, problem, timeout)


def boot_back_with_group(change: Change, went: HostResult, ctx: Context, why: str, timeout: float) -> HostResult:
    """A host that came back healthy on the new system while another of its group failed: its
    hold renewed (it outlives one more reboot), its old boot entry back, and a reboot into it."""
    clock = Clock(change.host.name, ctx.progress)
    refused = lock.renew_hold(change.host, ctx.verb, ctx.policy.lock_timeout, ctx.runner)
    if refused:
        generation = change.before.generation
        return joined(went, outcome_result(
            change, Outcome.FAILED, clock, f"{why}; it could not be booted back ({refused}): it runs and boots the "
            f"new system; undo: invoke rollback --host {change.host.name} --generation {generation}",
            read_facts(change.host, ctx.runner)))
    with clock.stage(Stage.ROLLBACK):
        return joined(went, boot_back(change, ctx, clock, why, timeout))


def after_reboot(change: Change, ctx: Context, clock: Clock, facts: Facts, problem: str,
                 timeout: float) -> HostResult:
    if not problem and facts.running != change.system:
        problem = f"after its reboot it runs {facts.running or 'nothing'}, not {change.system}"
    if not problem and ctx.policy.checks:
        with clock.stage(Stage.CHECKS):
            found = health.problems(change.host, change.before, ctx.runner)
        problem = found[0] if found else ""
    if not problem:
        return outcome_result(change, Outcome.OK, clock, "rebooted into the new system; its checks pass", facts)
    if not ctx.policy.rollback:
        return outcome_result(change, Outcome.FAILED, clock, f"{problem}; LEFT AS IT IS (--no-rollback)", facts)
    if not facts.reachable:
        return outcome_result(change, Outcome.FAILED, clock, f"{problem}; it cannot be booted back from here: "
                              "check the host by hand (its old generation is still in the boot menu)", facts)
    with clock.stage(Stage.ROLLBACK):
        return boot_back(change, ctx, clock, problem, timeout)


def boot_back(change: Change, ctx: Context, clock: Clock, problem: str, timeout: float) -> HostResult:
    """The old boot entry back, and a reboot into it."""
    host, runner, before = change.host, ctx.runner, change.before
    runner.echo(f"[{host.name}] {problem}: setting the boot entry back to generation {before.generation} and "
                "rebooting into it")
    broken = revert(change, Action.BOOT, runner)
    if broken:
        return outcome_result(change, Outcome.FAILED, clock, f"{problem}; setting the boot entry back failed "
                              f"({broken}); check the host by hand")
    facts, again = reboot_and_wait(host, runner, timeout)
    if again or facts.running != before.boot_path:
        return outcome_result(change, Outcome.FAILED, clock, f"{problem}; after booting the old entry: "
                              f"{again or 'it runs ' + (facts.running or 'nothing')}; check the host by hand", facts)
    return outcome_result(change, Outcome.ROLLED_BACK, clock, f"{problem}; booted back into generation "
                          f"{before.generation}", facts)
