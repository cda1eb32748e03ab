"""One host's way through a deploy or a rollback, after the approval: take the lock, arm
the watchdog, activate, confirm over a fresh connection, run the health checks, then (a
switch) make it the boot entry; roll back on failure, release the lock. A switch is
activated with `test` and sets the profile only once confirmed and checked, so a host that
loses power before cannot boot a system nobody confirmed. Every outcome is confirmed by
reading the host again before it is reported."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from ..actions.journal import Journal, Record
from ..actions.plan import store_name
from ..errors import CommandFailed, NixtasksError
from ..host import commands
from ..host.facts import Facts, facts_command, parse_facts, read_facts
from ..host.runner import Result, Runner
from ..models import SYSTEM_PROFILE, Action, Command, Host, HostResult, Outcome, Policy, Stage
from . import health, lock, watchdog
from .progress import Progress


@dataclass(frozen=True)
class Change:
    """One host's part of a deploy or rollback, decided before anything changes."""

    host: Host
    action: Action
    system: str  # what the host runs (or boots, for boot) afterwards
    before: Facts
    generation: int | None = None  # a rollback: switch the profile to this existing generation
    diff: str = ""
    copy_seconds: float = 0.0
    # What the host runs when its turn comes, if not `before.running`: an emergency's switch
    # follows its own test activation, and still rolls back to what ran before that.
    expect_running: str | None = None

    @property
    def activation_path(self) -> str:
        """What writes the boot entry: for a rollback the profile (switched to its generation), as
        `nixos-rebuild --rollback` does."""
        return SYSTEM_PROFILE if self.generation is not None else self.system


@dataclass(frozen=True)
class Context:
    runner: Runner
    policy: Policy
    progress: Progress
    verb: str  # what the journal and the lock call it: switch, boot, test, rollback
    journal: Journal | None = None  # given: `apply` journals each host's result itself
    # An ok is not the end yet (--rollback-batch-on-failure, a canary's soak: the host may still
    # go back): `apply` journals every other result, and the caller the ok, once it is final.
    hold_ok: bool = False
    stop: threading.Event = field(default_factory=threading.Event)  # the run's Ctrl-C (interrupts.Ledger)


@dataclass
class Clock:
    """Seconds per stage of one host, reported in the JSON report."""

    host: str
    progress: Progress
    started: float = field(default_factory=time.monotonic)
    stages: list[tuple[Stage, float]] = field(default_factory=list)

    @contextlib.contextmanager
    def stage(self, stage: Stage) -> Iterator[None]:
        self.progress.stage(self.host, stage)
        start = time.monotonic()
        try:
            yield
        finally:
            self.stages.append((stage, round(time.monotonic() - start, 3)))


def outcome_result(ch: Change, outcome: Outcome, clock: Clock | None, message: str = "",
                   after: Facts | None = None) -> HostResult:
    """A result from what the host was seen to run afterwards (`after`; not known when it did
    not answer), else from what it ran when its turn came (nothing was done to it since)."""
    seen = after if after is not None and after.reachable else None
    if seen is None:
        running = ch.before.running if ch.expect_running is None else ch.expect_running
        system = None if after is not None else (ch.before.boot_path if ch.action is Action.BOOT else running) or None
        generation = None if after is not None else ch.before.generation
    else:
        system = (seen.boot_path if ch.action is Action.BOOT else seen.running) or None
        generation = seen.generation
    stages: tuple[tuple[Stage, float], ...] = ((Stage.COPY, ch.copy_seconds),) if ch.copy_seconds else ()
    if clock is not None:
        stages += tuple(clock.stages)
    # The activation stage is timed once its round trip is over: a result from within it
    # (a watchdog that could not be armed) activated nothing.
    activated = any(stage is Stage.ACTIVATION for stage, _ in stages)
    return HostResult(host=ch.host.name, action=ch.action, outcome=outcome, new_system=system,
                      previous_system=ch.before.running or None, message=message,
                      previous_generation=ch.before.generation, generation=generation,
                      duration=round(time.monotonic() - clock.started, 3) if clock else 0.0, stages=stages,
                      tried_system=ch.system if activated else None)


def unchanged(ch: Change, outcome: Outcome, message: str) -> HostResult:
    return outcome_result(ch, outcome, None, message)


