"""emergency through the engine with FakeHosts: the reason first, a test activation with the
watchdog and checks, a second question, then the switch of exactly the tested systems, then
the journals followed; each marked EMERGENCY in the journal."""

from __future__ import annotations

import pytest

from nixtasks.actions.journal import read_local
from nixtasks.errors import DeployFailed, Interrupted, Refused, UsageError
from nixtasks.models import Policy
from nixtasks.recipes import emergency

from .flows import DEFAULT, NEW, OLD, FakeHost, fleet_of, hosts, outcomes, request

NAMES = ("web1", "web2")
HOSTS = hosts(*NAMES)
PROBED = ["facts", "xargs -r"]
TESTED = ["lock", "facts", "arm", "activate test", "confirm*", "unlock"]
SWITCHED = ["lock", "facts", "arm", "activate test", "confirm*", "unit-map", "set-profile", "activate boot", "unit-map",
            "facts", "unlock"]
TEST_QUESTION = ("EMERGENCY: test-activate web1, web2 (the boot entry stays; watchdog, checks)?", NAMES)
SWITCH_QUESTION = ("EMERGENCY: web1, web2 passed the test activation and its checks. Switch (make it the boot "
                   "entry)?", NAMES)


def run(fleet, *answers, reason: str = "CVE fix", follow: float = 0.0, policy: Policy = DEFAULT):
    return emergency.emergency(request(HOSTS, policy, reason=reason), fleet.tools(*answers), follow)


