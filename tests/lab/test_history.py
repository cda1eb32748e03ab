"""What the journals know, end to end in the lab: the generations that failed (a rollback
passes them), which machine a record is about (two repositories' web1), what a killed
deployer leaves (the host's own records), and Ctrl-C during the build."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from nixtasks.actions.journal import HOST_JOURNAL, parse_lines
from nixtasks.host.runner import OWNER_FILE

from .conftest import REPO, Fleet, start_invoke


def deploy(fleet: Fleet, host: str, *extra: str):
    return fleet.invoke("switch", "--host", host, "--yes", *extra)


def wait_for(lines: list[str], text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in list(lines)):
        assert time.monotonic() < deadline, f"never saw {text!r} in:\n{''.join(lines)}"
        time.sleep(0.05)


def host_journal(fleet: Fleet, host: str):
    return parse_lines(fleet.lab.exec(host, "cat", HOST_JOURNAL, check=False).stdout)


def test_a_rollback_passes_the_generations_that_failed_and_generations_marks_them(fleet):
    host = "web2"
    assert deploy(fleet, host).returncode == 0  # generation 1: good
    good = fleet.lab.current_system(host)
    # A failed switch makes no generation (its boot entry comes after the checks): each failed
    # generation here is made the boot entry first (`boot`, which checks nothing), then fails a switch.
    fleet.set_knobs(host, release="1.1", healthy=False)
    assert fleet.invoke("boot", "--host", host, "--yes").returncode == 0  # generation 2
    assert deploy(fleet, host, "--no-rollback").returncode == 1  # fails its checks, left running
    fleet.set_knobs(host, release="1.2", healthy=True, break_network=True)
    assert fleet.invoke("boot", "--host", host, "--yes").returncode == 0  # 3
    proc = deploy(fleet, host, "--confirm-timeout", "3")  # cuts the host off; its watchdog puts 2's system back
    assert proc.returncode == 1 and "reverted by the watchdog" in proc.stderr, proc.stderr
    fleet.set_knobs(host, release="1.3", break_network=False, healthy=False)
    assert fleet.invoke("boot", "--host", host, "--yes").returncode == 0  # 4
    assert deploy(fleet, host, "--no-rollback").returncode == 1  # fails, left running (and booting 4)

    gens = fleet.invoke_json("generations", "--host", host)[host]
    assert {g["number"]: g["failed"] for g in gens} == {4: True, 3: True, 2: True, 1: False}
    listing = fleet.invoke("generations", "--host", host).stdout
    assert [line.split()[0] for line in listing.splitlines() if "FAILED" in line] == ["4", "3", "2"], listing

    proc = fleet.invoke("rollback", "--host", host, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "skipping generation(s) 3, 2, which failed before" in proc.stderr, proc.stderr
    assert fleet.lab.current_system(host) == good == fleet.lab.profile(host)

    # --generation N still goes to N, saying in the plan, before the question, that it failed
    proc = fleet.invoke("rollback", "--host", host, "--generation", "2", "--yes")
    warning = proc.stderr.index("generation 2 FAILED before (switch failed")
    assert warning < proc.stderr.index("  batches:"), proc.stderr
    assert proc.returncode == 1 and "rolled back to generation 1" in proc.stderr  # its checks fail again
    assert fleet.lab.current_system(host) == good


def test_history_shows_the_records_of_the_machine_the_inventory_means(fleet, lab):
    other = Fleet(lab, lab.workspace / "other-fleet")  # another repository whose web1 is the machine web2
    subprocess.run([str(REPO / "examples" / "make-repo"), str(other.path)], check=True)
    other.set_target("web1", "deploy@web2")
    assert deploy(fleet, "web1").returncode == 0
    assert deploy(other, "web1").returncode == 0
    machine = {h: lab.exec(h, "cat", "/etc/machine-id").stdout.strip() for h in ("web1", "web2")}
    assert machine["web1"] != machine["web2"]

    for repo, where in ((fleet, "web1"), (other, "web2")):
        records = repo.invoke_json("history", "--host", "web1")
        assert records and {r["machine_id"] for r in records} == {machine[where]}, records
        mine = [r for r in records if r["action"] == "switch" and r["outcome"] == "ok"]
        assert [r["repository"] for r in mine] == [str(repo.path.resolve())], records
        assert all(r["repository"] in (None, str(repo.path.resolve())) for r in records)


def test_a_killed_deployer_leaves_its_activation_and_the_watchdog_s_revert_on_the_host(fleet):
    assert deploy(fleet, "web1").returncode == 0
    good = fleet.lab.current_system("web1")
    fleet.set_knobs("web1", release="1.1", activation_seconds=3)
    new = fleet.build("web1")
    proc, lines = start_invoke(fleet.path, fleet.lab.env, "switch", "--host", "web1", "--yes",
                               "--confirm-timeout", "3")
    wait_for(lines, "activation: sleeping")  # armed, profile set, switch-to-configuration under way
    mine = [p for base in {"/tmp", os.environ.get("XDG_RUNTIME_DIR") or "/tmp"}
            for p in Path(base).glob("nixtasks-*")
            if (p / OWNER_FILE).is_file() and (p / OWNER_FILE).read_text().split()[0] == str(proc.pid)]
    assert len(mine) == 1 and (mine[0] / "roots").is_dir()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 90  # the host reverts by itself
    while fleet.lab.exec("web1", "test", "-e", "/run/nixtasks/watchdog-reverted", check=False).returncode != 0:
        assert time.monotonic() < deadline, "the watchdog never reverted web1"
        time.sleep(0.5)
    assert fleet.lab.current_system("web1") == good == fleet.lab.profile("web1")

    on_host = host_journal(fleet, "web1")
    started = [r for r in on_host if r.outcome == "started" and r.tried_path == new]
    reverted = [r for r in on_host if r.action == "watchdog"]
    assert len(started) == 1 and started[0].before_path == good, on_host
    assert len(reverted) == 1 and reverted[0].outcome == "reverted by the watchdog", on_host
    assert (reverted[0].tried_path, reverted[0].after_path, reverted[0].host) == (new, good, "web1")

    history = fleet.invoke_json("history", "--host", "web1")  # the next run: also removes what the dead one left
    assert {started[0].id, reverted[0].id} <= {r["id"] for r in history}
    assert not mine[0].exists()
    text = fleet.invoke("history", "--host", "web1").stdout
    assert "reverted by the watchdog" in text and "started" in text


def test_ctrl_c_during_the_build_reports_journals_and_touches_no_host(fleet):
    assert deploy(fleet, "web1").returncode == 0
    before = {h: fleet.lab.current_system(h) for h in ("web1", "web2")}
    on_host = {h: fleet.lab.exec(h, "cat", HOST_JOURNAL, check=False).stdout for h in ("web1", "web2")}
    fleet.set_knobs("web1", release="1.1", build_seconds=60)
    fleet.set_knobs("web2", release="1.1", build_seconds=60)
    journal = Path(fleet.lab.env["NIXTASKS_JOURNAL"])
    known = len(journal.read_text().splitlines())
    proc, lines = start_invoke(fleet.path, fleet.lab.env, "switch", "--host", "web1,web2", "--yes")
    wait_for(lines, "build: sleeping")
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 130, "".join(lines)
    proc.stdout.close()
    text = "".join(lines)
    assert "web1  not started" in text and "web2  not started" in text, text
    assert "error: interrupted during the build; nothing was changed on any host" in text, text
    records = [json.loads(line) for line in journal.read_text().splitlines()[known:]]
    assert sorted((r["host"], r["outcome"], r["message"]) for r in records) == [
        (h, "not started", "interrupted during the build; nothing changed") for h in ("web1", "web2")]
    for host in ("web1", "web2"):
        assert fleet.lab.current_system(host) == before[host]
        assert fleet.lab.exec(host, "cat", HOST_JOURNAL, check=False).stdout == on_host[host]