def unknown(ch: Change, outcome: Outcome, message: str, runner: Runner) -> HostResult:
    """A result where nixtasks does not know what the host runs: read again (what it runs and
    boots now, or nothing if it does not answer), not what the plan saw."""
    try:
        now = read_facts(ch.host, runner)
    except Exception as exc:  # the result must still be made
        now = Facts(reachable=False, error=str(exc))
    return outcome_result(ch, outcome, None, message, now)


def apply(ch: Change, ctx: Context) -> HostResult:
    """The whole way of one host. Never raises for a host's own failure: it is a result."""
    clock = Clock(ch.host.name, ctx.progress)
    if not ch.action.changes_host:  # dry-activate: nothing to lock, watch or check
        try:
            activate(ch, ctx)
        except CommandFailed as exc:
            return outcome_result(ch, Outcome.FAILED, clock, failure_text(ch, exc))
        return outcome_result(ch, Outcome.OK, clock, "dry activation: nothing changed")
    with contextlib.ExitStack() as held:
        if ch.before.systemd and not ctx.runner.dry_run:
            # The lock, a fresh look at the host and the activation, in one round trip; released
            # however this block ends, if it is ours.
            lease = lock.Lease(ch.host, ctx.runner, ctx.policy.lock_timeout, None, lock.owner(ctx.verb))
            held.callback(lease.release)
            result = lock_and_activate(ch, ctx, clock, lease)
        else:  # no lock unit to take (the host has no systemd), or nothing is run (--dry-run)
            with clock.stage(Stage.LOCK):
                lease = held.enter_context(lock.held(ch.host, ctx.verb, ctx.policy.lock_timeout, ctx.runner,
                                                     systemd=ch.before.systemd))
            result = refused_result(ch, ctx, clock, lease.refused) if lease.refused else \
                apply_locked(ch, ctx, clock)
        if ctx.journal is not None and not (ctx.hold_ok and result.outcome is Outcome.OK):
            # journalled at once, under the lock, sent with its release (alone when none is held)
            _record, record = ctx.journal.prepare_result(ch.host, ctx.verb, result)
            if record:
                ctx.journal.written(ch.host, lease.release(record), len(record))
    return result


def refused_result(ch: Change, ctx: Context, clock: Clock, refused: str) -> HostResult:
    """The lock not taken: nothing was done to the host, but another deploy may be changing
    it, or it went down since the plan: what it runs now is read again (unknown if it does
    not answer)."""
    if lock.by_another(refused):
        return outcome_result(ch, Outcome.LOCKED, clock, f"{refused}; nothing changed. If that deployer is gone: "
                              f"invoke unlock --host {ch.host.name}", read_facts(ch.host, ctx.runner))
    # ssh or sudo failed: not a lock to undo
    return outcome_result(ch, Outcome.FAILED, clock, f"{refused}; nothing changed", read_facts(ch.host, ctx.runner))


def lock_and_activate(ch: Change, ctx: Context, clock: Clock, lease: lock.Lease) -> HostResult:
    """One round trip takes the lock, reads the host under it, sees that it still runs and boots
    what the plan saw (`commands.unchanged_since`), arms the watchdog and activates; the first
    step that fails ends it, so each failure is told apart: another deploy's lock, a host
    changed since the plan, a watchdog not armed (nothing activated), a failed activation. The
    watchdog and the journal's "activation started" are made from the plan's facts, which the
    host has just been seen to match. `lease` learns what the take said."""
    host, runner, policy = ch.host, ctx.runner, ctx.policy
    expected = ch.before.running if ch.expect_running is None else ch.expect_running
    trip = Activation.of(ch, ctx, record_now=False)
    guard = commands.unchanged_since(expected, ch.before.generation)
    ctx.progress.stage(host.name, Stage.LOCK)
    start = time.monotonic()
    activating: list[float] = []

    def locked_as_planned() -> None:
        """Told while the round trip goes on: the lock is ours and the host as planned. The
        lock's stage ends and the activation's begins; the deployer's copy of "activation
        started" is written now, as the host's."""
        activating.append(time.monotonic())
        trip.write_record()
        ctx.progress.stage(host.name, Stage.ACTIVATION)

    taken = lock.take_read_and_run(host, ctx.verb, policy.lock_timeout, runner, [guard, *trip.commands], quiet=1,
                                   stream=True, timeout=policy.activation_timeout, after_quiet=locked_as_planned)
    begun = activating[0] if activating else time.monotonic()
    clock.stages.append((Stage.LOCK, round(begun - start, 3)))
    lease.settle(taken)
    if taken.refused:
        return refused_result(ch, ctx, clock, taken.refused)
    if not taken.then:  # not sent: the host was not read, or this run held the lock already
        return apply_locked(ch, ctx, clock, taken.facts)
    now = taken.facts or Facts(reachable=False, error="not read")
    if taken.then[0].cut_off:  # the host may have gone on: as an arm or activation cut off
        return activated(ch, ctx, clock, trip, taken.then[:1], begun)
    if not taken.then[0].ok:
        stale = changed_since_plan(ch, now) or "it changed since the plan; deploy again"
        return outcome_result(ch, Outcome.FAILED, clock, f"{stale}; nothing changed", now)
    if ch.expect_running is None:
        ch = replace(ch, before=now)  # the failed units to compare with are those of now
    return activated(ch, ctx, clock, trip, taken.then[1:], begun)


