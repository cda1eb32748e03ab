"""Which generations failed before, which machine a record is about, the records the host's
own scripts write, and the control directories a killed run leaves."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from nixtasks.actions import journal
from nixtasks.errors import UsageError
from nixtasks.host import commands, generations, runner
from nixtasks.host.facts import FACTS_SCRIPT, parse_facts

STORE = "/nix/store/" + "x" * 32
LIST = "".join(f"   {n}   2026-11-2{n} 10:00:00{'   (current)' if n == 7 else ''}\n" for n in range(3, 8))
DETAILS = "".join(f"gen\t{n}\t{STORE}-sys-{n}\t1.{n}\t\t\n" for n in range(3, 8)) + f"running\t{STORE}-sys-7\n"


def record(path: str, outcome: str, time: str, **fields: object) -> journal.Record:
    return replace(journal.new_record("web2", "switch", outcome, **fields), tried_path=path, time=time)


def failed_5_to_7() -> generations.HostGenerations:
    records = [record(f"{STORE}-sys-{n}", outcome, f"2026-12-0{n - 2}T10:00:00+00:00")
               for n, outcome in ((4, "ok"), (5, "rolled back"), (6, "reverted by the watchdog"), (7, "failed"))]
    failures = {path: r.outcome for path, r in journal.failed_systems(records).items()}
    return generations.mark_failed(generations.parse(LIST, DETAILS), failures)


def test_a_rollback_skips_the_generations_that_failed_and_says_which():
    target, passed = generations.choose_target("web2", failed_5_to_7(), None)
    assert target.number == 4 and [g.number for g in passed] == [6, 5]
    assert "FAILED: reverted by the watchdog" in generations.render("web2", failed_5_to_7())
    listed = {g["number"]: g["failed"] for g in (g.as_json() for g in failed_5_to_7().generations)}
    assert listed == {7: True, 6: True, 5: True, 4: False, 3: False}


def test_generation_n_is_still_generation_n_even_if_it_failed():
    target, passed = generations.choose_target("web2", failed_5_to_7(), 6)
    assert (target.number, target.failed, passed) == (6, "reverted by the watchdog", [])


def test_no_earlier_generation_that_did_not_fail_is_an_error_that_names_the_way_out():
    gens = generations.mark_failed(failed_5_to_7(), {f"{STORE}-sys-{n}": "failed" for n in range(3, 8)})
    with pytest.raises(UsageError, match=r"failed before \(6, 5, 4, 3\); to go to one anyway: --generation N"):
        generations.choose_target("web2", gens, None)


def test_a_failure_is_its_system_s_until_that_system_succeeds_and_a_reused_number_is_not_it():
    bad = f"{STORE}-sys-5"
    records = [record(bad, "failed", "2026-12-01T10:00:00+00:00"),
               record(bad, "started", "2026-12-02T10:00:00+00:00"),
               record("", "ok", "2026-12-02T10:00:01+00:00", after_path=bad)]
    assert set(journal.failed_systems(records)) == {bad}  # neither a start nor an unrelated ok clears it
    assert journal.failed_systems([*records, record(bad, "ok", "2026-12-03T10:00:00+00:00")]) == {}
    # after a gc, generation 5 is another system: the failure does not follow the number
    again = generations.parse("   5   2026-12-04 10:00:00   (current)\n", f"gen\t5\t{STORE}-other\t1\t\t\n")
    assert not generations.mark_failed(again, {bad: "failed"}).get(5).failed


def test_records_without_the_newer_fields_parse_and_a_wrong_type_does_not():
    old = {k: v for k, v in json.loads(journal.new_record("web1", "switch", "ok").line()).items()
           if k not in ("machine_id", "repository", "tried_path")}
    assert journal.parse_lines(json.dumps(old))[0].machine_id is None
    assert not journal.parse_lines(json.dumps({**old, "machine_id": 7}))
    assert not journal.parse_lines(json.dumps({**old, "surprise": ""}))
    assert not journal.parse_lines(json.dumps({k: v for k, v in old.items() if k != "operator"}))


def test_history_keeps_the_machine_s_records_and_marks_those_that_do_not_say():
    mine = journal.new_record("web1", "switch", "ok", machine_id="a" * 32)
    renamed = journal.new_record("app1", "switch", "ok", machine_id="a" * 32)  # another inventory's name for it
    other = journal.new_record("web1", "switch", "ok", machine_id="b" * 32)  # another repository's web1
    older = journal.new_record("web1", "switch", "ok")
    assert journal.of_machine([mine, renamed, other, older], "web1", "a" * 32) == [mine, renamed, older]
    table = journal.render([mine, older]).splitlines()
    assert "web1?" in table[2] and "web1?" not in table[1] and table[-1] == journal.UNKNOWN_MACHINE


def test_the_facts_and_the_generations_say_which_machine_it_is():
    assert parse_facts("running\t/x\nmachine-id\tabc123\n").machine_id == "abc123"
    assert generations.parse("", "machine-id\tabc123\n").machine_id == "abc123"
    assert "/etc/machine-id" in generations.DETAILS_SCRIPT and "/etc/machine-id" in FACTS_SCRIPT


def run_watchdog_journal(tmp_path: Path, status: int) -> list[journal.Record]:
    """The watchdog's own record, written by its script's last lines, as it writes it."""
    script = commands.WATCHDOG_SCRIPT
    tail = script[script.index("echo \"$(date +%s) $status\""):]
    tail = (tail.replace(commands.HOST_JOURNAL, str(tmp_path / "journal.jsonl"))
            .replace(commands.WATCHDOG_REVERTED, str(tmp_path / "reverted"))
            .replace(f"mkdir -p {commands.HOST_JOURNAL.rsplit('/', 1)[0]}", ":"))
    subprocess.run(["sh", "-c", f"gen=8; status={status}\n{tail}", "watchdog", "7", f"{STORE}-old",
                    f"{STORE}-old", "switch", "3", "web1", f"{STORE}-new"], check=True)
    return journal.read_local(tmp_path / "journal.jsonl")


def test_the_watchdog_s_own_record_is_a_well_formed_journal_record(tmp_path):
    (reverted,) = run_watchdog_journal(tmp_path, 0)
    assert (reverted.host, reverted.action, reverted.outcome) == ("web1", "watchdog", "reverted by the watchdog")
    assert (reverted.before_generation, reverted.after_generation) == (8, 7)
    assert (reverted.tried_path, reverted.after_path) == (f"{STORE}-new", f"{STORE}-old")
    assert reverted.operator.startswith("nixtasks-watchdog@") and len(reverted.id) == 32
    assert set(journal.failed_systems([reverted])) == {f"{STORE}-new"}


def test_a_failed_revert_is_journalled_as_failed(tmp_path):
    (record_,) = run_watchdog_journal(tmp_path, 4)
    assert record_.outcome == "failed" and "exit 4" in record_.message and record_.after_path is None


def test_the_watchdog_s_revert_activates_what_ran_before_and_leaves_the_profile(tmp_path):
    """Nothing the watchdog guards set the profile (a switch sets it once confirmed): its revert
    is the old system's `test`, so a host that loses power afterwards boots what it booted."""
    script = commands.WATCHDOG_SCRIPT
    revert = script[script.index("status=0"):script.index('echo "$(date +%s) $status"')]
    ran = tmp_path / "ran"
    for stub in (tmp_path / "old" / "bin" / "switch-to-configuration", tmp_path / "bin" / "nix-env"):
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text(f'#!/bin/sh\necho "$0 $*" >> {ran}\n')
        stub.chmod(0o755)
    args = ["watchdog", "7", f"{tmp_path}/booted", f"{tmp_path}/old", "switch", "30", "web1", "/n"]
    out = subprocess.run(["sh", "-c", revert + 'echo "status=$status"', *args], check=True, capture_output=True,
                         env={"PATH": f"{tmp_path}/bin:/usr/bin:/bin"}, text=True).stdout
    assert ran.read_text().splitlines() == [f"{tmp_path}/old/bin/switch-to-configuration test"]
    assert out.strip() == "status=0"


