"""blue-green through the engine and fleet/reboot.py with rebooting FakeHosts: the group's boot
entry set, each host rebooted, waited for and checked, then a question before the traffic hook;
a host that does not come back or fails its checks, and traffic never moves."""

from __future__ import annotations

import pytest

from nixtasks.actions.journal import read_local
from nixtasks.errors import DeployFailed, Interrupted, NixtasksError, Refused
from nixtasks.fleet import reboot
from nixtasks.models import Policy, Stage
from nixtasks.recipes import blue_green

from .flows import DEFAULT, NEW, OLD, DownHost, RebootingHost, fleet_of, host, outcomes, request

NAMES = ("web1", "web2")
BLUE = tuple(host(n, tags=("blue",)) for n in NAMES)
HOOK = "lb --to {to} {hosts}"
PROBED = ["facts", "xargs -r"]
# The lock reserved across the reboot (an on-disk hold beside the lock unit), then the boot deploy
BOOTED = ["lock", "hold", "unlock", "lock", "facts", "set-profile", "activate boot", "unlock"]
BOOT_ID, BOOT_ID_FRESH = "cat /proc/sys/kernel/random/boot_id", "cat /proc/sys/kernel/random/boot_id*"
# the lock unit goes with the reboot, the hold stays: taken and renewed before it, the unit taken again
# for the checks once the host is back, and both let go at the end
REBOOTED = ["lock", "hold", BOOT_ID, "systemctl reboot", BOOT_ID_FRESH, "facts*", "lock", "unit", "facts", "unhold",
            "unlock"]
BOOT_QUESTION = ("Boot the new system on blue (web1, web2) and reboot them?", NAMES)
TRAFFIC_QUESTION = ("blue (web1, web2) runs the new system and is healthy. Switch traffic to blue?", ())


@pytest.fixture(autouse=True)
def no_wait_between_polls(monkeypatch):
    monkeypatch.setattr(reboot, "POLL", 0)


def run(fleet, *answers, hook: str = HOOK, timeout: float = 5.0, policy: Policy = DEFAULT, hosts=BLUE):
    return blue_green.blue_green(request(hosts, policy), fleet.tools(*answers), "blue", hook, timeout)


def test_boot_reboot_check_then_ask_then_switch_traffic(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True)
    report = run(fleet, True, True)
    assert fleet.asked() == [BOOT_QUESTION, TRAFFIC_QUESTION]
    assert {n: fleet.steps(n) for n in NAMES} == {n: PROBED + BOOTED + REBOOTED for n in NAMES}
    assert fleet.hooks == ["lb --to blue web1 web2"]
    assert all((f.running, f.profile, f.reboots) == (NEW, 2, 1) for f in fleet.fakes.values())
    assert outcomes(report) == {"web1": "ok", "web2": "ok"} and report.ok
    # one record per host (the boot's ok waits for the reboot's), not one for each step
    assert sorted(fleet.journal()) == [("web1", "blue-green", "ok"), ("web2", "blue-green", "ok")]
    assert "traffic switched to blue; the other group is left for a later run" in fleet.said


def test_without_a_traffic_hook_nothing_is_asked_after_the_reboot(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True)
    assert run(fleet, True, hook="").ok
    assert fleet.asked() == [BOOT_QUESTION] and fleet.hooks == []
    assert "(no switch_traffic in [blue_green]: by hand)" in fleet.text()


def test_a_no_at_the_boot_question_boots_nothing_and_exits_3(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True)
    with pytest.raises(Refused, match="^not approved for web1, web2; nothing was changed on any host$"):
        run(fleet, False)
    assert fleet.locked() == [] and fleet.hooks == []
    assert fleet.journal() == [("web1", "blue-green", "declined"), ("web2", "blue-green", "declined")]


def test_a_chosen_subset_of_the_group_is_refused_before_anything_changes(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True)
    with pytest.raises(Refused, match=r"^blue-green boots blue as a whole \(web1, web2\), not a chosen subset; "
                                      "nothing was changed"):
        run(fleet, ["web1"])
    assert fleet.locked() == [] and {n: fleet.steps(n) for n in NAMES} == {n: PROBED for n in NAMES}


def test_a_no_at_the_traffic_question_says_what_runs_and_how_to_switch_and_exits_1(tmp_path):
    """The hosts were rebooted into the new release: not "nothing was changed" (exit 3)."""
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True)
    with pytest.raises(DeployFailed, match=r"^traffic was not switched to blue \(declined\); blue \(web1, web2\) runs "
                                           "and boots the new system, the other group the old. To switch traffic, run "
                                           "on the deployer: lb --to blue web1 web2$") as failed:
        run(fleet, True, False)
    assert failed.value.exit_code == 1 and fleet.hooks == []
    assert all((f.running, f.profile) == (NEW, 2) for f in fleet.fakes.values())
    assert outcomes(failed.value) == {"web1": "declined", "web2": "declined"}
    row = failed.value.report.results[0]
    assert (row.new_system, row.generation) == (NEW, 2)
    assert row.message == ("runs and boots the new system (generation 2), healthy; traffic was NOT switched to blue "
                           "(declined): to switch it, run on the deployer: lb --to blue web1 web2")
    # one record per host: its reboot's ok waited for the answer, and says how it ended
    records = [r for r in read_local(tmp_path / "journal.jsonl") if r.host == "web1" and r.outcome != "started"]
    assert [r.outcome for r in records] == ["declined"] and records[-1].message == row.message


