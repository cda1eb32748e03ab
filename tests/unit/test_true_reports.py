"""Reports that describe each host as it is at the end: the exit code and closing line after a
no that came when hosts had already changed, and one journal record per host per deploy with
--rollback-batch-on-failure (the recording runner, one FakeHost per host)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nixtasks.actions.journal import Journal, finished, read_local
from nixtasks.errors import DeployFailed, Refused
from nixtasks.fleet import engine, flow, pipeline
from nixtasks.fleet.progress import PlainProgress
from nixtasks.host.facts import parse_facts
from nixtasks.host.runner import Result
from nixtasks.inventory import parse_sizes
from nixtasks.models import Action, Check, Command, Host, HostResult, Outcome, Policy, Report, Target
from tests.recording import RecordingRunner

from .test_pipeline import NEW, OLD, FakeHost

HOSTS = {name: Host(name, name, Target(name, "root"), checks=(Check("unit", "app.service", retries=1),))
         for name in ("web1", "web2", "web3")}


def went(host: str, outcome: Outcome = Outcome.OK) -> HostResult:
    return HostResult(host=host, action=Action.SWITCH, outcome=outcome, previous_system=OLD, new_system=NEW,
                      previous_generation=1, generation=2, tried_system=NEW)


def untouched(host: str, outcome: Outcome) -> HostResult:
    return HostResult(host=host, action=Action.SWITCH, outcome=outcome, previous_system=OLD, new_system=OLD,
                      previous_generation=1, generation=1)


def test_a_no_when_nothing_changed_exits_3_even_with_hosts_not_started():
    report = Report(Action.SWITCH, (untouched("web1", Outcome.DECLINED), untouched("web2", Outcome.NOT_STARTED)))
    with pytest.raises(Refused) as err:  # a canary declined: the rest never started
        flow.finish(report, lambda line: None)
    assert err.value.exit_code == 3
    assert str(err.value) == "not approved for web1; nothing was changed on any host; not started: web2"


def test_a_no_after_the_canary_went_out_is_not_nothing_changed():
    report = Report(Action.SWITCH, (went("web1"), untouched("web2", Outcome.DECLINED),
                                    untouched("web3", Outcome.DECLINED)))
    with pytest.raises(DeployFailed) as err:
        flow.finish(report, lambda line: None)
    assert err.value.exit_code == 1
    assert str(err.value).startswith("not approved for web2, web3; this run changed web1 (ok) before that, so the "
                                     "selection is only partly done")
    same = HostResult(host="web1", action=Action.SWITCH, outcome=Outcome.OK, previous_system=OLD, new_system=OLD,
                      previous_generation=1, generation=1, tried_system=OLD)  # it ran that system already
    with pytest.raises(Refused):
        flow.finish(Report(Action.SWITCH, (same, untouched("web2", Outcome.DECLINED))), lambda line: None)


def test_what_changed_is_what_runs_or_boots_now():
    assert went("web1").changed and not untouched("web1", Outcome.OK).changed
    test_run = HostResult(host="w", action=Action.TEST, outcome=Outcome.OK, previous_system=OLD, new_system=NEW,
                          previous_generation=1, generation=1)
    assert test_run.changed
    boot = HostResult(host="w", action=Action.BOOT, outcome=Outcome.DECLINED, previous_system=OLD, new_system=NEW,
                      previous_generation=2, generation=2)  # boots NEW since an earlier boot deploy
    assert not boot.changed
    lost = HostResult(host="w", action=Action.SWITCH, outcome=Outcome.FAILED, previous_system=OLD,
                      previous_generation=1)
    assert lost.changed  # not known
    assert not HostResult(host="w", action=Action.BUILD, outcome=Outcome.OK, new_system=NEW).changed


def fleet(fakes: dict[str, FakeHost]) -> RecordingRunner:
    def respond(step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        return fakes[str(target.address)](step, cmd, target, fresh)
    return RecordingRunner(respond)


def test_a_batch_rolled_back_on_failure_leaves_one_record_per_host(tmp_path):
    fakes = {"web1": FakeHost(), "web2": FakeHost(healthy={OLD}), "web3": FakeHost()}
    runner = fleet(fakes)
    journal = Journal(runner, tmp_path / "journal.jsonl")
    policy = Policy(rollback_batch_on_failure=True, batches=parse_sizes("2"))
    ctx = pipeline.Context(runner, policy, PlainProgress(runner.echo), "switch")
    changes = [pipeline.Change(HOSTS[n], Action.SWITCH, NEW, parse_facts(fakes[n].facts())) for n in fakes]
    results, interrupted = engine.run_changes(changes, ctx, journal)
    assert not interrupted
    assert [(r.host, r.outcome) for r in results] == [("web1", Outcome.ROLLED_BACK), ("web2", Outcome.ROLLED_BACK),
                                                      ("web3", Outcome.NOT_STARTED)]
    assert fakes["web1"].running == OLD and fakes["web1"].profile == 1
    web1 = results[0]
    assert web1.message.startswith("with its batch: web2 failed (rolled back: check unit app.service")
    assert (web1.new_system, web1.generation, web1.tried_system) == (OLD, 1, NEW)
    assert {"activation", "checks", "rollback"} <= {s.value for s, _ in web1.stages}
    ends = [r for r in read_local(tmp_path / "journal.jsonl") if r.outcome != "started"]
    assert [(r.host, r.outcome) for r in ends] == [("web2", "rolled back"), ("web1", "rolled back"),
                                                   ("web3", "not started")]
    assert ends[1].tried_path == NEW and ends[1].after_path == OLD and "with its batch: web2" in ends[1].message
    # each host's activation record is answered by its one end: history shows one line per host
    assert sorted(r.host for r in finished(read_local(tmp_path / "journal.jsonl"))) == ["web1", "web2", "web3"]
    on_host = [c for c in runner.calls if c.step == "journal" and c.target.address == "web1" and c.cmd.stdin]
    assert ['"outcome": "rolled back"' in c.cmd.stdin for c in on_host] == [True]  # the host's own: one end


def test_a_batch_that_goes_out_fine_journals_each_ok_once(tmp_path):
    fakes = {"web1": FakeHost(), "web2": FakeHost()}
    runner = fleet(fakes)
    journal = Journal(runner, tmp_path / "journal.jsonl")
    ctx = pipeline.Context(runner, Policy(rollback_batch_on_failure=True), PlainProgress(runner.echo), "switch")
    changes = [pipeline.Change(HOSTS[n], Action.SWITCH, NEW, parse_facts(fakes[n].facts())) for n in fakes]
    results, _ = engine.run_changes(changes, ctx, journal)
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.OK]
    ends = [(r.host, r.outcome, r.after_path) for r in read_local(tmp_path / "journal.jsonl") if r.outcome != "started"]
    assert sorted(ends) == [("web1", "ok", NEW), ("web2", "ok", NEW)]


def test_a_canary_rolled_back_by_its_soak_has_one_record(tmp_path):
    fakes = {"web1": FakeHost(), "web2": FakeHost()}
    runner = fleet(fakes)
    journal = Journal(runner, tmp_path / "journal.jsonl")
    ctx = pipeline.Context(runner, Policy(), PlainProgress(runner.echo), "switch")
    changes = [pipeline.Change(HOSTS[n], Action.SWITCH, NEW, parse_facts(fakes[n].facts())) for n in fakes]
    went, _ = engine.run_changes(changes, ctx, journal, hold=True)
    assert [r.outcome for r in went] == [Outcome.OK, Outcome.OK]
    assert all(r.outcome == "started" for r in read_local(tmp_path / "journal.jsonl"))  # the oks wait for the soak
    fakes["web2"].healthy = {OLD}  # turns unhealthy during the soak
    prep = SimpleNamespace(journal=journal, request=SimpleNamespace(policy=Policy()))
    tools = flow.Tools(runner, None, PlainProgress(runner.echo), runner.echo)  # type: ignore[arg-type]
    backs, interrupted = engine.soak(prep, changes, went, 0.01, tools, "switch")  # type: ignore[arg-type]
    assert not interrupted and [r.outcome for r in backs] == [Outcome.ROLLED_BACK, Outcome.ROLLED_BACK]
    assert fakes["web1"].running == OLD == fakes["web2"].running
    ends = [r for r in read_local(tmp_path / "journal.jsonl") if r.outcome != "started"]
    assert [(r.host, r.outcome, r.tried_path) for r in ends] == [("web1", "rolled back", NEW),
                                                                 ("web2", "rolled back", NEW)]
    assert "unhealthy during the soak (web2: check unit app.service" in ends[0].message
    assert len(finished(read_local(tmp_path / "journal.jsonl"))) == 2


def test_a_no_after_a_test_activation_of_that_host_says_an_earlier_step_changed_it():
    tested = HostResult(host="web1", action=Action.SWITCH, outcome=Outcome.DECLINED, previous_system=OLD,
                        new_system=NEW, previous_generation=1, generation=1)  # runs NEW, boots generation 1
    with pytest.raises(DeployFailed) as err:
        flow.finish(Report("emergency", (tested,)), lambda line: None)
    assert str(err.value).startswith("not approved for web1; this run changed web1 (in an earlier step) before that")
