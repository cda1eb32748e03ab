"""Ctrl-C at every command of every recipe (issue 18, found by the soak): each flow is run once
to list the commands it sends, then once more per command with a Ctrl-C there: raised where the
main thread sends it (as the runner does after stopping the command), or sent to the main
thread as a signal while another thread sends it (a host under way). Every time, the run goes
through `engine.reported`, as the command line's does, and ends the same way: exit 130, every
host in the report once, its last journal record saying the same, a host not started untouched,
and no lock, hold or watchdog left that the run took."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from nixtasks.errors import Interrupted
from nixtasks.fleet import engine, reboot
from nixtasks.models import Action, Command, Policy, Target
from nixtasks.recipes import blue_green, canary, emergency, rolling, stage

from .flows import NEW, OLD, FakeHost, Fleet, RebootingHost, fleet_of, hosts, outcomes, request

NAMES = ("web1", "web2", "db1")
HOSTS = hosts(*NAMES, canary=("web1",))
BLUE = tuple(h for h in hosts(*NAMES[:2]))  # blue-green's group


@dataclass(frozen=True)
class Flow:
    run: Callable[[engine.Tools], object]
    answers: tuple[object, ...] = (True, True)
    rebooting: bool = False
    switches: bool = True  # an ok host runs the new system
    records: int = 1  # per host: blue-green's boot and reboot, emergency's test, switch (and way back)
    fakes: dict[str, Callable[[], FakeHost]] = field(default_factory=dict)
    unevaluable: frozenset[str] = frozenset()


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
    return fleet


def commands_of(fleet: Fleet) -> list[tuple[str | None, str, int]]:
    """Each command the run sent: where, what, and which of that kind it was there."""
    seen: Counter[tuple[str | None, str]] = Counter()
    out = []
    for call in fleet.runner.calls:
        key = (call.target.address, call.step)
        out.append((*key, seen[key]))
        seen[key] += 1
    return out


def ctrl_c_at(fleet: Fleet, where: tuple[str | None, str, int]) -> None:
    """The person presses Ctrl-C while the run sends the command `where`."""
    answer = fleet.runner.respond
    seen: Counter[tuple[str | None, str]] = Counter()
    lock = threading.Lock()
    main = threading.main_thread()

    def respond(step: str, cmd: Command, target: Target, fresh: bool):
        key = (target.address, step)
        with lock:
            now = (*key, seen[key]) == where
            seen[key] += 1
        if now and threading.current_thread() is main:
            raise KeyboardInterrupt  # the runner stops the command and raises in the main thread
        if now:
            assert main.ident is not None
            signal.pthread_kill(main.ident, signal.SIGINT)  # it lands wherever the main thread is
        return answer(step, cmd, target, fresh)

    fleet.runner.respond = respond


COUNTS: dict[str, list[tuple[str | None, str, int]]] = {}


def baseline(tmp_path_factory, name: str) -> list[tuple[str | None, str, int]]:
    if name not in COUNTS:
        flow = FLOWS[name]
        fleet = fleet_for(tmp_path_factory.mktemp("baseline"), flow, "run")
        try:
            flow.run(fleet.tools(*flow.answers))
        except Exception:  # a flow that fails on purpose (a canary that fails) still lists its commands
            pass
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
        try:
            engine.reported(flow.run, fleet.tools(*flow.answers))  # type: ignore[arg-type]
        except Interrupted as stop:
            check(fleet, flow, stop, case)
        except KeyboardInterrupt:
            pytest.fail(f"{case}: the Ctrl-C went up without a report")
        else:
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
            assert (fake.running, fake.profile) == (OLD, 1), (case, result, steps)
        if result.outcome.value == "ok" and flow.switches:
            assert fake.running == NEW, (case, result, steps)
        if result.outcome.value == "rolled back":
            assert fake.running == OLD, (case, result, steps)
        # Nothing left that the run took: the lock (its unit ends with a reboot), the hold, the watchdog.
        assert steps.count("lock") <= steps.count("unlock") + steps.count("systemctl reboot"), (case, steps)
        assert steps.count("hold") <= steps.count("unhold") + steps.count("unlock"), (case, steps)
        assert steps.count("arm") <= steps.count("confirm"), (case, steps)
