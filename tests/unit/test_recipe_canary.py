"""canary through the engine with FakeHosts: the canary alone first, then a second question
naming the rest, then the rest one at a time; and what stops it, at each stage."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nixtasks.errors import CommandFailed, DeployFailed, HostUnreachable, Interrupted, Refused
from nixtasks.host.prompts import NoTerminal
from nixtasks.models import Policy
from nixtasks.recipes import canary

from .flows import DEFAULT, NEW, OLD, DownHost, FakeHost, TurnsUnhealthy, fleet_of, hosts, outcomes, request

NAMES = ("web1", "web2", "db1")
HOSTS = hosts(*NAMES, canary=("web1",))
PROBED = ["facts", "xargs -r"]  # read, and what of the closure the host lacks (before the plan)
SWITCHED = ["lock", "facts", "arm", "activate test", "confirm*", "unit-map", "set-profile", "activate boot", "unit-map",
            "facts", "unlock"]
ROLLED_BACK = ["lock", "facts", "arm", "activate test", "confirm*", "activate test", "facts", "unit", "facts",
               "unlock"]
FIRST = ("Canary: switch web1 first (1 host)?", ("web1",))
REST = ("The canary is healthy. Switch the rest: web2, db1 (2 hosts)?", ("web2", "db1"))


def run(fleet, *answers, policy: Policy = DEFAULT, soak: float = 0.0):
    return canary.canary(request(HOSTS, policy), fleet.tools(*answers), soak=soak)


def test_the_canary_goes_alone_then_the_rest_one_at_a_time_after_a_second_question(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    report = run(fleet, True, True)
    assert fleet.asked() == [FIRST, REST]
    assert {n: fleet.steps(n) for n in NAMES} == {n: PROBED + SWITCHED for n in NAMES}
    assert fleet.locked() == ["web1", "web2", "db1"]
    assert fleet.when("web1", "unlock") < fleet.when("web2", "lock")  # the canary was done before
    assert fleet.when("web2", "unlock") < fleet.when("db1", "lock")  # the rest: one host at a time
    assert outcomes(report) == {n: "ok" for n in NAMES} and report.ok
    assert fleet.journal() == [(n, "switch", "ok") for n in NAMES]
    assert "  canary:   web1 first; then, after a second approval, web2, db1" in fleet.said
    assert ("  batches:  web1 first (the canary), then 2, one after another, up to 1 host(s) at a time\n"
            "    1: web2\n    2: db1\n") in fleet.text()
    assert "  canary:   web1 first; then, after a second approval, web2, db1" in fleet.text()


def test_a_no_for_the_canary_changes_nothing_and_asks_nothing_more(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    with pytest.raises(Refused, match="^not approved for web1; nothing was changed on any host; not started: "
                                      "web2, db1$") as failed:
        run(fleet, False)
    assert failed.value.exit_code == 3  # a no that changed nothing, as for a plain deploy
    assert fleet.asked() == [FIRST] and fleet.locked() == []
    assert fleet.journal() == [("web1", "switch", "declined"), ("web2", "switch", "not started"),
                               ("db1", "switch", "not started")]
    assert "the canary was not approved" in fleet.text()


def test_a_no_for_the_rest_leaves_the_canary_on_the_new_system_and_exits_1(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    with pytest.raises(DeployFailed, match=r"^not approved for web2, db1; this run changed web1 \(ok\) before that, "
                                           "so the selection is only partly done") as refused:
        run(fleet, True, False)
    assert refused.value.exit_code == 1  # not "nothing changed": the canary runs the new system
    assert fleet.asked() == [FIRST, REST] and fleet.locked() == ["web1"]
    assert fleet.fakes["web1"].running == NEW and fleet.fakes["web2"].running == OLD
    assert fleet.journal() == [("web1", "switch", "ok"), ("web2", "switch", "declined"), ("db1", "switch", "declined")]


def test_a_subset_of_the_rest_goes_out_and_the_others_are_not_selected(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    report = run(fleet, True, ["db1"])
    assert report.ok and outcomes(report) == {"web1": "ok", "web2": "not selected", "db1": "ok"}
    assert fleet.locked() == ["web1", "db1"] and fleet.steps("web2") == PROBED
    assert ("web2", "switch", "not selected") in fleet.journal()


def test_without_a_terminal_it_refuses_before_the_build(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    tools = replace(fleet.tools(), prompter=NoTerminal())
    with pytest.raises(Refused, match="^switch on web1, web2, db1 needs an approval and there is no terminal"):
        canary.canary(request(HOSTS), tools)
    assert fleet.runner.calls == []  # not even a probe
    assert fleet.journal() == [(n, "switch", "refused") for n in NAMES]


def test_a_canary_that_fails_its_checks_is_rolled_back_and_the_rest_never_start(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, web1=FakeHost(healthy={OLD}))
    with pytest.raises(DeployFailed, match="^web1: rolled back: check unit app.service") as failed:
        run(fleet, True, True)
    assert fleet.asked() == [FIRST]  # no second question
    assert fleet.steps("web1") == PROBED + ROLLED_BACK and fleet.fakes["web1"].running == OLD
    assert fleet.locked() == ["web1"]
    assert outcomes(failed.value) == {"web1": "rolled back", "web2": "not started", "db1": "not started"}
    assert failed.value.report.results[1].message == "not started: the canary failed"
    assert fleet.journal() == [("web1", "switch", "rolled back"), ("web2", "switch", "not started"),
                               ("db1", "switch", "not started")]


def test_a_canary_whose_activation_fails_is_rolled_back_after_its_watchdog_is_disarmed(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, web1=FakeHost(fail={"activate test"}))
    with pytest.raises(DeployFailed, match="^web1: rolled back: switch failed"):
        run(fleet, True, True)
    steps = fleet.steps("web1")
    assert "activate test" in steps[steps.index("confirm*"):]  # the old system's, after the watchdog is off
    assert "set-profile" not in steps and fleet.fakes["web1"].profile == 1
    assert fleet.asked() == [FIRST] and fleet.locked() == ["web1"]


def test_a_locked_canary_stops_the_canary(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, web1=FakeHost(holder="who=ann@laptop,action=switch"))
    with pytest.raises(DeployFailed, match=r"^web1: locked: locked by another deploy \(who=ann@laptop") as failed:
        run(fleet, True, True)
    assert fleet.steps("web1") == PROBED + ["lock", "facts"] and fleet.asked() == [FIRST]  # re-read as it is
    assert outcomes(failed.value) == {"web1": "locked", "web2": "not started", "db1": "not started"}


def test_a_host_of_the_rest_that_fails_halts_the_hosts_after_it(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, web2=FakeHost(healthy={OLD}))
    with pytest.raises(DeployFailed, match="^web2: rolled back") as failed:
        run(fleet, True, True)
    assert outcomes(failed.value) == {"web1": "ok", "web2": "rolled back", "db1": "not started"}
    assert fleet.steps("web2") == PROBED + ROLLED_BACK and fleet.steps("db1") == PROBED
    # batch 1 of the rest
    assert failed.value.report.results[2].message.startswith("not started: batch 1 failed (1 of 1 host(s)")


def test_a_canary_unhealthy_during_its_soak_is_rolled_back_and_the_rest_never_start(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, web1=TurnsUnhealthy(good=1))
    with pytest.raises(DeployFailed, match=r"^web1: rolled back: unhealthy during the soak \(web1: check unit "
                                           "app.service") as failed:
        run(fleet, True, True, soak=30)
    assert fleet.asked() == [FIRST]
    assert fleet.steps("web1")[len(PROBED + SWITCHED):] == [
        "unit", "facts",  # the soak's first look finds it
        "lock", "switch-generation 1", "activate switch", "facts", "unit", "facts", "unlock"]
    assert fleet.fakes["web1"].running == OLD
    assert outcomes(failed.value) == {"web1": "rolled back", "web2": "not started", "db1": "not started"}
    assert failed.value.report.results[1].message == "not started: the canary turned unhealthy during its soak"


def test_a_soak_that_stays_healthy_asks_for_the_rest(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    assert run(fleet, True, True, soak=0.01).ok
    assert "soak: checking web1 for 0.01 s" in fleet.said and fleet.asked() == [FIRST, REST]


def test_an_unreachable_canary_stops_everything_before_the_question(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, web1=DownHost())
    with pytest.raises(DeployFailed, match="^not started: web2, db1; skipped as unreachable: web1$") as failed:
        run(fleet, True, True, policy=Policy(skip_unreachable=True))
    assert fleet.asked() == [] and fleet.locked() == []
    assert failed.value.report.results[1].message == "not started: the canary web1 could not be reached"
    assert outcomes(failed.value)["web1"] == "skipped"


def test_an_unreachable_host_without_skip_unreachable_stops_before_any_copy(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, web2=DownHost())
    with pytest.raises(HostUnreachable, match="^web2: cannot reach the host over ssh.*nothing was changed on any"):
        run(fleet, True, True)
    assert fleet.asked() == [] and fleet.locked() == []
    assert not [s for s in fleet.deployer() if s.startswith("copy")]


def test_a_canary_whose_system_could_not_be_made_stops_the_canary(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    fleet.unevaluable = {"web1"}
    with pytest.raises(DeployFailed, match="^web1: failed: its evaluation failed") as failed:
        run(fleet, True, True, policy=Policy(keep_going=True))
    assert fleet.asked() == [] and fleet.locked() == []
    assert failed.value.report.results[1].message == ("not started: the canary web1 could not be reached or its "
                                                      "system could not be made (--keep-going)")


def test_a_failed_build_stops_before_any_host_is_asked_or_changed(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    fleet.build_fails = True
    with pytest.raises(CommandFailed, match="^build: `nix-store` failed with exit code 1"):
        run(fleet, True, True)
    assert fleet.asked() == [] and fleet.locked() == []
    assert {n: fleet.steps(n) for n in NAMES} == {n: ["facts"] for n in NAMES}  # probed beside the build only


def test_a_failed_copy_stops_before_any_host_is_asked_or_changed(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    fleet.uncopyable = {"web2"}
    with pytest.raises(CommandFailed, match="^web2: `nix copy` failed with exit code 1"):
        run(fleet, True, True)
    assert fleet.asked() == [] and fleet.locked() == []


def test_ctrl_c_during_the_build_reports_every_host_not_started(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    fleet.interrupt_build = True
    with pytest.raises(Interrupted, match="^interrupted during the build; nothing was changed on any host$") as stop:
        run(fleet, True, True)
    assert stop.value.exit_code == 130 and fleet.asked() == [] and fleet.locked() == []
    assert fleet.journal() == [(n, "switch", "not started") for n in NAMES]


def test_ctrl_c_at_the_second_question_keeps_the_canary_and_starts_nothing_more(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    with pytest.raises(Interrupted, match="^interrupted; 1 ok, 2 not started$") as stop:
        run(fleet, True, KeyboardInterrupt)
    assert fleet.locked() == ["web1"]
    assert outcomes(stop.value) == {"web1": "ok", "web2": "not started", "db1": "not started"}
    assert stop.value.report.results[1].message == "interrupted at the question"
    assert fleet.journal() == [("web1", "switch", "ok"), ("web2", "switch", "not started"),
                               ("db1", "switch", "not started")]
