"""rolling through the engine with FakeHosts: one question for every host, then one host at a
time (or the batches given), a halt at the first failure, Ctrl-C that lets the host under way
finish."""

from __future__ import annotations

import pytest

from nixtasks.errors import DeployFailed, Interrupted, Refused
from nixtasks.inventory import parse_sizes
from nixtasks.models import Policy
from nixtasks.recipes import rolling

from .flows import DEFAULT, NEW, OLD, CtrlCAt, DownHost, FakeHost, fleet_of, hosts, outcomes, request

NAMES = ("web1", "web2", "db1")
HOSTS = hosts(*NAMES)
PROBED = ["facts", "xargs -r"]
SWITCHED = ["lock", "facts", "arm", "activate test", "confirm*", "unit-map", "set-profile", "activate boot", "unit-map",
            "facts", "unlock"]
ASKED = ("Switch web1, web2, db1 (3 hosts)?", NAMES)


def run(fleet, *answers, policy: Policy = DEFAULT):
    return rolling.rolling(request(HOSTS, policy), fleet.tools(*answers))


def test_one_question_then_one_host_at_a_time(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    report = run(fleet, True)
    assert fleet.asked() == [ASKED]
    assert {n: fleet.steps(n) for n in NAMES} == {n: PROBED + SWITCHED for n in NAMES}
    assert fleet.when("web1", "unlock") < fleet.when("web2", "lock")
    assert fleet.when("web2", "unlock") < fleet.when("db1", "lock")
    assert outcomes(report) == {n: "ok" for n in NAMES} and report.ok
    assert fleet.journal() == [(n, "switch", "ok") for n in NAMES]
    assert ("  batches:  3, one after another, up to 1 host(s) at a time\n"
            "    1: web1\n    2: web2\n    3: db1\n") in fleet.text()


def test_batches_given_replace_one_at_a_time(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    assert run(fleet, True, policy=Policy(batches=parse_sizes("2"))).ok
    assert ("  batches:  2, one after another, up to 2 host(s) at a time\n"
            "    1: web1, web2\n    2: db1\n") in fleet.text()
    assert max(fleet.when("web1", "unlock"), fleet.when("web2", "unlock")) < fleet.when("db1", "lock")


def test_the_first_failure_halts_the_hosts_after_it(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, web2=FakeHost(fail={"activate test"}))
    with pytest.raises(DeployFailed, match="^web2: rolled back: switch failed") as failed:
        run(fleet, True)
    assert outcomes(failed.value) == {"web1": "ok", "web2": "rolled back", "db1": "not started"}
    assert failed.value.report.results[2].message == "not started: batch 2 failed (1 of 1 host(s), more than 0%)"
    assert fleet.locked() == ["web1", "web2"] and fleet.steps("db1") == PROBED
    assert (fleet.fakes["web1"].running, fleet.fakes["web2"].running) == (NEW, OLD)
    assert fleet.journal() == [("web1", "switch", "ok"), ("web2", "switch", "rolled back"),
                               ("db1", "switch", "not started")]


def test_a_host_that_fails_its_checks_is_rolled_back_and_halts(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, web1=FakeHost(healthy={OLD}))
    with pytest.raises(DeployFailed, match="^web1: rolled back: check unit app.service") as failed:
        run(fleet, True)
    assert outcomes(failed.value) == {"web1": "rolled back", "web2": "not started", "db1": "not started"}
    assert fleet.locked() == ["web1"]


def test_a_no_changes_nothing_and_exits_3(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    with pytest.raises(Refused, match="^not approved for web1, web2, db1; nothing was changed on any host$") as refused:
        run(fleet, False)
    assert refused.value.exit_code == 3 and fleet.locked() == []
    assert fleet.journal() == [(n, "switch", "declined") for n in NAMES]


def test_a_chosen_subset_goes_out_one_at_a_time(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    report = run(fleet, ["web1", "db1"])
    assert report.ok and outcomes(report) == {"web1": "ok", "web2": "not selected", "db1": "ok"}
    assert fleet.locked() == ["web1", "db1"] and fleet.when("web1", "unlock") < fleet.when("db1", "lock")


def test_an_unreachable_host_skipped_leaves_the_others_going_and_exits_1(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, web2=DownHost())
    with pytest.raises(DeployFailed, match=r"^skipped as unreachable \(--skip-unreachable\): web2; nothing was "
                                           "changed there") as failed:
        run(fleet, True, policy=Policy(skip_unreachable=True))
    assert fleet.asked() == [("Switch web1, db1 (2 hosts)?", ("web1", "db1"))]  # web2 is not asked about
    assert outcomes(failed.value) == {"web2": "skipped", "web1": "ok", "db1": "ok"}
    assert fleet.steps("web2") == ["facts"]
    assert sorted(fleet.journal()) == [("db1", "switch", "ok"), ("web1", "switch", "ok"), ("web2", "switch", "skipped")]


def test_a_locked_host_halts_the_rest(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, web1=FakeHost(holder="who=bob@ci,action=boot"))
    with pytest.raises(DeployFailed, match=r"^web1: locked: locked by another deploy \(who=bob@ci") as failed:
        run(fleet, True)
    assert outcomes(failed.value) == {"web1": "locked", "web2": "not started", "db1": "not started"}
    assert fleet.steps("web1") == PROBED + ["lock", "facts"]  # re-read, to report what it runs


def test_ctrl_c_while_a_host_activates_lets_it_finish_and_starts_no_other(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, web1=CtrlCAt(at="activate test"))
    with pytest.raises(Interrupted, match="^interrupted; 1 ok, 2 not started$") as stop:
        run(fleet, True)
    assert stop.value.exit_code == 130
    assert fleet.steps("web1") == PROBED + SWITCHED  # confirmed, checked and unlocked after the Ctrl-C
    assert fleet.locked() == ["web1"]
    assert outcomes(stop.value) == {"web1": "ok", "web2": "not started", "db1": "not started"}
    assert stop.value.report.results[1].message == "interrupted before it started"
    assert fleet.journal() == [("web1", "switch", "ok"), ("web2", "switch", "not started"),
                               ("db1", "switch", "not started")]
