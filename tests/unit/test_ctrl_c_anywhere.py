"""Ctrl-C at every command of every recipe (issue 18, found by the soak): each flow is run once
to list the commands it sends, then once more per command with a Ctrl-C there: raised where the
main thread sends it (as the runner does after stopping the command), or sent to the main
thread as a signal while another thread sends it (a host under way). Every time, the run goes
through `flow.reported`, as the command line's does, and ends the same way: exit 130, every
host in the report once, its last journal record saying the same, a host not started untouched,
and no lock, hold or watchdog left that the run took."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest

from nixtasks.actions.journal import read_local
from nixtasks.errors import Interrupted
from nixtasks.fleet import engine, flow, operations, reboot
from nixtasks.models import Action, Command, Policy, Target
from nixtasks.recipes import blue_green, canary, emergency, rolling, stage, update_deploy

from .flows import NEW, OLD, FakeHost, Fleet, fleet_of, hosts, outcomes, request

NAMES = ("web1", "web2", "db1")
HOSTS = hosts(*NAMES, canary=("web1",))
BLUE = tuple(h for h in hosts(*NAMES[:2]))  # blue-green's group


@dataclass(frozen=True)
class Flow:
    run: Callable[[flow.Tools], object]
    answers: tuple[object, ...] = (True, True)
    rebooting: bool = False
    switches: bool = True  # an ok host runs the new system
    records: int = 1  # per host: blue-green's boot and reboot, emergency's test, switch (and way back)
    fakes: dict[str, Callable[[], FakeHost]] = field(default_factory=dict)
    unevaluable: frozenset[str] = frozenset()
    generations: dict[int, str] = field(default_factory=dict)  # given: the hosts' (the last runs)


def plan() -> stage.StagedPlan:
    return stage.StagedPlan(Action.SWITCH, None, False, "now", {n: stage.StagedHost(NEW, OLD, 1) for n in NAMES})


FLOWS: dict[str, Flow] = {
    "switch, all at once": Flow(lambda t: engine.deploy(request(HOSTS, Policy(parallel=3)), t), (True,)),
    "rolling": Flow(lambda t: rolling.rolling(request(HOSTS), t), (True,)),
    "rolling, a batch rolled back": Flow(
        lambda t: rolling.rolling(request(HOSTS, Policy(batches=("2",), parallel=2, rollback_batch_on_failure=True)),
                                  t), (True,), fakes={"web2": lambda: FakeHost(healthy={OLD})}),
    "rolling, --keep-going past a host that does not evaluate": Flow(
        lambda t: rolling.rolling(request(HOSTS, Policy(keep_going=True)), t), (True,),
        unevaluable=frozenset({"db1"})),
    "canary": Flow(lambda t: canary.canary(request(HOSTS), t)),
    "canary with a soak": Flow(lambda t: canary.canary(request(HOSTS), t, soak=0.01)),
    "canary that fails, halting": Flow(lambda t: canary.canary(request(HOSTS), t),
                                       fakes={"web1": lambda: FakeHost(healthy={OLD})}),
    "blue-green": Flow(lambda t: blue_green.blue_green(request(BLUE), t, "blue", "lb {to}", 5), rebooting=True,
                       switches=False, records=2),
    "emergency": Flow(lambda t: emergency.emergency(request(HOSTS, reason="fix"), t, 0), switches=False, records=2),
    "emergency, no at the switch, back": Flow(lambda t: emergency.emergency(request(HOSTS, reason="fix"), t, 0),
                                              (True, False, True), switches=False, records=3),
    "apply": Flow(lambda t: stage.apply(request(HOSTS), t, plan()), (True,)),
    "rollback": Flow(lambda t: operations.rollback(operations.RollbackRequest(HOSTS), t), (True,), switches=False,
                     generations={1: OLD, 2: NEW, 3: NEW}),
    "gc": Flow(lambda t: operations.gc(HOSTS, 1, Policy(), t), (True,), switches=False,
               generations={1: OLD, 2: NEW, 3: NEW}),
}


@pytest.fixture(autouse=True)
def setting(tmp_path, monkeypatch):
    monkeypatch.setenv("NIXTASKS_PLAN_KEY", str(tmp_path / "plan-key"))
    monkeypatch.setattr(reboot, "POLL", 0)


def fleet_for(tmp_path, flow: Flow, name: str) -> Fleet:
    path = tmp_path / name
    path.mkdir()
    names = [h.name for h in BLUE] if flow.rebooting else NAMES
    fleet = fleet_of(path, *names, rebooting=flow.rebooting, **{n: make() for n, make in flow.fakes.items()})
    fleet.unevaluable = set(flow.unevaluable)
    for fake in fleet.fakes.values():
        if flow.generations:
            fake.generations, fake.profile = dict(flow.generations), max(flow.generations)
            fake.running = flow.generations[fake.profile]
    fleet.before = {n: (f.running, f.profile) for n, f in fleet.fakes.items()}  # type: ignore[attr-defined]
    return fleet


def commands_of(fleet: Fleet) -> list[tuple[str | None, str, int]]:
    """Each command the run sent: where, what, and which of that kind it was there."""
    seen: Counter[tuple[str | None, str]] = Counter()
    out = []
    for call in fleet.runner.calls:
        key = (call.target.address, same(call.step))
        out.append((*key, seen[key]))
        seen[key] += 1
    return out


def same(step: str) -> str:
    """A step's name without the run's own temporary paths (update-deploy's index file)."""
    return re.sub(r"/tmp/\S+", "TMP", step)


def ctrl_c_at(fleet: Fleet, where: tuple[str | None, str, int]) -> None:
    """The person presses Ctrl-C while the run sends the command `where`."""
    seen: Counter[tuple[str | None, str]] = Counter()
    lock = threading.Lock()

    def there(step: str, cmd: Command, target: Target) -> bool:
        key = (target.address, same(step))
        with lock:
            seen[key] += 1
            return (*key, seen[key] - 1) == where

    ctrl_c_when(fleet, there)


def ctrl_c_when(fleet: Fleet, there: Callable[[str, Command, Target], bool]) -> None:
    """Ctrl-C while the run sends the first command that is `there`: raised in the main thread (the
    runner stops the command and raises), else sent to the main thread (it lands where that is)."""
    answer, main, fired = fleet.runner.respond, threading.main_thread(), threading.Event()

    def respond(step: str, cmd: Command, target: Target, fresh: bool):
        if there(step, cmd, target) and not fired.is_set():
            fired.set()
            if threading.current_thread() is main:
                raise KeyboardInterrupt
            assert main.ident is not None
            signal.pthread_kill(main.ident, signal.SIGINT)
        return answer(step, cmd, target, fresh)

    fleet.runner.respond = respond


COUNTS: dict[str, list[tuple[str | None, str, int]]] = {}


def baseline(tmp_path_factory, name: str) -> list[tuple[str | None, str, int]]:
    if name not in COUNTS:
        flow = FLOWS[name]
        fleet = fleet_for(tmp_path_factory.mktemp("baseline"), flow, "run")
        with contextlib.suppress(Exception):  # a flow that fails on purpose (a failed canary) lists them too
            flow.run(fleet.tools(*flow.answers))
        COUNTS[name] = commands_of(fleet)
    return COUNTS[name]


@pytest.mark.parametrize("name", FLOWS)
def test_ctrl_c_at_any_command_ends_in_the_true_report_the_journal_and_exit_130(tmp_path, tmp_path_factory, name):
    flow = FLOWS[name]
    sent = baseline(tmp_path_factory, name)
    assert len(sent) > 10
    for number, where in enumerate(sent):
        fleet = fleet_for(tmp_path, flow, f"at-{number}")
        ctrl_c_at(fleet, where)
        case = f"{name}: Ctrl-C at {where}"
        check(fleet, flow, interrupted(flow.run, fleet.tools(*flow.answers), case), case)


def interrupted(run: Callable[[flow.Tools], object], tools: flow.Tools, case: str = "") -> Interrupted:
    """The run as the command line runs it, which a Ctrl-C ends in an `Interrupted` (exit 130)."""
    try:
        flow.reported(run, tools)  # type: ignore[arg-type]
    except Interrupted as stop:
        return stop
    except KeyboardInterrupt:
        pytest.fail(f"{case}: the Ctrl-C went up without a report")
    pytest.fail(f"{case}: the run ended as if no Ctrl-C came")


def check(fleet: Fleet, flow: Flow, error: Interrupted, case: str) -> None:
    report = error.report
    assert error.exit_code == 130 and report is not None and report.interrupted, case
    names = sorted(fleet.fakes)
    assert sorted(r.host for r in report.results) == names, (case, report.results)
    said = outcomes(report)
    journal = fleet.journal()
    counts = Counter(host for host, _action, _outcome in journal)
    assert all(1 <= counts[h] <= flow.records for h in names), (case, journal)
    if flow.records == 1:
        assert {host: outcome for host, _action, outcome in journal} == said, (case, journal)
    else:  # a record per step: the report's outcome is that of one of them
        assert all((h, said[h]) in {(host, outcome) for host, _a, outcome in journal} for h in names), (case, journal)
    for result in report.results:
        fake, steps = fleet.fakes[result.host], [c.step for c in fleet.runner.calls if c.target.address == result.host]
        if result.outcome.value == "not started" and "runs the test-activated system" not in result.message:
            assert (fake.running, fake.profile) == fleet.before[result.host], (case, result, steps)  # type: ignore
        if result.outcome.value == "ok" and flow.switches:
            assert fake.running == NEW, (case, result, steps)
        if result.outcome.value == "rolled back":
            assert fake.running == OLD, (case, result, steps)
        # Nothing left that the run took: the lock (its unit ends with a reboot), the hold, the watchdog.
        assert steps.count("lock") <= steps.count("unlock") + steps.count("systemctl reboot"), (case, steps)
        assert steps.count("hold") <= steps.count("unhold") + steps.count("unlock"), (case, steps)
        assert steps.count("arm") <= steps.count("confirm"), (case, steps)


# --- the soak's three cases, each alone ------------------------------------------------------


def test_ctrl_c_while_a_failed_canary_halts_the_rest_reports_every_host(tmp_path):
    """Item 1: the canary was rolled back; the rest are being journalled "not started" when the
    Ctrl-C lands (in the main thread, during db1's record)."""
    fleet = fleet_of(tmp_path, *NAMES, web1=FakeHost(healthy={OLD}))
    ctrl_c_at(fleet, ("db1", "journal", 0))
    stop = interrupted(lambda t: canary.canary(request(HOSTS), t), fleet.tools(True, True))
    assert str(stop) == "interrupted; 1 rolled back, 2 not started" and stop.exit_code == 130
    assert outcomes(stop) == {"web1": "rolled back", "web2": "not started", "db1": "not started"}
    assert fleet.journal() == [("web1", "switch", "rolled back"), ("web2", "switch", "not started"),
                               ("db1", "switch", "not started")]
    assert all(f.running == OLD for f in fleet.fakes.values())
    assert "db1   not started" in fleet.text()  # the report was shown


def test_ctrl_c_during_the_copies_after_a_keep_going_failure_reports_every_host(tmp_path):
    """Item 2: db1 does not evaluate (--keep-going: the others go on); the Ctrl-C lands while
    web2's system is copied (another thread sends it)."""
    fleet = fleet_of(tmp_path, *NAMES)
    fleet.unevaluable = {"db1"}
    ctrl_c_when(fleet, lambda step, cmd, target: "copy" in cmd.argv and any("web2" in a for a in cmd.argv))
    stop = interrupted(lambda t: rolling.rolling(request(HOSTS, Policy(keep_going=True)), t), fleet.tools(True))
    assert str(stop) == "interrupted before the plan; nothing was changed on any host" and stop.exit_code == 130
    assert fleet.prompter.asked == [] and fleet.locked() == []
    assert outcomes(stop) == {"web1": "not started", "web2": "not started", "db1": "failed"}
    records = [(r.host, r.outcome, r.message) for r in read_local(tmp_path / "journal.jsonl")]
    assert sorted(records) == [("db1", "failed", stop.report.results[2].message),  # type: ignore[union-attr]
                               ("web1", "not started", "interrupted before the plan; nothing changed"),
                               ("web2", "not started", "interrupted before the plan; nothing changed")]
    assert not any(c.step == "journal" for c in fleet.runner.calls)  # nothing touched a host's journal


def test_ctrl_c_in_the_batch_loop_between_two_batches_is_noted_not_raised(tmp_path):
    """Item 3: a Ctrl-C that lands while the batch loop is between its steps (here: as it says it
    pauses before batch 2) stops the batches after it, with the report."""
    fleet = fleet_of(tmp_path, *NAMES)
    main = threading.main_thread()

    def echo(line: str) -> None:  # the runner's: the batches say what they do with it
        if line.startswith("pausing"):
            if threading.current_thread() is main:
                raise KeyboardInterrupt
            assert main.ident is not None
            signal.pthread_kill(main.ident, signal.SIGINT)

    fleet.runner.echo = echo  # type: ignore[method-assign]
    stop = interrupted(lambda t: rolling.rolling(request(HOSTS, Policy(pause=0.5)), t), fleet.tools(True))
    assert str(stop) == "interrupted; 1 ok, 2 not started" and stop.exit_code == 130 and fleet.locked() == ["web1"]
    assert fleet.journal() == [("web1", "switch", "ok"), ("web2", "switch", "not started"),
                               ("db1", "switch", "not started")]


@pytest.mark.parametrize("canary", [True, False], ids=["as a canary", "rolling"])
def test_ctrl_c_at_any_command_of_update_deploy(tmp_path, canary):
    """update-deploy: before the commit, flake.lock is put back; after it, the deploy reports."""
    from .test_approvals import HOSTS as UPDATED
    from .test_approvals import OLD_LOCK, fleet_of, request

    hosts = tuple(replace(h, canary=canary and h.name == "web1") for h in UPDATED)
    (tmp_path / "baseline").mkdir()
    fleet = fleet_of(tmp_path / "baseline")
    update_deploy.update_deploy(request(fleet, hosts), fleet.tools([True], tmp_path / "baseline"))
    for number, where in enumerate(commands_of(fleet)):  # type: ignore[arg-type]
        path = tmp_path / f"at-{number}"
        path.mkdir()
        fleet = fleet_of(path)
        ctrl_c_at(fleet, where)  # type: ignore[arg-type]
        case = f"update-deploy: Ctrl-C at {where}"
        stop = interrupted(lambda t: update_deploy.update_deploy(request(fleet, hosts), t),  # noqa: B023
                           fleet.tools([True], path), case)
        assert stop.exit_code == 130, case
        landed = any(line.startswith("<update-ref") for line in fleet.said)
        assert landed or (fleet.flake / "flake.lock").read_text() == OLD_LOCK, case
        if stop.report is None:  # before any host was asked anything
            assert not any(c.target.address for c in fleet.runner.calls), case
            continue
        said = outcomes(stop)
        assert sorted(said) == sorted(fleet.hosts), case
        journal = [(r.host, r.outcome) for r in read_local(path / "journal.jsonl") if r.outcome != "started"]
        assert dict(journal) == said and len(journal) == len(said), (case, journal)
        for name, fake in fleet.hosts.items():
            steps = [c.step for c in fleet.runner.calls if c.target.address == name]
            if said[name] == "not started":
                assert (fake.running, fake.profile) == (OLD, 1), (case, name, steps)
            if said[name] == "ok":
                assert fake.running == NEW, (case, name, steps)
            assert steps.count("lock") <= steps.count("unlock") and steps.count("arm") <= steps.count("confirm")