def test_ctrl_c_at_the_traffic_question_leaves_traffic_and_exits_130(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True)
    with pytest.raises(Interrupted, match="^interrupted; 2 declined$") as stop:
        run(fleet, True, KeyboardInterrupt)
    assert stop.value.exit_code == 130 and stop.value.report.interrupted and fleet.hooks == []
    assert all(f.running == NEW for f in fleet.fakes.values())  # the group stays on the new system, said so
    assert all("traffic was NOT switched to blue (Ctrl-C at the question)" in r.message
               for r in stop.value.report.results)
    assert [o for h, _a, o in fleet.journal() if h == "web1"][-1] == "declined"


def test_the_plan_says_what_a_failure_does_to_the_group(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True)
    run(fleet, True, True)
    assert ("  on a failure: blue goes back as a whole: every host's boot entry is set back to its previous "
            "generation, and a host already rebooted is rebooted into it; traffic stays") in fleet.said
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True)
    run(fleet, True, True, policy=Policy(rollback=False))
    assert ("  on a failure: every host is LEFT AS IT IS (--no-rollback): one whose boot went fine boots the new "
            "system at its next boot; traffic stays. To undo, per host: web1: invoke rollback --host web1 "
            "--generation 1; web2: invoke rollback --host web2 --generation 1") in fleet.said


def test_a_host_whose_boot_fails_sets_the_groups_boot_entries_back_before_any_reboot(tmp_path):
    """web1's boot went fine; web2's failed: web1 must not boot the failed release at its next
    reboot. Its boot entry is set back (under its lock, which its hold admits), one record."""
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True, web2=RebootingHost(fail={"activate boot"}))
    with pytest.raises(DeployFailed, match=r"^web2: rolled back: boot failed \(exit 1\).*; blue went back as a whole "
                                           r"\(web1 too: see the report\); traffic stays where it is$") as failed:
        run(fleet, True, True)
    assert failed.value.exit_code == 1
    assert outcomes(failed.value) == {"web1": "rolled back", "web2": "rolled back"}
    assert all((f.reboots, f.profile, f.running) == (0, 1, OLD) for f in fleet.fakes.values())
    assert fleet.steps("web1") == PROBED + BOOTED + ["lock", "switch-generation 1", "activate boot", "facts", "unlock",
                                                     "unhold", "unlock"]
    web1 = failed.value.report.results[0]
    assert web1.message.startswith("its boot entry was set to the new system, but its group goes as a whole and web2 "
                                   "failed (web2: rolled back: boot failed (exit 1)")
    assert web1.message.endswith("; its boot entry is set back to generation 1: it runs and boots "
                                 "nixos-system-web1-1.0 as before")
    assert (web1.new_system, web1.generation, web1.previous_generation, web1.tried_system) == (OLD, 1, 1, NEW)
    assert web1.stages[-1][0] is Stage.ROLLBACK  # the way back is timed too
    assert fleet.asked() == [BOOT_QUESTION] and fleet.hooks == []
    assert fleet.journal() == [("web2", "blue-green", "rolled back"), ("web1", "blue-green", "rolled back")]
    assert fleet.locked() == ["web1", "web2"] and fleet.steps("web2")[-2:] == ["unhold", "unlock"]


def test_with_no_rollback_a_failed_boot_leaves_the_others_booting_the_new_system_and_says_so(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True, web2=RebootingHost(fail={"activate boot"}))
    with pytest.raises(DeployFailed, match=r"^web2: failed: boot failed"):
        run(fleet, True, True, policy=Policy(rollback=False))
    assert fleet.fakes["web1"].profile == 2 and fleet.fakes["web1"].reboots == 0
    web1 = [r for r in read_local(tmp_path / "journal.jsonl") if r.host == "web1" and r.outcome != "started"]
    assert [r.outcome for r in web1] == ["ok"]
    assert web1[0].message.endswith("; kept though web2 failed (--no-rollback): it boots the new system at its next "
                                    "boot; undo: invoke rollback --host web1 --generation 1")