@dataclass
class Activation:
    """The activation's round trip: the watchdog armed (when wanted) with the journal's
    "activation started" on the host, then the activation, then what runs now."""

    ch: Change
    armed: bool
    steps: list[Command]  # the arm or the journal's record, then the activation
    seen: list[Command]  # what runs now
    record: Record | None = None
    journal: Journal | None = None
    recorded: bool = False

    @classmethod
    def of(cls, ch: Change, ctx: Context, *, record_now: bool = True) -> Activation:
        """`record_now`: the deployer's copy of "activation started" written now; else by
        `write_record`, once the host is known to be locked and as planned."""
        host, policy = ch.host, ctx.policy
        armed = watchdog.wanted(host, ch.action, ch.before, policy)
        if armed:
            ctx.runner.expect_fresh(host.target)  # the confirmation's connection, prepared meanwhile
        # "activation started", on the host in the activation's round trip: a deployer killed from
        # here on leaves that record (and the watchdog's own, if it reverts) on the host.
        record = ctx.journal.started(host, ctx.verb, ch.before.running or None, ch.before.generation, ch.system,
                                     write=False) if ctx.journal is not None else None
        line = record.line() if record is not None else ""
        steps = [watchdog.arm_command(host, ch.action, ch.before, policy, ch.system, line)] if armed else []
        if line and not armed:  # the arm carries it otherwise (a round trip has one standard input)
            steps += [commands.journal_dir(commands.HOST_JOURNAL), commands.journal_append(commands.HOST_JOURNAL, line)]
        steps += activation_commands(ch)
        seen = [commands.now_running()] if ch.action.changes_running_system and not ctx.runner.dry_run else []
        trip = cls(ch, armed, steps, seen, record, ctx.journal)
        if record_now:
            trip.write_record()
        return trip

    @property
    def commands(self) -> list[Command]:
        return [*self.steps, *self.seen]

    def write_record(self) -> None:
        """The deployer's copy of "activation started" (once)."""
        if self.record is not None and self.journal is not None and not self.recorded:
            self.recorded = True
            self.journal.keep(self.record)


def activation_commands(ch: Change) -> list[Command]:
    """The activation, in the order its commands run: a switch is a `test` activation (its boot
    entry comes after the checks, `boot_entry_commands`); `boot` sets the profile, then the boot
    entry; `test` and dry-activate activate only."""
    if ch.action.boots_after_checks:
        return [commands.switch_to_configuration(ch.system, Action.TEST, systemd=ch.before.systemd)]
    return boot_entry_commands(ch) if ch.action is Action.BOOT else [
        commands.switch_to_configuration(ch.system, ch.action, systemd=ch.before.systemd)]


def boot_entry_commands(ch: Change) -> list[Command]:
    """The profile on the new system (a rollback: on its generation), then the boot loader
    written for it (`switch-to-configuration boot`: nothing is activated)."""
    profile = (commands.switch_generation(ch.generation) if ch.generation is not None
               else commands.set_profile(ch.system))
    return [profile, commands.switch_to_configuration(ch.activation_path, Action.BOOT, systemd=ch.before.systemd)]