def test_test_activation_then_a_second_question_then_the_switch_then_the_journals(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    report = run(fleet, True, True, follow=0.01)
    assert fleet.asked() == [TEST_QUESTION, SWITCH_QUESTION]
    assert {n: fleet.steps(n) for n in NAMES} == {n: PROBED + TESTED + SWITCHED + ["journalctl --follow"]
                                                  for n in NAMES}
    assert max(fleet.when(n, "activate test") for n in NAMES) < min(fleet.when(n, "set-profile") for n in NAMES)
    assert all((f.running, f.profile) == (NEW, 2) for f in fleet.fakes.values())
    assert outcomes(report) == {"web1": "ok", "web2": "ok"} and report.action == "emergency"
    records = {(r.host, r.action, r.outcome, r.reason) for r in read_local(tmp_path / "journal.jsonl")
               if r.outcome != "started"}
    assert records == {(n, action, "ok", "EMERGENCY: CVE fix") for n in NAMES
                       for action in ("emergency-test", "emergency-switch")}
    assert "following the warnings and errors of web1, web2 for 0.01 s (Ctrl-C ends it)" in fleet.said


def test_without_follow_the_journals_are_not_followed(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    assert run(fleet, True, True, follow=0).ok
    assert not any("journalctl --follow" in fleet.steps(n) for n in NAMES)


@pytest.mark.parametrize("reason", ["", "   "])
def test_the_reason_is_required_before_anything_runs(tmp_path, reason):
    fleet = fleet_of(tmp_path, *NAMES)
    with pytest.raises(UsageError, match=r'^emergency needs --reason "\.\.\." \(REASON=\.\.\. for make\)') as err:
        run(fleet, True, True, reason=reason)
    assert err.value.exit_code == 2 and fleet.runner.calls == [] and fleet.prompter.asked == []


def test_a_no_at_the_test_question_activates_nothing(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    with pytest.raises(Refused, match="^not approved for web1, web2; nothing was changed on any host$") as refused:
        run(fleet, False)
    assert refused.value.exit_code == 3 and fleet.locked() == [] and fleet.asked() == [TEST_QUESTION]
    assert fleet.journal() == [("web1", "emergency-test", "declined"), ("web2", "emergency-test", "declined")]


def test_a_no_at_the_switch_question_leaves_the_tested_system_running_and_says_so(tmp_path):
    """The hosts keep running the tested system, their boot entry unchanged: not "nothing changed"
    and not exit 3. The offer to go back is declined too."""
    fleet = fleet_of(tmp_path, *NAMES)
    with pytest.raises(DeployFailed, match=r"^not approved for web1, web2; this run changed web1 \(in an earlier "
                                           r"step\), web2") as failed:
        run(fleet, True, False, False)
    assert failed.value.exit_code == 1
    assert failed.value.report.results[0].message.startswith(
        "declined the switch: it runs the test-activated system nixos-system-web1-1.1 and boots the old one")
    assert fleet.asked()[-1] == ("Go back to the booted system on web1, web2 now (its boot entry, "
                                 "switch-to-configuration test)?", ())
    assert {n: fleet.steps(n) for n in NAMES} == {n: PROBED + TESTED for n in NAMES}
    assert all((f.running, f.profile) == (NEW, 1) for f in fleet.fakes.values())
    assert fleet.journal()[2:] == [("web1", "emergency-switch", "declined"), ("web2", "emergency-switch", "declined")]


def test_a_subset_chosen_at_the_test_question_is_the_only_one_switched(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    report = run(fleet, ["web2"], True)
    assert fleet.asked() == [TEST_QUESTION, ("EMERGENCY: web2 passed the test activation and its checks. Switch "
                                             "(make it the boot entry)?", ("web2",))]
    assert outcomes(report) == {"web1": "not selected", "web2": "ok"} and report.ok
    assert fleet.steps("web1") == PROBED and fleet.steps("web2") == PROBED + TESTED + SWITCHED


BACK_QUESTION = "Go back to the booted system on {} now (its boot entry, switch-to-configuration test)?"


def test_a_test_activation_that_fails_its_checks_is_rolled_back_and_nothing_is_switched(tmp_path):
    """web2 fails its checks and is rolled back; web1's test passed: it runs the tested system and
    boots the old one, and its row and record say exactly that (not "ok"), with the commands to go
    back or keep the fix. A no at the offer to go back leaves it so; exit 1."""
    fleet = fleet_of(tmp_path, *NAMES, web2=FakeHost(healthy={OLD}))
    with pytest.raises(DeployFailed, match="^web2: rolled back: check unit app.service") as failed:
        run(fleet, True, False)
    assert failed.value.exit_code == 1
    assert fleet.asked() == [TEST_QUESTION, (BACK_QUESTION.format("web1"), ())]  # no switch question
    assert fleet.steps("web2") == PROBED + ["lock", "facts", "arm", "activate test", "confirm*", "activate test",
                                            "facts", "unit", "facts", "unlock"]  # back to what ran
    assert not any("set-profile" in fleet.steps(n) for n in NAMES)
    assert (fleet.fakes["web2"].running, fleet.fakes["web2"].profile) == (OLD, 1)
    assert (fleet.fakes["web1"].running, fleet.fakes["web1"].profile) == (NEW, 1)  # tested, left so on request
    assert outcomes(failed.value) == {"web1": "not started", "web2": "rolled back"}
    web1 = failed.value.report.results[0]
    assert web1.message.startswith("not switched: web2 failed the test activation: it runs the test-activated system "
                                   "nixos-system-web1-1.1 and boots the old one (generation 1, nixos-system-web1-1.0): "
                                   "its next boot goes back. Back now: invoke rollback --host web1 --generation 1")
    assert web1.message.endswith("to keep the fix: invoke switch --host web1")
    assert (web1.new_system, web1.generation) == (NEW, 1)
    records = [r for r in read_local(tmp_path / "journal.jsonl") if r.host == "web1" and r.outcome != "started"]
    assert [(r.action, r.outcome) for r in records] == [("emergency-test", "ok"), ("emergency-switch", "not started")]
    assert records[-1].message == web1.message and records[-1].after_path == NEW


def test_after_a_failed_test_yes_puts_the_others_back_on_their_booted_system(tmp_path):
    """Yes at the offer (as --yes answers it): web1 goes back to its boot entry's system with a
    test activation under the lock, journalled as emergency-back; every host runs what it boots."""
    fleet = fleet_of(tmp_path, *NAMES, web2=FakeHost(fail={"activate test"}))
    with pytest.raises(DeployFailed, match=r"^web2: rolled back: test failed \(exit 1\)") as failed:
        run(fleet, True, True)
    assert failed.value.exit_code == 1
    assert fleet.asked() == [TEST_QUESTION, (BACK_QUESTION.format("web1"), ())]
    assert all((f.running, f.profile) == (OLD, 1) for f in fleet.fakes.values())
    assert outcomes(failed.value) == {"web1": "not started", "web2": "rolled back"}
    web1 = failed.value.report.results[0]
    assert web1.message == ("not switched: web2 failed the test activation; back on the booted system "
                            "(nixos-system-web1-1.0, generation 1), as before the emergency")
    assert (web1.new_system, web1.generation) == (OLD, 1)
    assert [(a, o) for h, a, o in fleet.journal() if h == "web1"] == [
        ("emergency-test", "ok"), ("emergency-switch", "not started"), ("emergency-back", "ok")]
    assert [(a, o) for h, a, o in fleet.journal() if h == "web2"] == [("emergency-test", "rolled back")]


def test_a_test_activation_that_fails_is_rolled_back_and_nothing_is_switched(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, web1=FakeHost(fail={"activate test"}))
    with pytest.raises(DeployFailed, match=r"^web1: rolled back: test failed \(exit 1\)"):
        run(fleet, True, True)
    assert fleet.asked() == [TEST_QUESTION, (BACK_QUESTION.format("web2"), ())]
    assert fleet.fakes["web1"].running == OLD and fleet.fakes["web2"].running == OLD


def test_a_no_at_the_switch_is_journalled_with_what_the_host_runs(tmp_path):
    """Not the engine's "declined; nothing changed": the host runs the tested system."""
    fleet = fleet_of(tmp_path, *NAMES)
    with pytest.raises(DeployFailed) as failed:
        run(fleet, True, False, False)
    records = [r for r in read_local(tmp_path / "journal.jsonl") if r.action == "emergency-switch"]
    assert [(r.host, r.outcome) for r in records] == [("web1", "declined"), ("web2", "declined")]
    for record, row in zip(records, failed.value.report.results):
        assert record.message == row.message and "nothing changed" not in record.message
        assert "runs the test-activated system" in record.message and record.after_path == NEW


def test_a_switch_that_fails_goes_back_to_what_ran_before_the_test(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, web1=FakeHost(fail={"activate boot"}))
    with pytest.raises(DeployFailed, match=r"^web1: rolled back: switch passed its checks, but making it the boot "
                                           r"entry failed \(exit 1\)") as failed:
        run(fleet, True, True, follow=5)
    assert (fleet.fakes["web1"].running, fleet.fakes["web1"].profile) == (OLD, 1)
    assert outcomes(failed.value) == {"web1": "rolled back", "web2": "ok"}
    assert not any("journalctl --follow" in fleet.steps(n) for n in NAMES)  # no follow after a failure


def test_ctrl_c_at_the_switch_question_switches_nothing(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    with pytest.raises(Interrupted, match="^interrupted; 2 not started$") as stop:
        run(fleet, True, KeyboardInterrupt)
    assert stop.value.exit_code == 130
    assert not any("set-profile" in fleet.steps(n) for n in NAMES)
    assert fleet.journal()[2:] == [("web1", "emergency-switch", "not started"),
                                   ("web2", "emergency-switch", "not started")]