def test_the_arm_carries_the_started_record_as_its_first_line():
    cmd = commands.arm_watchdog(30, 4, "/b", "/r", commands.Action.SWITCH, host="web1", system="/n",
                                record='{"a": 1}')
    assert cmd.stdin.splitlines()[0] == '{"a": 1}' and cmd.stdin.endswith(commands.WATCHDOG_SCRIPT)
    assert cmd.argv[-2:] == ("web1", "/n") and 'read -r record' in commands.ARM_SCRIPT


def test_a_killed_run_s_control_directory_goes_and_a_live_one_s_stays(tmp_path, monkeypatch):
    dead = subprocess.Popen(["true"])
    dead.wait()
    for name, owner in (("nixtasks-dead", f"{dead.pid} 1"), ("nixtasks-live", runner.process_identity(os.getpid())),
                        ("nixtasks-reused", f"{os.getpid()} 1"), ("nixtasks-foreign", None)):
        (tmp_path / name / "roots").mkdir(parents=True)
        if owner is not None:
            (tmp_path / name / runner.OWNER_FILE).write_text(owner)
    runner.remove_leftovers(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nixtasks-foreign", "nixtasks-live"]
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    made = runner.short_control_dir()
    assert Path(made, runner.OWNER_FILE).read_text() == runner.process_identity(os.getpid())


def test_history_has_one_record_per_host_per_deploy_and_keeps_a_start_that_never_ended():
    def record(host: str, outcome: str, tried: str, operator: str = "ann@box") -> journal.Record:
        return replace(journal.new_record(host, "switch", outcome, tried_path=tried), operator=operator)

    started, ended = record("web1", "started", "/nix/store/a"), record("web1", "ok", "/nix/store/a")
    killed = record("web2", "started", "/nix/store/b")  # its deployer was killed: nothing after it
    reverted = record("web2", "reverted by the watchdog", "/nix/store/b", operator="nixtasks-watchdog@web2")
    again = record("web1", "started", "/nix/store/a")  # the same system once more, still under way
    assert journal.finished([started, ended, killed, reverted, again]) == [ended, killed, reverted, again]
    # killed while switching to a system, then that system deployed fine: the killed start stays
    lost, retried, done = (record("web1", "started", "/nix/store/c"), record("web1", "started", "/nix/store/c"),
                           record("web1", "ok", "/nix/store/c"))
    assert journal.finished([lost, retried, done]) == [lost, done]


def test_the_watchdog_gives_the_confirmation_its_time_after_the_activation(tmp_path):
    """After the activation ends, the watchdog waits the confirmation's time (its 5th argument)
    before it reverts. Inside its function that argument was empty once, so a long activation
    was reverted the moment it ended, however healthy."""
    stubs = tmp_path / "running" / "sw" / "bin"
    stubs.mkdir(parents=True)
    for name, body in (("systemctl", ":"), ("stat", "echo 1000"), ("date", "echo 1000"),
                       ("sleep", f"echo \"$1\" >> {tmp_path}/slept")):
        (stubs / name).write_text(f"#!/bin/sh\n{body}\n")
        (stubs / name).chmod(0o755)
    done = tmp_path / "activation-done"
    done.touch()
    script = commands.WATCHDOG_SCRIPT
    head = script[:script.index("after_activation ||")] + "after_activation\n"
    head = head.replace(commands.ACTIVATION_DONE, str(done))
    subprocess.run(["sh", "-c", head, "watchdog", "7", "/b", str(tmp_path / "running"), "switch", "45", "web1", "/n"],
                   check=True, timeout=30)
    assert (tmp_path / "slept").read_text().split() == ["45"]  # activation done at 1000, now 1000: all 45 s


def test_a_host_running_no_generation_rolls_back_to_what_boots():
    """A switch that failed and was left as it is (--no-rollback) never became a generation: the
    host runs it and boots generation 2. A rollback goes back to generation 2, not one before it."""
    listed = "   1   2026-12-01 08:45:08   \n   2   2026-12-01 08:45:19   (current)\n"
    details = (f"gen\t1\t{STORE}-sys-1\t\t\t\t\t\ngen\t2\t{STORE}-sys-2\t\t\t\t\t\n"
               f"running\t{STORE}-sys-bad\n")
    target, passed = generations.choose_target("web1", generations.parse(listed, details), None)
    assert (target.number, passed) == (2, [])
    ran = details.replace(f"running\t{STORE}-sys-bad", f"running\t{STORE}-sys-2")  # it runs what boots
    assert generations.choose_target("web1", generations.parse(listed, ran), None)[0].number == 1
