"""update-deploy's failures and edges, with the deployer of test_approvals.py (which covers its
order, one question, a subset, a no, a lost canary and a moved HEAD): no terminal, a build that
fails or is interrupted before the question, no input changed, no host's system changed, and a
host that fails after the commit landed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nixtasks.errors import CommandFailed, DeployFailed, Interrupted, Refused
from nixtasks.host.prompts import NoTerminal
from nixtasks.host.runner import Result
from nixtasks.models import Command, Target
from nixtasks.recipes import update_deploy

from .test_approvals import NEW_LOCK, OLD_LOCK, REVISION, Fleet, fleet_of, moved, outcomes, request
from .test_pipeline import NEW, OLD


class Broken(Fleet):
    """The same deployer, whose build fails, or is interrupted, or whose update changes nothing."""

    def __init__(self, fleet: Fleet, *, build: str = "", unchanged: bool = False) -> None:
        super().__init__(fleet.flake, fleet.hosts)
        self.build, self.unchanged = build, unchanged

    def respond(self, step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if target.address is None and "--realise" in cmd.argv:
            self.said.append("<build>")
            if self.build == "interrupt":
                raise KeyboardInterrupt
            return Result(1, "", "error: builder for '/nix/store/x.drv' failed")
        if target.address is None and self.unchanged and "update" in cmd.argv:
            self.said.append("<flake update>")
            return Result(0, "", "")
        return super().respond(step, cmd, target, fresh)


def asked(fleet: Fleet) -> list[str]:
    return [line for line in fleet.said if line.startswith("<asked")]


def committed(fleet: Fleet) -> bool:
    return any(line.startswith("<update-ref") for line in fleet.said)


def test_without_a_terminal_nothing_is_updated_built_or_asked(tmp_path):
    fleet = fleet_of(tmp_path)
    tools = replace(fleet.tools([], tmp_path), prompter=NoTerminal())
    with pytest.raises(Refused, match=r"^update-deploy commits flake.lock and deploys it to web1, web2, db1; there is "
                                      "no terminal to ask on") as refused:
        update_deploy.update_deploy(request(fleet), tools)
    assert refused.value.exit_code == 3 and fleet.runner.calls == []
    assert (fleet.flake / "flake.lock").read_text() == OLD_LOCK


@pytest.mark.parametrize("build, error", [("fail", CommandFailed), ("interrupt", Interrupted)])
def test_a_build_that_fails_or_is_interrupted_restores_the_lock_and_asks_nothing(tmp_path, build, error):
    fleet = Broken(fleet_of(tmp_path), build=build)
    with pytest.raises(error):
        update_deploy.update_deploy(request(fleet), fleet.tools([True], tmp_path))
    assert "<flake update>" in fleet.said and "<build>" in fleet.said
    assert asked(fleet) == [] and not moved(fleet)
    assert "flake.lock restored; nothing was committed or deployed" in fleet.said
    assert (fleet.flake / "flake.lock").read_text() == OLD_LOCK
    assert not any(c.step == "lock" for c in fleet.runner.calls)


def test_an_update_that_changes_no_input_deploys_nothing_and_asks_nothing(tmp_path):
    fleet = Broken(fleet_of(tmp_path), unchanged=True)
    report = update_deploy.update_deploy(request(fleet), fleet.tools([], tmp_path))
    assert report.results == () and report.action == "update-deploy"
    assert "flake.lock: no input changed; nothing to deploy" in fleet.said
    assert "<build>" not in fleet.said and asked(fleet) == [] and not moved(fleet)


@pytest.mark.parametrize("answer", [True, False])
def test_when_no_host_changes_it_asks_whether_to_commit_the_lock_anyway(tmp_path, answer):
    fleet = fleet_of(tmp_path, web1=NEW, web2=NEW, db1=NEW)
    prompter_tools = fleet.tools([answer], tmp_path)
    if answer:
        report = update_deploy.update_deploy(request(fleet), prompter_tools)
        assert outcomes(report) == {"web1": "ok", "web2": "ok", "db1": "ok"}  # up to date
        assert committed(fleet) and (fleet.flake / "flake.lock").read_text() == NEW_LOCK
        assert f"committed flake.lock as {REVISION[:12]} (chore: update flake inputs); no host to deploy it to" \
            in fleet.said
    else:
        with pytest.raises(Refused, match="^not approved; nothing was committed$"):
            update_deploy.update_deploy(request(fleet), prompter_tools)
        assert not moved(fleet) and (fleet.flake / "flake.lock").read_text() == OLD_LOCK
    assert prompter_tools.prompter.questions == [  # type: ignore[attr-defined]
        "No selected host's system changes. Commit flake.lock (1 input(s) updated) anyway?"]
    assert not any(c.step == "lock" for c in fleet.runner.calls)


def test_a_canary_that_fails_after_the_commit_stops_the_rest(tmp_path):
    fleet = fleet_of(tmp_path)
    fleet.hosts["web1"].fail.add("activate test")  # (these hosts have no checks)
    with pytest.raises(DeployFailed, match="^web1: rolled back: switch failed") as failed:
        update_deploy.update_deploy(request(fleet), fleet.tools([True], tmp_path))
    assert committed(fleet)  # the lock landed before anything went out; the report names the commit
    assert f"update-deploy: commit {REVISION} (flake.lock) was the one deployed" in fleet.said
    assert outcomes(failed.value) == {"web1": "rolled back", "web2": "not started", "db1": "not started"}
    assert fleet.hosts["web2"].running == OLD and fleet.hosts["web1"].running == OLD


def test_a_host_that_fails_in_the_rolling_deploy_halts_those_after_it(tmp_path):
    fleet = fleet_of(tmp_path)
    fleet.hosts["web2"].fail.add("activate test")
    with pytest.raises(DeployFailed, match="^web2: rolled back: switch failed") as failed:
        update_deploy.update_deploy(request(fleet), fleet.tools([["web2", "db1"]], tmp_path))
    assert outcomes(failed.value) == {"web1": "not selected", "web2": "rolled back", "db1": "not started"}
    assert fleet.hosts["db1"].running != NEW and committed(fleet)