def activate(ch: Change, ctx: Context) -> None:
    ctx.runner.run_all(activation_commands(ch), ch.host.target, label=ch.host.name, stream=True,
                       timeout=ctx.policy.activation_timeout)


def what_ran(ch: Change) -> str:
    return f"rollback to generation {ch.generation}" if ch.generation is not None else ch.action.value


def failure_text(ch: Change, exc: NixtasksError) -> str:
    what = what_ran(ch)
    if not isinstance(exc, CommandFailed):
        return f"{what} failed: {exc}"
    return f"{what} failed (exit {exc.returncode}){': ' + exc.detail if exc.detail else ''}"


def changed_since_plan(ch: Change, now: Facts) -> str:
    """Under the lock, the host read again: the plan is only good for what it saw."""
    if not now.reachable:
        return f"the host no longer answers: {now.error}"
    if now.watchdog_pending:
        return ("the watchdog of an earlier deploy that was never confirmed is still pending on the host (it puts "
                "back the system that ran before that deploy); wait until it is done, then deploy again")
    expected = ch.before.running if ch.expect_running is None else ch.expect_running
    if (now.running, now.generation) != (expected, ch.before.generation):
        return (f"it changed since the plan (it runs {now.running or 'nothing'}, boots generation {now.generation}; "
                f"the plan saw {expected or 'nothing'}, generation {ch.before.generation}): someone deployed "
                "in between; deploy again")
    return ""


def apply_locked(ch: Change, ctx: Context, clock: Clock, now: Facts | None = None) -> HostResult:
    host, runner, policy = ch.host, ctx.runner, ctx.policy
    if not runner.dry_run:
        now = now or read_facts(host, runner)
        stale = changed_since_plan(ch, now)
        if stale:  # what it runs is what another deploy left (or not known), not what the plan saw
            return outcome_result(ch, Outcome.FAILED, clock, f"{stale}; nothing changed", now)
        if ch.expect_running is None:
            ch = replace(ch, before=now)  # the failed units to compare with are those of now
    trip = Activation.of(ch, ctx)
    ctx.progress.stage(host.name, Stage.ACTIVATION)
    start = time.monotonic()
    results = runner.run_all(trip.commands, host.target, label=host.name, stream=True, check=False,
                             timeout=policy.activation_timeout)
    return activated(ch, ctx, clock, trip, results, start)