def test_a_host_that_cannot_be_kept_for_the_reboot_stops_the_group_before_anything_is_booted(tmp_path):
    holder = "who=bob@x,action=switch,pid=1,since=x"
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True, web2=RebootingHost(holder=holder))
    with pytest.raises(DeployFailed, match=r"^web2: locked: locked by another deploy") as failed:
        run(fleet, True, True)
    assert outcomes(failed.value) == {"web2": "locked", "web1": "not started"}
    assert failed.value.report.results[1].message == ("not started: web2 could not be kept for the reboot, and "
                                                      "blue-green boots blue as a whole; nothing changed")
    assert "activate boot" not in fleet.steps("web1") and fleet.fakes["web1"].profile == 1
    assert fleet.steps("web1")[-2:] == ["unhold", "unlock"]


def test_a_host_that_does_not_come_back_keeps_traffic_where_it_is_and_boots_the_group_back(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True, web2=RebootingHost(comes_back=False))
    with pytest.raises(DeployFailed, match=r"^web2: failed: did not answer with a new boot id within 0.05 s of its "
                                           "reboot; it cannot be booted back from here") as failed:
        run(fleet, True, True, timeout=0.05)
    assert outcomes(failed.value) == {"web1": "rolled back", "web2": "failed"}
    rebooting = PROBED + BOOTED + ["lock", "hold", BOOT_ID, "systemctl reboot"]
    assert fleet.steps("web2")[:len(rebooting)] == rebooting
    # asked until the time was up; then its lock is let go (the hold and whatever unit is left)
    assert set(fleet.steps("web2")[len(rebooting):-2]) == {BOOT_ID_FRESH}
    assert fleet.steps("web2")[-2:] == ["unhold", "unlock"]
    # web1 came back healthy on the new system, and goes back with its group
    assert (fleet.fakes["web1"].running, fleet.fakes["web1"].profile, fleet.fakes["web1"].reboots) == (OLD, 1, 2)
    assert fleet.asked() == [BOOT_QUESTION] and fleet.hooks == []
    assert "traffic stays where it is: blue did not come back healthy as a whole" in fleet.said
    assert ("web2", "blue-green", "failed") in fleet.journal()


def test_a_host_that_fails_its_checks_after_the_reboot_is_booted_back_with_its_group(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True, web2=RebootingHost(healthy={OLD}))
    with pytest.raises(DeployFailed, match="^web2: rolled back: check unit app.service.*; booted back into "
                                           r"generation 1; blue went back as a whole \(web1 too: see the report\); "
                                           "traffic stays where it is$") as failed:
        run(fleet, True, True)
    boot_back = ["switch-generation 1", "activate boot", BOOT_ID, "systemctl reboot", BOOT_ID_FRESH, "facts*"]
    assert fleet.steps("web2") == PROBED + BOOTED + REBOOTED[:-2] + boot_back + ["unhold", "unlock"]
    # web1 passed its checks, then its hold is renewed for one more reboot, into its old entry
    assert fleet.steps("web1") == PROBED + BOOTED + REBOOTED[:-2] + ["lock", "hold"] + boot_back + ["unhold",
                                                                                                  "unlock"]
    assert all((f.running, f.profile, f.reboots) == (OLD, 1, 2) for f in fleet.fakes.values())
    assert outcomes(failed.value) == {"web1": "rolled back", "web2": "rolled back"}
    web1 = failed.value.report.results[0]
    assert web1.message == ("rebooted into the new system, but its group goes as a whole and web2 failed (web2: rolled "
                            "back: check unit app.service: exit 3: failed (after 1 tries)); booted back into "
                            "generation 1")
    assert (web1.new_system, web1.generation, web1.previous_generation) == (OLD, 1, 1)
    # one record per host for the reboot step, with how it ended
    assert sorted(fleet.journal()) == [("web1", "blue-green", "rolled back"), ("web2", "blue-green", "rolled back")]
    assert fleet.asked() == [BOOT_QUESTION] and fleet.hooks == []


def test_an_unreachable_host_skipped_means_traffic_is_not_switched(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True, web2=DownHost())
    # finish() raises for the skipped host before the recipe's own "traffic was not switched" error
    with pytest.raises(DeployFailed, match=r"^skipped as unreachable \(--skip-unreachable\): web2; nothing was "
                                           "changed there") as failed:
        run(fleet, True, True, policy=Policy(skip_unreachable=True))
    assert outcomes(failed.value) == {"web2": "skipped", "web1": "ok"}
    assert fleet.asked() == [("Boot the new system on blue (web1) and reboot it?", ("web1",))]
    assert fleet.steps("web1") == PROBED + BOOTED + REBOOTED and fleet.hooks == []
    assert "traffic stays where it is: blue did not come back healthy as a whole (web2 could not be reached)" \
        in fleet.said


def test_a_traffic_hook_that_fails_is_the_error(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True)
    fleet.hook_fails = True
    with pytest.raises(NixtasksError, match="^switch_traffic: `sh` failed with exit code 1: lb: refused$"):
        run(fleet, True, True)
    assert fleet.hooks == ["lb --to blue web1 web2"]
    assert "traffic switched to blue; the other group is left for a later run" not in fleet.said
