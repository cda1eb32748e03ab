"""blue-green through the engine and fleet/reboot.py with rebooting FakeHosts: the group's boot
entry set, each host rebooted, waited for and checked, then a question before the traffic hook;
a host that does not come back or fails its checks, and traffic never moves."""

from __future__ import annotations

import pytest

from nixtasks.errors import DeployFailed, NixtasksError, Refused
from nixtasks.fleet import reboot
from nixtasks.models import Policy
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
    assert sorted(fleet.journal()) == [("web1", "blue-green", "ok")] * 2 + [("web2", "blue-green", "ok")] * 2
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


def test_a_no_at_the_traffic_question_leaves_traffic_and_the_booted_group(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True)
    with pytest.raises(Refused, match="^traffic was not switched to blue; blue runs the new system, the other "
                                      "group the old$") as refused:
        run(fleet, True, False)
    assert refused.value.exit_code == 3 and fleet.hooks == []
    assert all(f.running == NEW for f in fleet.fakes.values())


def test_ctrl_c_at_the_traffic_question_is_a_no(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True)
    with pytest.raises(Refused, match="^traffic was not switched to blue"):
        run(fleet, True, KeyboardInterrupt)
    assert fleet.hooks == []


def test_a_host_whose_boot_fails_stops_before_any_reboot(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True, web2=RebootingHost(fail={"activate boot"}))
    with pytest.raises(DeployFailed, match=r"^web2: rolled back: boot failed \(exit 1\)") as failed:
        run(fleet, True, True)
    assert outcomes(failed.value) == {"web1": "ok", "web2": "rolled back"}
    assert all(f.reboots == 0 for f in fleet.fakes.values()) and fleet.asked() == [BOOT_QUESTION]
    assert fleet.hooks == []
    assert fleet.fakes["web2"].profile == 1
    assert fleet.fakes["web1"].profile == 2  # web1 keeps the new boot entry: see the report


def test_a_host_that_does_not_come_back_keeps_traffic_where_it_is(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True, web2=RebootingHost(comes_back=False))
    with pytest.raises(DeployFailed, match=r"^web2: failed: did not answer with a new boot id within 0.05 s of its "
                                           "reboot; it cannot be booted back from here") as failed:
        run(fleet, True, True, timeout=0.05)
    assert outcomes(failed.value) == {"web1": "ok", "web2": "failed"}
    rebooting = PROBED + BOOTED + ["lock", "hold", BOOT_ID, "systemctl reboot"]
    assert fleet.steps("web2")[:len(rebooting)] == rebooting
    # asked until the time was up; then its lock is let go (the hold and whatever unit is left)
    assert set(fleet.steps("web2")[len(rebooting):-2]) == {BOOT_ID_FRESH}
    assert fleet.steps("web2")[-2:] == ["unhold", "unlock"]
    assert fleet.asked() == [BOOT_QUESTION] and fleet.hooks == []
    assert "traffic stays where it is: blue did not come back healthy as a whole" in fleet.said
    assert ("web2", "blue-green", "failed") in fleet.journal()


def test_a_host_that_fails_its_checks_after_the_reboot_is_booted_back(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, rebooting=True, web2=RebootingHost(healthy={OLD}))
    with pytest.raises(DeployFailed, match="^web2: rolled back: check unit app.service.*; booted back into "
                                           "generation 1$") as failed:
        run(fleet, True, True)
    assert fleet.steps("web2") == PROBED + BOOTED + REBOOTED[:-2] + [
        "switch-generation 1", "activate boot", BOOT_ID, "systemctl reboot", BOOT_ID_FRESH, "facts*", "unhold",
        "unlock"]
    assert (fleet.fakes["web2"].running, fleet.fakes["web2"].profile, fleet.fakes["web2"].reboots) == (OLD, 1, 2)
    assert outcomes(failed.value) == {"web1": "ok", "web2": "rolled back"}
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