def activated(ch: Change, ctx: Context, clock: Clock, trip: Activation, results: list[Result],
              start: float) -> HostResult:
    """After the activation's round trip (`results`, from `trip.steps` on; begun at `start`):
    confirm, check, make the boot entry, or roll back."""
    host, runner, policy, armed, steps = ch.host, ctx.runner, ctx.policy, trip.armed, trip.steps
    failure = ""
    # Watchdog and activation (`boot`: the profile and its boot entry) in one round trip, in
    # that order; the first that fails ends it, so a watchdog that could not be armed leaves
    # nothing activated. Then, in the same round trip, what runs now: an activation that
    # exited 0 without taking effect is rolled back at once, not after its checks.
    results, running = results[:len(steps)], results[len(steps):]
    runs = running[0].stdout.strip().removeprefix(commands.NOW_RUNNING) if running and running[0].ok else ""
    if results[-1].ok and runs and runs != ch.system:
        failure = f"{what_ran(ch)} exited 0, but /run/current-system is {runs}, not {ch.system}"
    elif not results[-1].ok:
        exc = runner.failure(steps[len(results) - 1], host.target, host.name, results[-1])
        if armed and len(results) == 1 and not results[0].cut_off:
            return outcome_result(ch, Outcome.FAILED, clock, f"could not arm the watchdog, so nothing was "
                                  f"activated: {exc}; or deploy without it: --no-watchdog")
        if len(results) <= len(steps) - len(activation_commands(ch)) and not results[-1].cut_off:
            return outcome_result(ch, Outcome.FAILED, clock, f"could not write the host's journal "
                                  f"({commands.HOST_JOURNAL}), so nothing was activated: {exc}")
        failure = failure_text(ch, exc)
        if results[-1].cut_off:  # ssh gave up, or nixtasks stopped waiting: the host may have gone on
            failure += "; the host had not said how it went when the connection ended"
    clock.stages.append((Stage.ACTIVATION, round(time.monotonic() - start, 3)))
    # The checks start while the confirmation's new connection is being made: both only
    # read. Nothing acts on their result before the confirmation is in (our rollback must
    # not race the watchdog's); without one, the checks are stopped.
    checks = Checks(ch, ctx) if not failure and not runner.dry_run else None
    if armed:
        with clock.stage(Stage.CONFIRM):
            confirmed = watchdog.confirm(host, runner, policy.activation_timeout + watchdog.REVERT_GRACE)
        if confirmed != watchdog.Confirmation.CONFIRMED:
            if checks is not None:
                checks.stop.set()
            return watched_out(ch, ctx, clock, failure or "the host did not confirm over a new ssh connection")
    if runner.dry_run:
        if ch.action.boots_after_checks:  # printed, as the rest
            runner.run_all(boot_entry_commands(ch), host.target, label=host.name)
        return outcome_result(ch, Outcome.OK, clock, "dry run: nothing changed")
    after = None
    if checks is not None:
        if policy.checks and ch.action.changes_running_system:  # `boot` runs none: it only reads the host
            ctx.progress.stage(host.name, Stage.CHECKS)
        failure, after = checks.result()
        clock.stages.extend(checks.clock.stages)
    # Whether the profile may have moved, which a rollback then puts back: a switch's only
    # once it tried to make its boot entry.
    profile_set = ch.action.sets_profile and not ch.action.boots_after_checks
    if not failure and ch.action.boots_after_checks:
        with clock.stage(Stage.BOOT_ENTRY):
            failure, after = make_boot_entry(ch, runner, policy)
        profile_set = True
    after = after or read_facts(host, runner)
    if not failure:
        note = "checks skipped (--no-checks)" if not policy.checks and ch.action.changes_running_system else ""
        return outcome_result(ch, Outcome.OK, clock, boot_note(ch, after) if ch.action is Action.BOOT else note,
                              after)
    if not after.reachable:
        return outcome_result(ch, Outcome.FAILED, clock, f"{failure}; the host no longer answers: {after.error}",
                              after)
    if not policy.rollback:
        left = f"roll it back with `invoke rollback --host {host.name}`"
        if not profile_set and ch.action.sets_profile and ch.before.generation is not None:  # a switch's boot entry
            left = (f"it still boots generation {ch.before.generation}, which its next boot goes back to; back now "
                    f"with `invoke rollback --host {host.name} --generation {ch.before.generation}`")
        return outcome_result(ch, Outcome.FAILED, clock, f"{failure}; LEFT AS IT IS (--no-rollback): {left}", after)
    with clock.stage(Stage.ROLLBACK):
        return roll_back(ch, ctx, clock, failure, profile_set=profile_set)


def make_boot_entry(ch: Change, runner: Runner, policy: Policy) -> tuple[str, Facts | None]:
    """A switch confirmed and checked: the profile and the boot loader, then what the host
    runs and boots, in one round trip. Returns what is wrong ("" for nothing) and the facts
    (None when they were not read: the round trip ended before)."""
    # The unit map rebuilt before the boot loader's unit (its name outlived the activation's
    # daemon-reload) and after it (the rebuild its start made would keep the lock's name, which
    # also outlived it, for the release to stumble on).
    refresh = [commands.refresh_unit_map()] if ch.before.systemd else []
    steps = [*refresh, *boot_entry_commands(ch), *refresh]
    # Not streamed (the facts are for nixtasks): what the boot loader said is shown once it is over.
    results = runner.run_all([*steps, facts_command()], ch.host.target, label=ch.host.name, check=False,
                             timeout=policy.activation_timeout)
    done, seen = results[:len(steps)], results[len(steps):]
    for line in "".join([*(r.stdout for r in done), results[-1].stderr]).splitlines():
        if line.strip():
            runner.echo(f"[{ch.host.name}] {line}")
    if len(done) < len(steps) or not done[-1].ok:  # the first that fails ends the round trip
        exc = runner.failure(steps[len(done) - 1], ch.host.target, ch.host.name, done[-1])
        how = f"(exit {exc.returncode}){': ' + exc.detail if exc.detail else ''}" \
            if isinstance(exc, CommandFailed) else str(exc)
        return f"{what_ran(ch)} passed its checks, but making it the boot entry failed {how}", None
    after = parse_facts(seen[0].stdout) if seen and seen[0].ok else read_facts(ch.host, runner)
    if after.reachable and after.boot_path != ch.system:
        return f"after {ch.action.value}, the boot profile is {after.boot_path or 'missing'}, not {ch.system}", after
    return "", after


