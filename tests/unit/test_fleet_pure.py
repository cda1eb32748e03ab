"""Batches, the failure threshold, the policy from inventory and command line, the fleet's
question, the report table and JSON, and the batch loop with its halt."""

from pathlib import Path

import pytest

from nixtasks import inventory
from nixtasks.actions import plan
from nixtasks.cli import options
from nixtasks.errors import DeployFailed, InventoryError, UsageError
from nixtasks.fleet import batches, engine, flow
from nixtasks.host.facts import parse_facts
from nixtasks.inventory import parse_sizes
from nixtasks.models import Action, HostResult, Outcome, Policy, Report, Stage


def test_batches_like_ansible_serial():
    hosts = list(range(10))
    assert batches.split(hosts, ()) == [hosts]
    assert batches.split(hosts, parse_sizes("3")) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert [len(b) for b in batches.split(hosts, parse_sizes("1,5,20%"))] == [1, 5, 2, 2]
    assert [len(b) for b in batches.split(list(range(3)), parse_sizes("10%"))] == [1, 1, 1]  # never fewer than one host
    assert batches.split([], parse_sizes("1")) == []


def test_the_threshold_halts_only_when_exceeded():
    assert batches.halts(1, 4, 0) and not batches.halts(0, 4, 0)
    assert not batches.halts(1, 4, 25)  # equalling it does not halt
    assert batches.halts(2, 4, 25)


@pytest.mark.parametrize("spec", ["0", "-1", "abc", "101%", "1,,x", ""])
def test_bad_batch_sizes_are_one_clear_error(spec):
    with pytest.raises(UsageError, match="--batches"):
        inventory.parse_sizes(spec, "--batches")


def test_policy_from_inventory_tag_and_command_line(tmp_path: Path):
    (tmp_path / "nixtasks.toml").write_text(
        '[policy]\nparallel = 4\nbatches = [1, "50%"]\nmax_fail_percentage = 10\nconfirm_timeout = 20\n'
        '[policy.tags.web]\nbatch_size = 2\npause = 5\n'
        '[hosts.web1]\ntags = ["web"]\n')
    inv = inventory.load(env={}, cwd=tmp_path)
    assert inv.policy == Policy(parallel=4, batches=parse_sizes("1,50%"), max_fail_percentage=10, confirm_timeout=20)
    assert inv.policy_for(("web",)) == Policy(parallel=4, batches=parse_sizes("2"), max_fail_percentage=10,
                                              confirm_timeout=20, pause=5)
    flags = options.policy_flags(parallel="8", batches="1,3", rollback_batch_on_failure=True, no_checks=True,
                             skip_unreachable=True)
    opts = options.Options(tags=("web",), policy=flags)
    chosen = options.policy(inv, opts)
    assert (chosen.parallel, chosen.batches, chosen.pause, chosen.checks, chosen.rollback) == (8, parse_sizes("1,3"), 5,
                                                                                               False, True)
    assert chosen.rollback_batch_on_failure and chosen.skip_unreachable


@pytest.mark.parametrize("text, key", [
    ("[policy]\nparallel = 0\n", "policy.parallel"),
    ("[policy]\nbatches = [1, true]\n", "policy.batches"),
    ('[policy]\nbatch_size = "200%"\n', "policy.batch_size"),
    ("[policy]\nmax_fail_percentage = 101\n", "policy.max_fail_percentage"),
    ("[policy]\nbatch_size = 1\nbatches = [1]\n", "policy.batches"),
    ("[policy]\nspeed = 3\n", "policy.speed"),
    ("[policy.tags.web]\nchecks = 1\n", "policy.tags.web.checks"),
])
def test_bad_policy_keys_name_the_key(tmp_path: Path, text: str, key: str):
    (tmp_path / "nixtasks.toml").write_text(text)
    with pytest.raises(InventoryError) as err:
        inventory.load(env={}, cwd=tmp_path)
    assert err.value.key == key


@pytest.mark.parametrize("args, message", [
    (("x", None, None, None, None), "--parallel: 'x' is not a whole number"),
    (("0", None, None, None, None), "--parallel: 0 is too small"),
    ((None, None, None, "soon", None), "--pause: 'soon' is not a number of seconds"),
    ((None, None, None, None, "-5"), "--max-fail-percentage: -5 is too small"),
])
def test_bad_fleet_options_are_one_clear_error(args, message):
    parallel, size, sizes, pause, fail = args
    with pytest.raises(UsageError) as err:
        options.policy_flags(parallel=parallel, batch_size=size, batches=sizes, pause=pause,
                             max_fail_percentage=fail)
    assert str(err.value).startswith(message)


def test_batch_size_and_batches_together_are_refused():
    with pytest.raises(UsageError, match="not both"):
        options.policy_flags(batch_size="1", batches="1,2")


