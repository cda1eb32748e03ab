"""stage and apply through the engine with FakeHosts: stage builds, copies and writes a sealed
plan without a question or a lock; apply activates exactly the plan's store paths after one
question, evaluates nothing, and refuses a plan whose hosts changed since."""

from __future__ import annotations

import json

import pytest

from nixtasks.actions import seal
from nixtasks.errors import DeployFailed, NixtasksError, Refused
from nixtasks.models import Action
from nixtasks.recipes import stage

from .flows import NEW, OLD, FakeHost, fleet_of, hosts, outcomes, request

NAMES = ("web1", "web2")
HOSTS = hosts(*NAMES)
STAGED = "/nix/store/" + "d" * 32 + "-nixos-system-staged"
CHECKED = ["facts", "nix-store --check-validity", "test -f", "nix --extra-experimental-features"]  # given paths
SWITCHED = ["lock", "facts", "arm", "activate test", "confirm*", "unit-map", "set-profile", "activate boot", "unit-map",
            "facts", "unlock"]


@pytest.fixture(autouse=True)
def plan_key(tmp_path, monkeypatch):
    monkeypatch.setenv("NIXTASKS_PLAN_KEY", str(tmp_path / "plan-key"))


def staged_plan(action: Action = Action.SWITCH, running: str = OLD, generation: int | None = 1) -> stage.StagedPlan:
    return stage.StagedPlan(action, "c" * 40, False, "2026-12-01T10:00:00+00:00",
                            {n: stage.StagedHost(STAGED, running, generation) for n in NAMES})


def staged_fleet(tmp_path, **fakes: FakeHost):
    """Hosts whose checks pass on the staged system too."""
    return fleet_of(tmp_path, *NAMES, **{n: fakes.get(n) or FakeHost(healthy={OLD, STAGED}) for n in NAMES})


def test_stage_builds_copies_and_writes_a_sealed_plan_without_asking_or_locking(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    plan_file = tmp_path / "plan.json"
    plan = stage.stage(request(HOSTS), fleet.tools(), plan_file)
    assert fleet.prompter.asked == [] and fleet.locked() == []
    assert {n: fleet.steps(n) for n in NAMES} == {n: ["facts", "xargs -r"] for n in NAMES}  # nothing activated
    assert "nix-store --realise" in fleet.deployer()
    assert {n: h.system for n, h in plan.hosts.items()} == {"web1": NEW, "web2": NEW}
    written = json.loads(plan_file.read_text())
    assert written["hosts"]["web1"] == {"system": NEW, "running": OLD, "generation": 1}
    again = stage.parse_plan(plan_file.read_text(), "plan.json", seal.load_key(seal.key_path(), make=False))
    assert again == plan  # sealed with this deployer's key
    assert f"plan written to {plan_file}: 2 host(s), each closure already on its host. Apply exactly these " \
           f"systems with: invoke apply {plan_file}" in fleet.said
    assert not (tmp_path / "journal.jsonl").exists()


def test_apply_activates_exactly_the_staged_paths_after_one_question_and_evaluates_nothing(tmp_path):
    fleet = staged_fleet(tmp_path)
    report = stage.apply(request(HOSTS), fleet.tools(True), staged_plan())
    assert fleet.deployer() == []  # no evaluation, no build, no copy
    assert fleet.asked() == [("Switch web1, web2 (2 hosts)?", NAMES)]
    assert {n: fleet.steps(n) for n in NAMES} == {n: CHECKED + SWITCHED for n in NAMES}
    assert all(f.running == STAGED for f in fleet.fakes.values())
    assert outcomes(report) == {"web1": "ok", "web2": "ok"}
    assert sorted(fleet.journal()) == [("web1", "switch", "ok"), ("web2", "switch", "ok")]
    assert "applying the plan of 2026-12-01T10:00:00+00:00 (git cccccccccccc): exactly its store paths, nothing " \
           "evaluated" in fleet.said
    assert f"  git:      {'c' * 12}" in fleet.text()  # the plan's revision, not HEAD's


def test_apply_takes_the_action_of_the_plan(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    report = stage.apply(request(HOSTS), fleet.tools(True), staged_plan(Action.BOOT))
    assert report.action is Action.BOOT and fleet.asked()[0][0] == "Set the boot entry of web1, web2 (2 hosts)?"
    assert all((f.running, f.generations[f.profile]) == (OLD, STAGED) for f in fleet.fakes.values())


def test_apply_of_a_plan_whose_host_changed_since_is_refused_before_the_question(tmp_path):
    other = "/nix/store/" + "e" * 32 + "-nixos-system-other"
    fleet = fleet_of(tmp_path, *NAMES, web2=FakeHost(generations={1: OLD, 2: other}, profile=2, running=other))
    with pytest.raises(NixtasksError, match=f"^web2 ran {OLD} \\(boot generation 1\\) when the plan was made and runs "
                                            f"{other} \\(boot generation 2\\) now: someone deployed in between") as err:
        stage.apply(request(HOSTS), fleet.tools(True), staged_plan())
    assert err.value.exit_code == 1 and "nothing was changed on any host" in str(err.value)
    assert fleet.prompter.asked == [] and fleet.locked() == []


def test_a_no_at_apply_changes_nothing(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES)
    with pytest.raises(Refused, match="^not approved for web1, web2"):
        stage.apply(request(HOSTS), fleet.tools(False), staged_plan())
    assert fleet.locked() == [] and all(f.running == OLD for f in fleet.fakes.values())


def test_a_host_that_fails_at_apply_is_rolled_back(tmp_path):
    fleet = staged_fleet(tmp_path, web1=FakeHost(healthy={OLD}))
    with pytest.raises(DeployFailed, match="^web1: rolled back: check unit app.service") as failed:
        stage.apply(request(HOSTS), fleet.tools(True), staged_plan())
    assert outcomes(failed.value) == {"web1": "rolled back", "web2": "ok"}
    assert fleet.fakes["web1"].running == OLD


def test_apply_of_a_path_gone_from_a_host_is_refused_before_the_question(tmp_path):
    fleet = fleet_of(tmp_path, *NAMES, web2=FakeHost(fail={"nix-store --check-validity"}))
    with pytest.raises(NixtasksError, match=f"^web2: the staged {STAGED} is no longer on the host "
                                            r"\(garbage-collected\?\); stage the plan again$"):
        stage.apply(request(HOSTS), fleet.tools(True), staged_plan())
    assert fleet.prompter.asked == [] and fleet.locked() == []
