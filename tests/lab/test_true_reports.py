"""Reports that describe each host as it is at the end (issue 18, items 5 and 6): the hosts'
real state, the report table and `--json`, the exit code, and the records in the deployer's
journal, the host's, and `history`."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from nixtasks.actions.journal import HOST_JOURNAL, parse_lines
from tests.screen import ENTER

from .conftest import Fleet, start_invoke
from .test_screen import answer_env, asked, invoke_at_terminal


def wait_for(lines: list[str], text: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in list(lines)):
        assert time.monotonic() < deadline, f"never saw {text!r} in:\n{''.join(lines)}"
        time.sleep(0.05)


def finished_output(proc: subprocess.Popen[str]) -> str:
    """Its stdout (the JSON), once it exited; its stderr is start_invoke's thread's alone
    (communicate would read it too)."""
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait(timeout=300)
    return out


def errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def journal_lines(fleet: Fleet) -> list[str]:
    return Path(fleet.lab.env["NIXTASKS_JOURNAL"]).read_text().splitlines()


def deployer_records(fleet: Fleet, since: int = 0) -> list[dict[str, object]]:
    lines = journal_lines(fleet)[since:]
    return [r for r in map(json.loads, lines) if r["outcome"] != "started"]


def journal_length(fleet: Fleet) -> int:
    return len(journal_lines(fleet))


def host_records(fleet: Fleet, host: str, revision: str):
    return [r for r in parse_lines(fleet.lab.exec(host, "cat", HOST_JOURNAL, check=False).stdout)
            if r.git_revision == revision and r.outcome != "started"]


def release(fleet: Fleet, **per_host: str) -> str:
    data = json.loads((fleet.path / "hosts.json").read_text())
    for host, number in per_host.items():
        data["hosts"][host]["release"] = number
    (fleet.path / "hosts.json").write_text(json.dumps(data, indent=2) + "\n")
    fleet.git("commit", "-qam", f"releases {per_host}")
    return fleet.git("rev-parse", "HEAD").strip()


def report_rows(text: str) -> dict[str, str]:
    return {m.group(1): m.group(0) for m in re.finditer(r"^(web1|web2|db1)\s+(ok|failed|rolled back|declined|not "
                                                        r"started|locked|not selected)\b.*$", text, re.M)}


# --- 5a: a no after the canary went out ---------------------------------------------------------


def test_a_no_after_the_canary_went_out_exits_1_and_names_what_changed(fleet: Fleet):
    assert fleet.invoke("switch", "--all", "--yes").returncode == 0
    old = {h: fleet.lab.current_system(h) for h in ("web1", "web2", "db1")}
    revision = release(fleet, web1="1.1", web2="1.1", db1="1.1")
    since = journal_length(fleet)
    with invoke_at_terminal(fleet.path, answer_env(fleet.lab), "canary", "--host", "web1,web2,db1") as term:
        asked(term, "Canary: switch web1 first (1 host)?", after="canary:")
        term.send("y" + ENTER)
        asked(term, "The canary is healthy. Switch the rest: web2, db1 (2 hosts)?")
        term.send(ENTER)  # No, the first choice
        code = term.wait_exit()
        screen = term.scrollback()
    assert code == 1, screen  # not 3: "nothing was changed" would be false
    line = " ".join(errors(screen)[-1].split())  # the terminal may wrap it
    assert line.startswith("error: not approved for web2, db1; this run changed web1 (ok) before that"), screen
    rows = report_rows(screen)
    assert "web1-1.1" in rows["web1"] and " ok " in rows["web1"]
    assert "declined" in rows["web2"] and "web2-1.0" in rows["web2"]
    assert fleet.lab.current_system("web1") == fleet.build("web1") == fleet.lab.profile("web1") != old["web1"]
    for host in ("web2", "db1"):
        assert fleet.lab.current_system(host) == old[host] == fleet.lab.profile(host)
    outcomes = {r["host"]: r["outcome"] for r in deployer_records(fleet, since)}
    assert outcomes == {"web1": "ok", "web2": "declined", "db1": "declined"}
    assert [r.outcome for r in host_records(fleet, "web1", revision)] == ["ok"]


def paused_between_batches(fleet: Fleet, pause: int) -> tuple[int, subprocess.Popen[str], list[str]]:
    """web1 and web2 on release 1.0, then a switch of both to 1.1, one batch at a time, started and
    paused after web1's batch: the journal's length before it, the deployer and its lines."""
    assert fleet.invoke("switch", "--host", "web1,web2", "--yes").returncode == 0
    release(fleet, web1="1.1", web2="1.1")
    since = journal_length(fleet)
    proc, lines = start_invoke(fleet.path, fleet.lab.env, "switch", "--host", "web1,web2", "--yes", "--batches", "1",
                               "--pause", str(pause), "--json")
    wait_for(lines, "pausing")
    return since, proc, lines


# --- 5b: a host lost after the plan -------------------------------------------------------------


def test_a_host_that_went_down_after_the_plan_is_failed_not_locked_and_not_known(fleet: Fleet):
    since, proc, lines = paused_between_batches(fleet, pause=10)
    fleet.lab.exec("web2", "systemctl", "poweroff", check=False)  # down, as a machine switched off
    out = finished_output(proc)
    wait_for(lines, "error: ", timeout=30)  # its stderr, read by a thread, to its last line
    text = "".join(lines)
    assert proc.returncode == 1, text
    found = errors(text)
    assert len(found) == 1 and found[0].startswith("error: web2: failed: cannot take the lock: web2: cannot reach "
                                                   "the host over ssh"), text
    assert "unlock" not in text and "locked" not in text  # no other deploy holds anything
    hosts = {h["host"]: h for h in json.loads(out)["hosts"]}
    assert hosts["web2"]["outcome"] == "failed"
    assert (hosts["web2"]["system_after"], hosts["web2"]["generation_after"]) == (None, None)  # not known
    assert hosts["web2"]["system_before"].endswith("-nixos-system-web2-1.0")
    assert hosts["web1"]["outcome"] == "ok" and hosts["web1"]["system_after"] == fleet.build("web1")
    assert fleet.lab.current_system("web1") == fleet.build("web1") == fleet.lab.profile("web1")
    records = {r["host"]: r for r in deployer_records(fleet, since)}
    assert records["web2"]["outcome"] == "failed" and records["web2"]["after_path"] is None


# --- 5c: a host another deploy switched between our plan and our activation ------------------------


def test_a_host_changed_since_the_plan_reports_what_it_runs_now(fleet: Fleet):
    since, proc, lines = paused_between_batches(fleet, pause=30)
    theirs = release(fleet, web2="1.2")  # another operator's deploy of web2, meanwhile
    other = fleet.invoke("switch", "--host", "web2", "--yes")
    assert other.returncode == 0, other.stderr
    now = fleet.lab.current_system("web2")
    assert now.endswith("-nixos-system-web2-1.2") and now == fleet.lab.profile("web2")
    out = finished_output(proc)
    wait_for(lines, "error: ", timeout=30)  # its stderr, read by a thread, to its last line
    text = "".join(lines)
    assert proc.returncode == 1, text
    assert "it changed since the plan" in errors(text)[0], text
    hosts = {h["host"]: h for h in json.loads(out)["hosts"]}
    assert hosts["web2"]["outcome"] == "failed"
    assert (hosts["web2"]["system_after"], hosts["web2"]["generation_after"]) == (now, 2)  # theirs, not the plan's
    assert hosts["web2"]["system_before"].endswith("-nixos-system-web2-1.0") and hosts["web2"]["generation_before"] == 1
    assert "web2-1.2" in report_rows(text)["web2"] and "1 -> 2" in report_rows(text)["web2"]
    assert fleet.lab.current_system("web2") == now == fleet.lab.profile("web2")  # left alone
    ours = [r for r in deployer_records(fleet, since) if r["host"] == "web2" and r["outcome"] == "failed"]
    assert len(ours) == 1 and (ours[0]["after_path"], ours[0]["after_generation"]) == (now, 2)
    first = fleet.git("rev-parse", "HEAD~1").strip()
    on_host = host_records(fleet, "web2", first)
    assert [(r.outcome, r.after_path, r.after_generation) for r in on_host] == [("failed", now, 2)]
    assert [r.outcome for r in host_records(fleet, "web2", theirs)] == ["ok"]


# --- 6: one record per host per deploy with --rollback-batch-on-failure --------------------------


def test_a_host_rolled_back_with_its_batch_has_one_record(fleet: Fleet):
    assert fleet.invoke("switch", "--host", "web1,web2", "--yes").returncode == 0
    old = {h: fleet.lab.current_system(h) for h in ("web1", "web2")}
    data = json.loads((fleet.path / "hosts.json").read_text())
    data["hosts"]["web1"]["release"] = "1.1"
    data["hosts"]["web2"].update(release="1.1", healthy=False)
    (fleet.path / "hosts.json").write_text(json.dumps(data, indent=2) + "\n")
    fleet.git("commit", "-qam", "web2 unhealthy")
    revision = fleet.git("rev-parse", "HEAD").strip()
    since = journal_length(fleet)
    proc = fleet.invoke("switch", "--host", "web1,web2", "--yes", "--rollback-batch-on-failure", "--json")
    assert proc.returncode == 1, proc.stderr
    hosts = {h["host"]: h for h in json.loads(proc.stdout)["hosts"]}
    assert hosts["web1"]["outcome"] == "rolled back" and hosts["web2"]["outcome"] == "rolled back"
    assert hosts["web1"]["message"].startswith("with its batch: web2 failed (rolled back: check http"), hosts["web1"]
    assert (hosts["web1"]["system_after"], hosts["web1"]["generation_after"]) == (old["web1"], 1)
    assert {"activation", "checks", "rollback"} <= set(hosts["web1"]["stages"])
    for host in ("web1", "web2"):
        assert fleet.lab.current_system(host) == old[host] == fleet.lab.profile(host)
    ends = deployer_records(fleet, since)
    assert sorted((r["host"], r["outcome"]) for r in ends) == [("web1", "rolled back"), ("web2", "rolled back")]
    web1 = next(r for r in ends if r["host"] == "web1")
    assert web1["tried_path"] == fleet.build("web1") and web1["after_path"] == old["web1"]
    assert "with its batch: web2 failed" in web1["message"]
    assert [r.outcome for r in host_records(fleet, "web1", revision)] == ["rolled back"]
    shown = fleet.invoke("history", "--host", "web1", "--json")
    assert shown.returncode == 0, shown.stderr
    mine = [r for r in json.loads(shown.stdout) if r["git_revision"] == revision]
    assert [r["outcome"] for r in mine] == ["rolled back"], mine  # its started record answered by that one