@pytest.mark.parametrize(("given", "message"), [
    ({"max_fail_percentage": "150"}, "--max-fail-percentage: 150 is too large; give at most 100"),
    ({"confirm_timeout": "7200"}, "--confirm-timeout: 7200 is too large; give at most 3600"),
    ({"copy_timeout": "1e9"}, "--copy-timeout: 1e9 is too large; give at most 604800"),
])
def test_fleet_options_above_their_limit_are_one_clear_error(given, message):
    with pytest.raises(UsageError, match=f"^{message}$"):
        options.policy_flags(**given)


def test_batch_sizes_are_parsed_once_into_the_policy(tmp_path: Path):
    inv = inventory.load(env={}, cwd=tmp_path)
    flags = options.policy_flags(batch_size=" 20% ")
    assert flags.batches == parse_sizes("20%")
    assert options.policy(inv, options.Options(policy=flags)).batches == parse_sizes("20%")


def test_the_fleet_question_names_every_host():
    assert plan.fleet_question(Action.SWITCH, ["web1", "web2", "db1"]) == "Switch web1, web2, db1 (3 hosts)?"
    assert plan.fleet_question(Action.BOOT, ["db1", "db2"]) == "Set the boot entry of db1, db2 (2 hosts)?"


def test_the_diff_summary_keeps_three_lines():
    diff = "a: 1.0 → 1.1\nb: ∅ → 2\nc: 3 → ∅\nd: 1 → 2\n"
    assert plan.diff_summary(diff) == "4 change(s): a: 1.0 → 1.1; b: ∅ → 2; c: 3 → ∅, and 1 more (--diff shows all)"


def result(host: str, outcome: Outcome, message: str = "") -> HostResult:
    return HostResult(host=host, action=Action.SWITCH, outcome=outcome, message=message, previous_generation=1,
                      generation=2, duration=1.5, stages=((Stage.BUILD, 0.5), (Stage.ACTIVATION, 1.0)))


def test_the_report_table_and_json():
    report = Report(Action.SWITCH, (result("web1", Outcome.OK), result("web2", Outcome.ROLLED_BACK, "check failed")))
    table = plan.render_report(report)
    assert "web2  rolled back  1 -> 2" in table and "(check failed)" in table and "1.5s" in table
    data = plan.report_json(report)
    assert data["ok"] is False and data["action"] == "switch"
    assert data["hosts"][0]["stages"] == {"build": 0.5, "activation": 1.0}
    assert [h["outcome"] for h in data["hosts"]] == ["ok", "rolled back"]


def test_a_rollback_never_exits_0():
    report = Report(Action.SWITCH, (result("web1", Outcome.ROLLED_BACK),))
    with pytest.raises(DeployFailed) as err:
        flow.finish(report, lambda line: None)
    assert err.value.exit_code == 1
    reverted = Report(Action.SWITCH, (result("web1", Outcome.REVERTED),))
    with pytest.raises(DeployFailed):
        flow.finish(reverted, lambda line: None)


def test_run_batches_halts_and_marks_later_hosts_not_started():
    def work(name: str) -> HostResult:
        return result(name, Outcome.ROLLED_BACK if name == "b" else Outcome.OK)

    def not_started(name: str, why: str) -> HostResult:
        return result(name, Outcome.NOT_STARTED, why)

    policy = Policy(batches=parse_sizes("1,2"))
    results, interrupted = engine.run_batches(list("abcde"), work, policy, lambda line: None,
                                              None, not_started)
    assert [(r.host, r.outcome) for r in results] == [
        ("a", Outcome.OK), ("b", Outcome.ROLLED_BACK), ("c", Outcome.OK), ("d", Outcome.NOT_STARTED),
        ("e", Outcome.NOT_STARTED)]
    assert "batch 2 failed" in results[-1].message and not interrupted
    results, _ = engine.run_batches(list("abcd"), work, Policy(batches=parse_sizes("2"), max_fail_percentage=50),
                                    lambda line: None, None, not_started)
    assert all(r.outcome is not Outcome.NOT_STARTED for r in results)  # 1 of 2 is 50%: not more


def test_facts_read_the_lock_the_watchdog_and_free_space():
    held = "nixtasks-lock.service loaded active running nixtasks-lock:who=me@box,action=switch"
    facts = parse_facts(f"running\t/nix/store/a\nsystemd\tyes\nlock\t{held}\n"
                        "reverted\t1700000000 0\nstore-df\t/dev/sda1 100 50 2048 3% /nix\n")
    assert facts.systemd and facts.lock_holder == "who=me@box,action=switch"
    assert facts.reverted == "1700000000 0" and facts.store_free == 2048 * 1024
    assert parse_facts("running\t\nlock\tnixtasks-lock.service loaded active running something else\n"
                       ).lock_holder == ""
    stopping = "nixtasks-lock.service loaded deactivating stop-sigterm nixtasks-lock:who=me@box"
    assert parse_facts(f"running\t\nlock\t{stopping}\n").lock_holder == ""  # on its way out: not held
    assert parse_facts("running\t\nlock\t\n").lock_holder == ""