def boot_note(ch: Change, after: Facts) -> str:
    """A `boot` that went well: the boot entry is set, and the host runs what it ran until it reboots."""
    entry = "boot entry set" + (f" (generation {after.generation})" if after.generation is not None else "")
    if after.running == ch.system:
        return f"{entry}; it already runs this system"
    runs = f"still runs {store_name(after.running)}" if after.running else "runs no system"
    return f"{entry}; it {runs} until it reboots"


class Unseen:
    """The progress of work shown by someone else: the checks thread's stages are timed, and
    the host's line shows the confirmation, then the checks, from the host's own thread."""

    def stage(self, host: str, stage: Stage | str) -> None:
        return None

    def done(self, result: HostResult) -> None:
        return None


class Checks:
    """`verify_and_check` in a thread of its own (a daemon: a deploy whose confirmation failed
    does not wait for it at exit), timed on a clock of its own, stopped early by `stop`."""

    def __init__(self, ch: Change, ctx: Context) -> None:
        self.clock = Clock(ch.host.name, Unseen())
        self.stop = threading.Event()
        self._outcome: tuple[str, Facts | None] = ("the checks did not finish", None)
        self._thread = threading.Thread(target=self._run, args=(ch, ctx), name=f"checks-{ch.host.name}",
                                        daemon=True)
        self._thread.start()

    def _run(self, ch: Change, ctx: Context) -> None:
        try:
            self._outcome = verify_and_check(ch, ctx, self.clock, self.stop)
        except NixtasksError as exc:  # e.g. a check that cannot run here: the host is not known to be good
            self._outcome = (f"the checks could not run: {exc}", None)
        except Exception as exc:  # the host's thread reports it; it must not vanish here
            self._outcome = (f"the checks stopped with an unexpected error ({exc!r})", None)

    def result(self) -> tuple[str, Facts | None]:
        """What is wrong ("" for nothing) and the facts read after the checks."""
        self._thread.join()
        return self._outcome


def verify_and_check(ch: Change, ctx: Context, clock: Clock,
                     stop: threading.Event | None = None) -> tuple[str, Facts]:
    """After a good activation: the host runs (and boots) the new system, and passes its
    checks. Returns what is wrong ("" for nothing) and the host's facts as last read."""
    found: list[str] = []
    if ctx.policy.checks and ch.action.changes_running_system:
        # The checks first, then one look at the host for all of it: what it runs and boots,
        # and the units that failed meanwhile.
        with clock.stage(Stage.CHECKS):
            found, after = health.examine(ch.host, ch.before, ctx.runner, stop)
    else:
        after = read_facts(ch.host, ctx.runner)
    if not after.reachable:
        return f"{ch.action.value} ran, but the host no longer answers: {after.error}", after
    if ch.action.changes_running_system and after.running != ch.system:
        return f"after {ch.action.value}, /run/current-system is {after.running or 'missing'}, not {ch.system}", after
    if ch.action is Action.BOOT and after.boot_path != ch.system:  # a switch's boot entry comes after
        return f"after {ch.action.value}, the boot profile is {after.boot_path or 'missing'}, not {ch.system}", after
    if found:
        return found[0] + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""), after
    return "", after


