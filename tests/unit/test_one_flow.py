"""Every host operation admits its hosts the same way, through one flow (fleet/flow.py; issue
19 item 1): deploy, rollback and gc read every host, stop before anything changes when one
cannot be reached (or skip it, with --skip-unreachable, and journal it), and stop when a host's
sudo wants a password that was not given. gc used to read generations before asking whether a
host answered, so one unreachable host aborted the whole gc and --skip-unreachable was ignored."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from nixtasks.errors import DeployFailed, HostUnreachable, NixtasksError
from nixtasks.fleet import engine, operations
from nixtasks.host.runner import Result
from nixtasks.models import Command, Policy, Target
from tests.fakes import NEW, OLD, FakeHost

from .flows import DownHost, fleet_of, hosts, outcomes, request

SKIP = Policy(skip_unreachable=True)
OPERATIONS = ["switch", "gc", "rollback"]


@dataclass
class WantsSudoPassword(FakeHost):
    """sudo -n there refuses nixtasks' commands: a password is required."""

    def __call__(self, step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if step == "facts" and "sudo-probe" in cmd.argv:
            return Result(0, self.facts() + "sudo\tpassword\n", "")
        return super().__call__(step, cmd, target, fresh)


def changed(fleet, name: str) -> list[str]:
    """The commands that change the host (and the lock, taken only to change it)."""
    return [c.step for c in fleet.runner.calls if c.target.address == name and (c.cmd.changes or c.step == "lock")]


def run(operation: str, fleet, policy: Policy, *answers: object):
    names = tuple(fleet.fakes)
    selection = tuple(replace(h, target=Target(h.name, "deploy", sudo=True)) if isinstance(fleet.fakes[h.name],
                      WantsSudoPassword) else h for h in hosts(*names))
    for fake in fleet.fakes.values():  # something to roll back to, and to delete
        fake.generations = {1: OLD, 2: NEW, 3: NEW, 4: NEW, 5: OLD}
        fake.profile = 5
    tools = fleet.tools(*answers)
    if operation == "switch":
        return engine.deploy(request(selection, policy), tools)
    if operation == "gc":
        return operations.gc(selection, 3, policy, tools)
    return operations.rollback(operations.RollbackRequest(selection, policy=policy), tools)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_an_unreachable_host_stops_the_operation_before_anything_changes(tmp_path, operation):
    fleet = fleet_of(tmp_path, "web1", "web2", web2=DownHost())
    with pytest.raises(HostUnreachable) as stopped:
        run(operation, fleet, Policy(), True)
    assert "web2" in str(stopped.value) and "--skip-unreachable" in str(stopped.value)
    assert changed(fleet, "web1") == [] and fleet.asked() == []


@pytest.mark.parametrize("operation", OPERATIONS)
def test_skip_unreachable_goes_on_without_the_host_and_journals_it(tmp_path, operation):
    fleet = fleet_of(tmp_path, "web1", "web2", web2=DownHost())
    with pytest.raises(DeployFailed) as partly:  # the selection is not done: never exit 0
        run(operation, fleet, SKIP, True)
    assert outcomes(partly.value) == {"web2": "skipped", "web1": "ok"}
    still = "deploy it once reachable" if operation == "switch" else f"once reachable: invoke {operation} --host web2"
    assert str(partly.value).endswith(still)  # what it still needs
    assert [names for _q, names in fleet.asked()] == [("web1",)]  # the question names only who goes
    assert changed(fleet, "web1") and changed(fleet, "web2") == []
    assert sorted(fleet.journal()) == [("web1", operation, "ok"), ("web2", operation, "skipped")]


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_sudo_that_wants_a_password_stops_the_operation_before_it_asks(tmp_path, operation):
    fleet = fleet_of(tmp_path, "web1", "web2", web2=WantsSudoPassword())
    with pytest.raises(NixtasksError) as stopped:
        run(operation, fleet, Policy(), True)
    assert "web2 (deploy@web2): sudo there wants a password" in str(stopped.value)
    assert changed(fleet, "web1") == [] and fleet.asked() == []


def test_a_deploy_stopped_at_an_unreachable_host_journals_no_keep_going_failure(tmp_path):
    """Found by the soak: with --keep-going, a host whose system did not evaluate was journalled
    "failed" before an unreachable host stopped the deploy with no report (nothing changed)."""
    fleet = fleet_of(tmp_path, "web1", "web2", "db1", db1=DownHost())
    fleet.unevaluable = {"web2"}
    with pytest.raises(HostUnreachable):
        engine.deploy(request(hosts("web1", "web2", "db1"), Policy(keep_going=True)), fleet.tools(True))
    assert fleet.journal() == [] and fleet.asked() == []
    fleet = fleet_of(tmp_path, "web1", "web2", "db1", db1=DownHost())
    fleet.unevaluable = {"web2"}
    with pytest.raises(DeployFailed) as partly:  # skipped: the deploy goes on, and journals the failure
        engine.deploy(request(hosts("web1", "web2", "db1"), Policy(keep_going=True, skip_unreachable=True)),
                      fleet.tools(True))
    assert outcomes(partly.value) == {"web2": "failed", "db1": "skipped", "web1": "ok"}
    assert sorted(fleet.journal()) == [("db1", "switch", "skipped"), ("web1", "switch", "ok"),
                                       ("web2", "switch", "failed")]


@dataclass
class LostAfterTheProbe(FakeHost):
    """Answered its probe, then went down (powered off) before its copy."""

    def __call__(self, step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if step == "facts":
            return super().__call__(step, cmd, target, fresh)
        return Result(255, "", f"ssh: connect to host {target.address} port 22: Connection refused")


def test_a_deploy_stopped_after_the_probes_journals_none_of_the_hosts_it_left_out(tmp_path):
    """Found by the soak (round 14, seed 4242): with --keep-going and --skip-unreachable, the
    hosts left out (a failed evaluation, an unreachable host) were journalled before a host lost
    after its probe stopped the deploy at its copy, with no report."""
    fleet = fleet_of(tmp_path, "web1", "web2", "db1", "app1", db1=DownHost(), app1=LostAfterTheProbe())
    fleet.unevaluable = {"web2"}
    with pytest.raises(HostUnreachable, match="^app1: cannot reach the host"):
        engine.deploy(request(hosts("web1", "web2", "db1", "app1"), Policy(keep_going=True, skip_unreachable=True)),
                      fleet.tools(True))
    assert fleet.journal() == [] and fleet.asked() == []
    assert changed(fleet, "web1") == []
