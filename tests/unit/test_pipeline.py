"""The order of one host's steps in the fleet engine, with a recording runner: lock before
the profile, the watchdog before activation, the confirmation over a fresh connection,
checks, a rollback after a failure, the lock released at the end."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nixtasks.actions.journal import Journal, read_local
from nixtasks.fleet import pipeline, watchdog
from nixtasks.fleet.pipeline import Checks
from nixtasks.fleet.progress import PlainProgress
from nixtasks.host.facts import parse_facts
from nixtasks.host.runner import Result
from nixtasks.models import SYSTEM_PROFILE, Action, Check, Command, Host, Outcome, Policy, Stage, Target
from tests.fakes import NEW, OLD, FakeHost
from tests.recording import RecordingRunner

WEB1 = Host("web1", "web1", Target("web1", "root"), checks=(Check("unit", "app.service", retries=1),))


def change(host: FakeHost, action: Action = Action.SWITCH, target: Host = WEB1) -> pipeline.Change:
    before = parse_facts(host.facts())
    return pipeline.Change(target, action, NEW, before)


DEFAULT = Policy()


def apply(fake: FakeHost, policy: Policy = DEFAULT, action: Action = Action.SWITCH, target: Host = WEB1):
    runner = RecordingRunner(fake)
    ctx = pipeline.Context(runner, policy, PlainProgress(runner.echo), action.value)
    return pipeline.apply(change(fake, action, target), ctx), runner


def test_a_good_switch_test_activates_confirms_checks_then_makes_its_boot_entry():
    fake = FakeHost()
    result, runner = apply(fake)
    assert runner.steps() == ["lock", "facts", "arm", "activate test", "confirm*", "unit-map", "set-profile",
                              "activate boot", "unit-map", "facts", "unlock"]
    assert runner.steps(checks=True) == ["unit", "facts"]  # beside the confirmation, after the activation
    assert result.outcome is Outcome.OK and not result.failed
    assert (result.previous_generation, result.generation, result.new_system) == (1, 2, NEW)
    assert (fake.running, fake.generations[fake.profile]) == (NEW, NEW)
    # the lock is taken in the activation's round trip: its stage ends once the host is known locked and as planned
    assert [s for s, _ in result.stages] == [Stage.LOCK, Stage.ACTIVATION, Stage.CONFIRM, Stage.CHECKS,
                                             Stage.BOOT_ENTRY]
    assert runner.echoed.index("[web1] lock") < runner.echoed.index("[web1] activation")
    first = [c.step for c in runner.calls if c.trip == 1]
    assert first == ["lock", "facts", "unchanged", "arm", "activate test", "running"]
    unchanged = next(c for c in runner.calls if c.step == "unchanged").cmd
    assert unchanged.argv[-2:] == (OLD, "1") and not unchanged.sudo  # what the plan saw; it only reads
    # the activation is NEW's own `test`; its boot entry, NEW's `boot`, in one round trip with the facts
    activate = next(c for c in runner.calls if c.step == "activate test").cmd.argv
    assert f"{NEW}/bin/switch-to-configuration" in activate
    trip = next(c.trip for c in runner.calls if c.step == "set-profile")
    assert [c.step for c in runner.calls if c.trip == trip] == ["unit-map", "set-profile", "activate boot", "unit-map",
                                                                 "facts"]
    assert next(c for c in runner.calls if c.step == "set-profile").cmd.argv[-1] == NEW
    assert f"{NEW}/bin/switch-to-configuration" in next(c for c in runner.calls if c.step == "activate boot").cmd.argv
    assert not any("profile-path" in line for line in runner.echoed)  # the facts are nixtasks', not shown


def test_a_switch_whose_boot_entry_fails_is_rolled_back_with_the_failing_line():
    fake = FakeHost(fail={"activate boot"})
    result, runner = apply(fake)
    steps = runner.steps()
    assert steps[steps.index("confirm*"):] == ["confirm*", "unit-map", "set-profile", "activate boot", "facts",
                                               "switch-generation 1", "activate switch", "facts", "unit", "facts",
                                               "unlock"]
    assert result.outcome is Outcome.ROLLED_BACK and result.failed
    assert result.message.startswith("switch passed its checks, but making it the boot entry failed (exit 1): "
                                     "activate boot broke; rolled back to generation 1")
    assert (fake.running, fake.profile) == (OLD, 1)  # runs and boots what it did before
    assert (result.generation, result.new_system, result.tried_system) == (1, OLD, NEW)
    back = [c.cmd.argv for c in runner.calls if c.step == "activate switch"]
    assert f"{SYSTEM_PROFILE}/bin/switch-to-configuration" in back[-1]  # the old profile's, boot loader and all


def test_a_rollback_done_as_a_switch_tests_the_generation_s_system_then_switches_the_profile_to_it():
    fake = FakeHost(generations={1: OLD, 2: NEW}, profile=2, running=NEW)
    runner = RecordingRunner(fake)
    ctx = pipeline.Context(runner, DEFAULT, PlainProgress(runner.echo), "rollback")
    ch = pipeline.Change(WEB1, Action.SWITCH, OLD, parse_facts(fake.facts()), generation=1)
    result = pipeline.apply(ch, ctx)
    assert runner.steps() == ["lock", "facts", "arm", "activate test", "confirm*", "unit-map", "switch-generation 1",
                              "activate boot", "unit-map", "facts", "unlock"]
    assert f"{OLD}/bin/switch-to-configuration" in next(c for c in runner.calls if c.step == "activate test").cmd.argv
    boot = next(c for c in runner.calls if c.step == "activate boot").cmd.argv
    assert f"{SYSTEM_PROFILE}/bin/switch-to-configuration" in boot  # the profile, as --rollback does
    assert result.outcome is Outcome.OK and (fake.running, fake.profile, result.generation) == (OLD, 1, 1)


def test_a_rollback_whose_checks_fail_leaves_the_profile_where_it_was():
    fake = FakeHost(generations={1: OLD, 2: NEW}, profile=2, running=NEW, healthy={NEW})
    runner = RecordingRunner(fake)
    ctx = pipeline.Context(runner, DEFAULT, PlainProgress(runner.echo), "rollback")
    result = pipeline.apply(pipeline.Change(WEB1, Action.SWITCH, OLD, parse_facts(fake.facts()), generation=1), ctx)
    assert not any(s.startswith("switch-generation") for s in runner.steps())
    assert result.outcome is Outcome.ROLLED_BACK and (fake.running, fake.profile, result.generation) == (NEW, 2, 2)


def test_a_switch_whose_profile_cannot_be_set_writes_no_boot_entry_and_goes_back():
    fake = FakeHost(fail={"set-profile"})
    result, runner = apply(fake)
    steps = runner.steps()
    assert "activate boot" not in steps  # the first that fails ends the round trip
    assert result.outcome is Outcome.ROLLED_BACK and "making it the boot entry failed (exit 1)" in result.message
    assert (fake.running, fake.profile) == (OLD, 1)


def test_a_good_switch_costs_six_round_trips_with_its_journal_record(tmp_path):
    runner = RecordingRunner(FakeHost())
    journal = Journal(runner, tmp_path / "journal.jsonl")
    ctx = pipeline.Context(runner, DEFAULT, PlainProgress(runner.echo), "switch", journal)
    result = pipeline.apply(change(FakeHost()), ctx)
    assert result.outcome is Outcome.OK
    # lock+facts+guard+arm+activation, the confirmation, the check, facts, profile+boot entry+facts,
    # journal+unlock
    assert runner.round_trips(WEB1.target) == 6
    last = [c.step for c in runner.calls if c.trip == runner.trips]
    assert last == ["journal", "journal", "unlock"]  # the record is on the host before the lock goes
    started, done = read_local(tmp_path / "journal.jsonl")
    assert (started.outcome, started.tried_path, done.outcome, done.tried_path) == ("started", NEW, "ok", NEW)
    # "activation started" goes to the host with the activation, as the arm's first line of input
    arm = next(c for c in runner.calls if c.step == "arm")
    assert arm.trip == next(c.trip for c in runner.calls if c.step == "activate test")
    assert arm.cmd.stdin.splitlines()[0] == started.line()


def test_without_a_watchdog_the_started_record_goes_with_the_activation(tmp_path):
    runner = RecordingRunner(FakeHost())
    journal = Journal(runner, tmp_path / "journal.jsonl")
    ctx = pipeline.Context(runner, Policy(watchdog=False), PlainProgress(runner.echo), "switch", journal)
    assert pipeline.apply(change(FakeHost()), ctx).outcome is Outcome.OK
    trip = next(c.trip for c in runner.calls if c.step == "activate test")
    assert [c.step for c in runner.calls if c.trip == trip] == ["lock", "facts", "unchanged", "journal", "journal",
                                                                 "activate test", "running"]
    tee = next(c for c in runner.calls if c.trip == trip and c.cmd.stdin)
    assert tee.cmd.stdin == read_local(tmp_path / "journal.jsonl")[0].line() + "\n"


def test_a_host_journal_that_cannot_be_written_activates_nothing(tmp_path):
    host = FakeHost(fail={"journal"})
    runner = RecordingRunner(host)
    ctx = pipeline.Context(runner, Policy(watchdog=False), PlainProgress(runner.echo), "switch",
                           Journal(runner, tmp_path / "journal.jsonl"))
    result = pipeline.apply(change(FakeHost()), ctx)
    assert result.outcome is Outcome.FAILED and "so nothing was activated" in result.message
    assert result.tried_system is None and host.running == OLD
    assert not any(c.step.startswith("activate") for c in runner.calls)


def test_a_failing_check_rolls_the_host_back_and_checks_again():
    fake = FakeHost(healthy={OLD})
    result, runner = apply(fake)
    steps = runner.steps()
    assert runner.steps(checks=True) == ["unit", "facts"]
    # the rollback, after the watchdog is off: the old system activated again; the profile was never moved
    assert steps[steps.index("confirm*"):] == ["confirm*", "activate test", "facts", "unit", "facts", "unlock"]
    assert steps[:2] == ["lock", "facts"]  # read again under the lock
    assert result.outcome is Outcome.ROLLED_BACK and result.failed
    assert "check unit app.service" in result.message and "rolled back to generation 1" in result.message
    assert "whose checks pass" in result.message
    assert (fake.running, fake.profile, sorted(fake.generations)) == (OLD, 1, [1])  # no failed generation made
    assert (result.generation, result.tried_system) == (1, NEW)
    activations = [c.cmd.argv for c in runner.calls if c.step == "activate test"]
    assert f"{OLD}/bin/switch-to-configuration" in activations[-1]


def test_an_activation_that_exits_0_without_taking_is_rolled_back_before_any_check():
    fake = FakeHost(takes=False)
    result, runner = apply(fake)
    activation = [c.step for c in runner.calls if c.trip == next(c.trip for c in runner.calls if c.step == "arm")]
    assert activation == ["lock", "facts", "unchanged", "arm", "activate test", "running"]  # what runs, with them
    assert runner.steps(checks=True) == []  # no check of a system that is not running
    assert result.outcome is Outcome.ROLLED_BACK
    assert f"switch exited 0, but /run/current-system is {OLD}, not {NEW}" in result.message
    assert (fake.running, fake.profile) == (OLD, 1)


def test_a_failed_activation_is_rolled_back_after_the_watchdog_is_disarmed():
    fake = FakeHost(fail={"activate test"})
    result, runner = apply(fake)
    steps = runner.steps()
    assert steps.index("confirm*") < len(steps) - 1 - steps[::-1].index("activate test")  # ours, not the watchdog's
    assert "set-profile" not in steps and "switch-generation 1" not in steps
    assert result.outcome is Outcome.ROLLED_BACK
    assert result.message.startswith("switch failed (exit 1): activate test broke")
    assert (fake.running, fake.profile) == (OLD, 1)


def test_a_locked_host_is_left_alone():
    fake = FakeHost(holder="who=ann@laptop,action=switch")
    result, runner = apply(fake)
    assert runner.steps() == ["lock", "facts"]  # what it runs now, as the other deploy left it so far
    assert result.outcome is Outcome.LOCKED and result.failed
    assert (result.new_system, result.generation) == (OLD, 1)
    assert result.message.startswith("locked by another deploy (who=ann@laptop,action=switch); nothing changed")
    assert "invoke unlock --host web1" in result.message


def test_a_lock_that_sudo_refuses_is_a_failure_not_a_lock_to_undo():
    fake = FakeHost(lock_error="sudo: a password is required")
    result, runner = apply(fake)
    assert runner.steps() == ["lock", "facts"]
    assert result.outcome is Outcome.FAILED and fake.profile == 1
    assert result.message == "cannot take the lock: sudo: a password is required; nothing changed"
    assert "unlock" not in result.message and "locked" not in result.message


def test_no_rollback_leaves_a_failed_host_loudly():
    fake = FakeHost(healthy={OLD})
    result, runner = apply(fake, Policy(rollback=False))
    assert not any(s.startswith("switch-generation") for s in runner.steps())
    assert result.outcome is Outcome.FAILED and "LEFT AS IT IS (--no-rollback)" in result.message
    assert "it still boots generation 1, which its next boot goes back to; back now with `invoke rollback --host " \
           "web1 --generation 1`" in result.message
    assert (fake.running, fake.profile) == (NEW, 1) and "set-profile" not in runner.steps()


def test_no_checks_skips_them_and_says_so():
    result, runner = apply(FakeHost(healthy={OLD}), Policy(checks=False))
    assert "unit" not in runner.steps()
    assert result.outcome is Outcome.OK and result.message == "checks skipped (--no-checks)"


def test_a_host_that_cannot_confirm_is_reported_reverted_by_its_watchdog(monkeypatch):
    monkeypatch.setattr(watchdog, "POLL_INTERVAL", 0)
    fake = FakeHost(fail={"confirm"})

    def respond(step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if step == "facts" and fresh:  # by the time a new connection gets through, it reverted
            fake.running, fake.profile, fake.reverted = OLD, 1, "1700000000 0"
        return fake(step, cmd, target, fresh)

    runner = RecordingRunner(respond)
    ctx = pipeline.Context(runner, Policy(confirm_timeout=1), PlainProgress(runner.echo), "switch")
    result = pipeline.apply(change(fake), ctx)
    assert runner.steps() == ["lock", "facts", "arm", "activate test", "confirm*", "facts*",
                              "unlock"]  # no rollback of ours: the watchdog's turn; no boot entry
    assert result.outcome is Outcome.REVERTED and result.failed
    assert result.new_system == OLD


def test_a_host_restarted_before_its_watchdog_fired_is_reported_not_switched(monkeypatch):
    """Power lost after the activation: /run (the watchdog, its record) is gone, and the host
    booted its boot entry, which a switch had not touched yet."""
    monkeypatch.setattr(watchdog, "POLL_INTERVAL", 0)
    fake = FakeHost(fail={"confirm"})

    def respond(step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if step == "facts" and fresh:
            fake.running = fake.generations[fake.profile]  # what stage 2 boots: the profile
        return fake(step, cmd, target, fresh)

    runner = RecordingRunner(respond)
    ctx = pipeline.Context(runner, Policy(confirm_timeout=1), PlainProgress(runner.echo), "switch")
    result = pipeline.apply(change(fake), ctx)
    assert "set-profile" not in runner.steps() and (fake.running, fake.profile) == (OLD, 1)
    assert result.outcome is Outcome.FAILED and (result.new_system, result.generation) == (OLD, 1)
    assert "the host was restarted before its watchdog fired" in result.message
    assert f"it runs {OLD} again" in result.message


def test_local_hosts_and_test_activations_get_no_watchdog_and_no_profile():
    local = Host("box", "box", Target(sudo=False))
    _result, runner = apply(FakeHost(), action=Action.TEST, target=local)
    assert "arm" not in runner.steps() and "set-profile" not in runner.steps()
    assert runner.steps()[:3] == ["lock", "facts", "activate test"]


def test_boot_sets_the_profile_and_runs_no_checks():
    fake = FakeHost()
    result, runner = apply(fake, action=Action.BOOT)
    assert runner.steps() == ["lock", "facts", "set-profile", "activate boot", "unlock"]
    assert runner.steps(checks=True) == ["facts"]  # the boot entry is verified, no checks run
    assert result.outcome is Outcome.OK and fake.running == OLD and fake.profile == 2


@pytest.mark.parametrize("action", [Action.SWITCH, Action.TEST])
def test_nothing_to_roll_back_to_on_a_host_that_never_ran_a_system(action):
    fake = FakeHost(running="", healthy=set())
    result, _runner = apply(fake, action=action)
    assert result.outcome is Outcome.FAILED and "nothing to roll back to" in result.message


def apply_after(fake: FakeHost, meanwhile: Callable[[FakeHost], None]):
    """Plan against `fake`, let `meanwhile` change it (another deployer), then apply."""
    runner = RecordingRunner(fake)
    ctx = pipeline.Context(runner, Policy(), PlainProgress(runner.echo), "switch")
    planned = change(fake)
    meanwhile(fake)
    return pipeline.apply(planned, ctx), runner


def test_a_pending_watchdog_of_an_earlier_deploy_changes_nothing():
    result, runner = apply_after(FakeHost(), lambda fake: setattr(fake, "pending", True))
    assert runner.steps() == ["lock", "facts", "unlock"]
    assert result.outcome is Outcome.FAILED and "never confirmed" in result.message


def test_a_host_changed_since_the_plan_is_left_alone():
    def other_deploy(fake: FakeHost) -> None:
        fake.generations[2], fake.profile, fake.running = "/nix/store/" + "c" * 32 + "-other", 2, "/nix/store/other"

    result, runner = apply_after(FakeHost(), other_deploy)
    assert runner.steps() == ["lock", "facts", "unlock"]
    assert result.outcome is Outcome.FAILED and "someone deployed in between" in result.message
    # what the host runs and boots now (the other deploy's), not what the plan saw
    assert (result.new_system, result.generation) == ("/nix/store/other", 2)
    assert (result.previous_system, result.previous_generation) == (OLD, 1) and result.tried_system is None


def test_a_host_lost_before_its_lock_is_a_failure_and_what_it_runs_is_not_known():
    fake = FakeHost()

    def gone(step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        return Result(255, "", "ssh: connect to host web1 port 22: Connection refused")

    runner = RecordingRunner(gone)
    ctx = pipeline.Context(runner, DEFAULT, PlainProgress(runner.echo), "switch")
    result = pipeline.apply(change(fake), ctx)
    assert runner.steps() == ["lock", "facts"]
    assert result.outcome is Outcome.FAILED and "cannot reach the host over ssh" in result.message
    assert "unlock" not in result.message and "locked" not in result.message
    assert (result.new_system, result.generation) == (None, None)  # not known: it does not answer


def test_a_host_not_activated_reports_what_it_runs_and_boots_as_its_turn_found_it():
    fake = FakeHost()
    fake.generations[2], fake.profile = NEW, 2  # booted next: NEW; runs OLD
    boot = pipeline.unchanged(change(fake, Action.BOOT), Outcome.DECLINED, "declined; nothing changed")
    assert (boot.new_system, boot.generation, boot.changed) == (NEW, 2, False)
    tested = pipeline.Change(WEB1, Action.SWITCH, NEW, parse_facts(FakeHost().facts()), expect_running=NEW)
    declined = pipeline.unchanged(tested, Outcome.DECLINED, "declined")  # after its test activation
    assert (declined.new_system, declined.generation, declined.changed) == (NEW, 1, True)


def test_a_revert_that_left_the_boot_entry_is_not_reported_reverted(monkeypatch):
    monkeypatch.setattr(watchdog, "POLL_INTERVAL", 0)
    fake = FakeHost(fail={"confirm"})

    def respond(step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if step == "facts" and fresh:  # it runs the old system again, but boots another (someone's)
            fake.running, fake.reverted = OLD, "1700000000 1"
            fake.generations[2], fake.profile = NEW, 2
        return fake(step, cmd, target, fresh)

    runner = RecordingRunner(respond)
    ctx = pipeline.Context(runner, Policy(confirm_timeout=1), PlainProgress(runner.echo), "switch")
    result = pipeline.apply(change(fake), ctx)
    assert result.outcome is Outcome.FAILED
    assert "its revert failed (exit 1)" in result.message and "boots generation 2, not 1" in result.message


def test_an_arm_whose_connection_was_lost_is_not_reported_as_nothing_activated():
    """ssh gave up during the batch: the host may have armed, set the profile and activated
    anyway. The confirmation (over a new connection) and the rollback find out."""
    fake = FakeHost()
    runner = cut_off_at("arm", fake, "Timeout, server web1 not responding.")
    ctx = pipeline.Context(runner, DEFAULT, PlainProgress(runner.echo), "switch")
    result = pipeline.apply(change(fake), ctx)
    assert "nothing was activated" not in result.message
    assert "the host had not said how it went when the connection ended" in result.message
    steps = runner.steps()
    assert steps.index("confirm*") < steps.index("activate test")  # the old system's `test`, after it
    assert result.outcome is Outcome.ROLLED_BACK and (fake.running, fake.profile) == (OLD, 1)


def test_an_arm_that_failed_on_the_host_activates_nothing():
    fake = FakeHost(fail={"arm"})
    result, runner = apply(fake)
    assert result.outcome is Outcome.FAILED and "could not arm the watchdog, so nothing was activated" in result.message
    assert runner.steps() == ["lock", "facts", "arm", "unlock"]


def test_no_confirmation_stops_the_checks(monkeypatch):
    monkeypatch.setattr(watchdog, "POLL_INTERVAL", 0)
    fake = FakeHost(fail={"confirm"}, reverted="1700000000 0")  # the revert's record: already there
    started: list[Checks] = []

    class Seen(Checks):
        def __init__(self, ch: pipeline.Change, ctx: pipeline.Context) -> None:
            super().__init__(ch, ctx)
            started.append(self)

    def respond(step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if step == "facts" and fresh:  # by the time a new connection gets through, it reverted
            fake.running, fake.profile = OLD, 1
        return fake(step, cmd, target, fresh)

    monkeypatch.setattr(pipeline, "Checks", Seen)
    runner = RecordingRunner(respond)
    result = pipeline.apply(change(fake), pipeline.Context(runner, Policy(confirm_timeout=1),
                                                           PlainProgress(runner.echo), "switch"))
    assert result.outcome is Outcome.REVERTED
    assert len(started) == 1 and started[0].stop.is_set()


def test_a_lock_this_run_left_on_the_host_is_not_another_deploy_s():
    from nixtasks.fleet import lock

    fake = FakeHost(holder=lock.owner("switch"))  # an earlier step's, whose release was lost
    result, runner = apply(fake)
    assert result.outcome is Outcome.OK and fake.running == NEW
    assert runner.steps()[:3] == ["lock", "facts", "arm"]
    assert runner.steps()[-1] == "unlock"
    # the take was refused, so nothing rode on it: the host read, then the activation, each in a trip of its own
    arm = next(c.trip for c in runner.calls if c.step == "arm")
    assert [c.step for c in runner.calls if c.trip == 1] == ["lock"] and arm > 2
    another = FakeHost(holder=lock.owner("switch").replace("pid=", "pid=1"))
    assert apply(another)[0].outcome is Outcome.LOCKED


def journalled(fake: FakeHost, tmp_path, meanwhile: Callable[[FakeHost], None] = lambda fake: None):
    """`apply` with a journal, after `meanwhile` changed the host since the plan."""
    runner = RecordingRunner(fake)
    journal = Journal(runner, tmp_path / "journal.jsonl")
    ctx = pipeline.Context(runner, DEFAULT, PlainProgress(runner.echo), "switch", journal)
    planned = change(fake)
    meanwhile(fake)
    return pipeline.apply(planned, ctx), runner, read_local(tmp_path / "journal.jsonl")


def test_each_failure_of_the_one_round_trip_is_told_apart_and_only_an_activation_is_journalled_as_started(tmp_path):
    """The lock, the host as the plan saw it, the watchdog and the activation go in one round
    trip that ends at the first that fails: each failure says which, and the deployer's
    "activation started" is written only once the host is locked and as planned."""
    locked, runner, records = journalled(FakeHost(holder="who=ann@laptop,action=switch"), tmp_path / "locked")
    assert [c.step for c in runner.calls if c.trip == 1] == ["lock"]
    assert locked.outcome is Outcome.LOCKED and [r.outcome for r in records] == ["locked"]

    def other_deploy(fake: FakeHost) -> None:
        fake.running = "/nix/store/other"

    stale, runner, records = journalled(FakeHost(), tmp_path / "stale", other_deploy)
    assert [c.step for c in runner.calls if c.trip == 1] == ["lock", "facts", "unchanged"]  # no watchdog armed
    assert stale.outcome is Outcome.FAILED and "someone deployed in between" in stale.message
    assert runner.steps()[-1] == "unlock" and [r.outcome for r in records] == ["failed"]
    assert stale.tried_system is None  # nothing was tried

    unarmed, runner, records = journalled(FakeHost(fail={"arm"}), tmp_path / "unarmed")
    assert [c.step for c in runner.calls if c.trip == 1] == ["lock", "facts", "unchanged", "arm"]
    assert unarmed.message.startswith("could not arm the watchdog, so nothing was activated")
    assert [r.outcome for r in records] == ["started", "failed"]  # the arm writes the host's start first

    broken, runner, records = journalled(FakeHost(fail={"activate test"}), tmp_path / "broken")
    assert [c.step for c in runner.calls if c.trip == 1] == ["lock", "facts", "unchanged", "arm", "activate test"]
    assert broken.outcome is Outcome.ROLLED_BACK and broken.message.startswith("switch failed (exit 1)")
    assert [r.outcome for r in records] == ["started", "rolled back"]


def test_a_round_trip_cut_off_at_the_unchanged_check_is_not_taken_for_a_changed_host():
    """ssh ended before the host said whether it was as planned: it may have armed and activated
    after it, so the host is not reported unchanged; its watchdog takes it back unconfirmed."""
    fake = FakeHost()
    runner = cut_off_at("unchanged", fake, "client_loop: send disconnect: Broken pipe")
    result = pipeline.apply(change(fake), pipeline.Context(runner, DEFAULT, PlainProgress(runner.echo), "switch"))
    assert "changed since the plan" not in result.message and "nothing changed" not in result.message
    assert "the host had not said how it went when the connection ended" in result.message


def cut_off_at(where: str, fake: FakeHost, said: str) -> RecordingRunner:
    """A runner to `fake` whose ssh connection ends (exit 255, `said`) at the step `where`."""
    def respond(step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if step == where:
            return Result(255, "", said, cut_off=True)
        return fake(step, cmd, target, fresh)

    return RecordingRunner(respond)