def watched_out(ch: Change, ctx: Context, clock: Clock, failure: str) -> HostResult:
    """No confirmation: the watchdog reverts the host by itself. Wait, then see."""
    ctx.runner.echo(f"[{ch.host.name}] no confirmation over a new connection ({failure}); the watchdog reverts "
                    f"the host {ctx.policy.confirm_timeout:g} s after its activation; waiting for it")
    with clock.stage(Stage.ROLLBACK):
        wrong, after = watchdog.await_revert(ch.host, ch.before, ctx.policy, ctx.runner)
    if after.reachable and watchdog.restarted(ch.before, after):  # not switched: never its boot entry
        return outcome_result(ch, Outcome.FAILED, clock, f"{failure}; the host was restarted before its watchdog "
                              f"fired and booted its boot entry, which the new system never was: it runs "
                              f"{after.running} again{'; ' + wrong if wrong else ''}", after)
    if not wrong:
        return outcome_result(ch, Outcome.REVERTED, clock, f"{failure}; the watchdog put back "
                              f"{ch.before.running} by itself", after)
    return outcome_result(ch, Outcome.FAILED, clock, f"{failure}; {wrong}; check the host by hand", after)


def revert(ch: Change, action: Action, runner: Runner, *, profile_set: bool = True) -> str:
    """The host's profile, boot entry and (unless `boot`) running system back to before `ch`
    (without `profile_set`, the running system only: the profile was not touched); "" when
    that worked, else what failed."""
    before = ch.before
    try:
        for cmd in commands.revert(before.generation if profile_set else None, before.boot_path, before.running,
                                   action, systemd=before.systemd):
            runner.run(cmd, ch.host.target, label=ch.host.name, stream=True)
    except CommandFailed as exc:
        return str(exc)
    return ""


def roll_back_locked(ch: Change, ctx: Context, failure: str, *, why: str = "",
                     refused: Callable[[str], str] | None = None) -> HostResult:
    """A host that went out fine goes back anyway (its batch, its canary soak or its reboot
    group failed): under its lock, to what it ran and booted before. `refused` words the
    failure when the lock is not given (its reason in); the rollback's stage is in the result."""
    clock = Clock(ch.host.name, ctx.progress)
    with lock.held(ch.host, ctx.verb, ctx.policy.lock_timeout, ctx.runner, systemd=ch.before.systemd) as lease:
        if lease.refused:  # it runs the new system still, or not known: read again
            message = refused(lease.refused) if refused else f"{failure}; could not roll it back: {lease.refused}"
            return outcome_result(ch, Outcome.FAILED, clock, message, read_facts(ch.host, ctx.runner))
        with clock.stage(Stage.ROLLBACK):
            back = roll_back(ch, ctx, clock, failure, why=why)
        return replace(back, stages=(*back.stages, clock.stages[-1]))  # timed once it is over


def roll_back(ch: Change, ctx: Context, clock: Clock, failure: str, *, why: str = "",
              profile_set: bool = True) -> HostResult:
    """Put the host back on what it ran and booted before, then see that it did. Without
    `profile_set` (a switch that failed before its boot entry) only what runs goes back."""
    host, runner, before = ch.host, ctx.runner, ch.before
    if not before.running and ch.action.changes_running_system:
        return outcome_result(ch, Outcome.FAILED, clock, f"{failure}; it ran no system before, so there is "
                              "nothing to roll back to", read_facts(host, runner))
    runner.echo(f"[{host.name}] {why or failure}: rolling back to "
                f"{'generation ' + str(before.generation) if before.generation else before.running}")
    broken = revert(ch, ch.action, runner, profile_set=profile_set)
    if broken:
        return outcome_result(ch, Outcome.FAILED, clock, f"{failure}; the rollback failed too ({broken}); check "
                              f"the host by hand", read_facts(host, runner))
    after = read_facts(host, runner)
    wrong = []
    if not after.reachable:
        wrong.append(f"the host no longer answers ({after.error})")
    else:
        if ch.action.changes_running_system and after.running != before.running:
            wrong.append(f"it runs {after.running or 'nothing'}, not {before.running}")
        if ch.action.sets_profile and before.generation is not None and after.generation != before.generation:
            wrong.append(f"it boots generation {after.generation}, not {before.generation}")
    if wrong:
        return outcome_result(ch, Outcome.FAILED, clock, f"{failure}; the rollback did not put it back: "
                              f"{'; '.join(wrong)}", after)
    back = f"rolled back to generation {before.generation}" if before.generation else "rolled back"
    if ctx.policy.checks and ch.action.changes_running_system:
        again = health.problems(host, before, runner)
        back += f"; after the rollback: {again[0]}" if again else ", whose checks pass"
    return outcome_result(ch, Outcome.ROLLED_BACK, clock, f"{failure}; {back}", after)
