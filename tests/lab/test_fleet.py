"""The fleet engine end to end on eight lab hosts: selection by tag, batches, health checks
and rollback, the watchdog, locks, Ctrl-C and unreachable hosts. Every test looks at the
hosts' real state (/run/current-system, the profile, the lock, the journal)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Lab, copying, interrupt, labctl, repo_with_hosts, start_invoke

EXTRA = ("web3", "web4", "app1", "app2", "app3")
ALL = ("web1", "web2", "db1", *EXTRA)
WEB = ("web1", "web2", "web3", "web4")


class Fleet8:
    def __init__(self, lab: Lab, path: Path) -> None:
        self.lab, self.path = lab, path
        self.journal = lab.workspace / "fleet8-journal.jsonl"

    def env(self) -> dict[str, str]:
        return {**self.lab.env, "NIXTASKS_JOURNAL": str(self.journal), "NIXTASKS_YES": "", "NIXTASKS_REASON": ""}

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.path), *args], check=True, text=True,
                              capture_output=True).stdout

    def knobs(self, **per_host: dict[str, object]) -> None:
        data = json.loads((self.path / "hosts.json").read_text())
        for host, knobs in per_host.items():
            target = data["defaults"] if host == "defaults" else data["hosts"].setdefault(host, {})
            target.update(knobs)
        (self.path / "hosts.json").write_text(json.dumps(data, indent=2) + "\n")
        self.git("commit", "-qam", f"knobs {per_host}")

    def invoke(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=self.path, text=True, capture_output=True,
                              env=self.env(), stdin=subprocess.DEVNULL, timeout=timeout)

    def invoke_json(self, *args: str) -> Any:
        proc = self.invoke(*args, "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def start(self, *args: str) -> tuple[subprocess.Popen[str], list[str]]:
        """invoke in the background; its stderr lines collect in the returned list."""
        return start_invoke(self.path, self.env(), *args)

    def release(self, host: str) -> str:
        status, body = self.lab.health(host)
        return json.loads(body)["release"] if status == 200 else f"http {status}"

    def records(self) -> list[dict[str, object]]:
        if not self.journal.exists():
            return []
        return [json.loads(line) for line in self.journal.read_text().splitlines()]

    def locked(self, host: str) -> bool:
        return self.lab.exec(host, "systemctl", "is-active", "nixtasks-lock.service", check=False).returncode == 0

    def deploy_all(self) -> None:
        proc = self.invoke("switch", "--all", "--yes")
        assert proc.returncode == 0, proc.stderr


def wait_for(lines: list[str], text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for line in list(lines)):
            return
        time.sleep(0.05)
    raise AssertionError(f"never saw {text!r} in:\n{''.join(lines)}")


@pytest.fixture(scope="module")
def eight_hosts(lab: Lab) -> Iterator[Path]:
    labctl("up", *EXTRA)
    tags = {h: "web" if h.startswith("web") else "app" for h in EXTRA}
    path = repo_with_hosts(lab.workspace / "fleet8", {h: f"root@{h}" for h in EXTRA}, tags, "eight")
    try:
        yield path
    finally:
        labctl("down", *EXTRA, check=False)


@pytest.fixture
def fleet8(lab: Lab, eight_hosts: Path) -> Fleet8:
    fl = Fleet8(lab, eight_hosts)
    fl.git("reset", "-q", "--hard", "eight")
    fl.git("clean", "-qfdx")
    labctl("reset", *ALL)
    fl.journal.unlink(missing_ok=True)
    return fl


def test_make_tag_switches_the_tagged_hosts_only(fleet8):
    proc = subprocess.run(["make", f"INVOKE={sys.executable} -m invoke", "tag/web/switch", "YES=1"], cwd=fleet8.path,
                          text=True, capture_output=True, env=fleet8.env(), stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Switch web1, web2, web3, web4 (4 hosts)? yes" in proc.stderr  # one question naming every host
    assert proc.stderr.count("Plan: switch on 4 host(s)") == 1
    for host in WEB:
        assert fleet8.release(host) == "1.0" and fleet8.lab.current_system(host) == fleet8.lab.profile(host) != ""
    for host in ("db1", "app1", "app2", "app3"):
        assert fleet8.lab.current_system(host) == ""
    assert sorted(r["host"] for r in fleet8.records() if r["outcome"] != "started") == sorted(WEB)
    assert not any(fleet8.locked(h) for h in WEB)  # every lock released


def test_a_failing_activation_in_the_second_batch_is_rolled_back_and_halts(fleet8):
    fleet8.deploy_all()
    before = {h: fleet8.lab.current_system(h) for h in ALL}
    fleet8.knobs(defaults={"release": "1.1"}, web4={"fail_activation": True})
    # Batches of 2 in the order given: web1 web2 | db1 web4 | web3 app1 | app2 app3
    order = ["web1", "web2", "db1", "web4", "web3", "app1", "app2", "app3"]
    proc = fleet8.invoke("switch", "--host", ",".join(order), "--batch-size", "2", "--yes", "--json")
    assert proc.returncode == 1, proc.stderr
    report = {h["host"]: h for h in json.loads(proc.stdout)["hosts"]}
    assert [report[h]["outcome"] for h in order] == ["ok"] * 3 + ["rolled back"] + ["not started"] * 4
    assert "Activation script snippet 'nixtasks-fail' failed" in report["web4"]["message"]
    assert fleet8.lab.current_system("web4") == before["web4"] == fleet8.lab.profile("web4")
    assert fleet8.release("web4") == "1.0"
    for host in ("web3", "app1", "app2", "app3"):  # later batches untouched
        assert fleet8.lab.current_system(host) == before[host] and fleet8.release(host) == "1.0"
    for host in ("web1", "web2", "db1"):
        assert fleet8.release(host) == "1.1"
    assert set(report["web1"]["stages"]) >= {"build", "copy", "activation", "checks"}
    outcomes = {r["host"]: r["outcome"] for r in fleet8.records()}
    assert outcomes["web4"] == "rolled back" and outcomes["app3"] == "not started"
    assert "error: web4: rolled back" in proc.stderr


def test_a_failing_health_check_is_rolled_back_while_the_others_stay_new(fleet8):
    fleet8.deploy_all()
    fleet8.knobs(defaults={"release": "1.1"}, web2={"healthy": False})
    proc = fleet8.invoke("switch", "--tag", "web", "--yes")
    assert proc.returncode == 1, proc.stderr
    assert fleet8.release("web2") == "1.0"
    assert all(fleet8.release(h) == "1.1" for h in ("web1", "web3", "web4"))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "web2: rolled back: check http" in errors[0] and "answered 500" in errors[0]
    on_host = fleet8.lab.exec("web2", "cat", "/var/lib/nixtasks/journal.jsonl").stdout
    assert '"outcome": "rolled back"' in on_host


def test_rollback_batch_on_failure_takes_the_healthy_hosts_back_too(fleet8):
    fleet8.deploy_all()
    fleet8.knobs(defaults={"release": "1.1"}, web2={"healthy": False})
    proc = fleet8.invoke("switch", "--tag", "web", "--yes", "--rollback-batch-on-failure")
    assert proc.returncode == 1, proc.stderr
    assert all(fleet8.release(h) == "1.0" for h in WEB), proc.stderr
    assert "its batch failed (web2)" in proc.stderr


def test_no_rollback_leaves_the_failed_host_loudly(fleet8):
    fleet8.deploy_all()
    fleet8.knobs(defaults={"release": "1.1"}, web1={"healthy": False})
    proc = fleet8.invoke("switch", "--host", "web1", "--yes", "--no-rollback")
    assert proc.returncode == 1 and "LEFT AS IT IS (--no-rollback)" in proc.stderr, proc.stderr
    assert fleet8.release("web1") == "http 500"


@pytest.mark.parametrize("cut", ["web3", "db1"], ids=["nix-2.8", "nix-2.26"])
def test_a_host_cut_off_by_its_activation_reverts_by_itself(fleet8, cut):
    """The watchdog is a transient timer of the host's own systemd: 252 on Debian 12, 257 on 13."""
    fleet8.deploy_all()
    good = fleet8.lab.current_system(cut)
    fleet8.knobs(defaults={"release": "1.1"}, **{cut: {"break_network": True}})
    started = time.monotonic()
    proc = fleet8.invoke("switch", "--host", f"{cut},web4", "--yes", "--confirm-timeout", "5")
    took = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert re.search(rf"\b{cut} +reverted by the watchdog", proc.stderr), proc.stderr
    assert fleet8.lab.current_system(cut) == good == fleet8.lab.profile(cut)
    assert fleet8.release(cut) == "1.0" and fleet8.release("web4") == "1.1"  # reachable again, by itself
    assert took < 90, f"{took:.0f} s"
    assert {r["host"]: r["outcome"] for r in fleet8.records()}[cut] == "reverted by the watchdog"


def test_two_deploys_to_one_host_do_not_interleave(fleet8):
    fleet8.deploy_all()
    fleet8.knobs(defaults={"release": "1.1"}, web1={"activation_seconds": 4})
    first, lines = fleet8.start("switch", "--host", "web1", "--yes")
    wait_for(lines, "[web1] activation")
    second = fleet8.invoke("switch", "--host", "web1,web2", "--yes")
    assert first.wait(timeout=120) == 0, "".join(lines)
    assert second.returncode == 1, second.stderr
    assert "web1  locked" in second.stderr and "locked by another deploy (who=" in second.stderr
    assert "action=switch" in second.stderr
    assert fleet8.release("web1") == "1.1" and fleet8.release("web2") == "1.1"  # the other host went on
    assert not fleet8.locked("web1")


def test_a_dead_deployers_lock_is_named_its_watchdog_reverts_and_unlock_frees_the_host(fleet8):
    fleet8.deploy_all()
    fleet8.knobs(defaults={"release": "1.1"}, web1={"activation_seconds": 2})
    first, lines = fleet8.start("switch", "--host", "web1", "--yes", "--confirm-timeout", "3")
    wait_for(lines, "activation: sleeping")  # armed, profile set, switch-to-configuration under way
    first.kill()  # a deployer that dies holds its lock, and never confirms
    first.wait()
    assert fleet8.locked("web1")
    proc = fleet8.invoke("test", "--host", "web1", "--yes")
    assert proc.returncode == 1 and "invoke unlock --host web1" in proc.stderr, proc.stderr
    deadline = time.monotonic() + 60  # the unconfirmed activation is reverted by the host itself
    while fleet8.lab.exec("web1", "test", "-e", "/run/nixtasks/watchdog-reverted", check=False).returncode != 0:
        assert time.monotonic() < deadline, "the watchdog never reverted web1"
        time.sleep(0.5)
    assert fleet8.release("web1") == "1.0"
    assert fleet8.invoke("unlock", "--host", "web1").returncode == 3  # asks first; no terminal
    proc = fleet8.invoke("unlock", "--host", "web1", "--yes")
    assert proc.returncode == 0 and "web1: locked by who=" in proc.stderr, proc.stderr
    assert not fleet8.locked("web1")
    proc = fleet8.invoke("switch", "--host", "web1", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert fleet8.release("web1") == "1.1"


def test_sigint_lets_the_running_host_finish_and_starts_no_other(fleet8):
    fleet8.deploy_all()
    fleet8.knobs(defaults={"release": "1.1", "activation_seconds": 2})
    proc, lines = fleet8.start("switch", "--all", "--yes", "--batch-size", "1")
    wait_for(lines, "[web1] activation")
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130, "".join(lines)
    text = "".join(lines)
    assert "interrupted" in text and "error: interrupted" in text
    assert fleet8.release("web1") == "1.1"  # finished its activation and checks
    for host in ALL[1:]:
        assert fleet8.release(host) == "1.0"
    outcomes = {r["host"]: r["outcome"] for r in fleet8.records() if r["git_revision"]}
    assert outcomes["web1"] == "ok" and all(outcomes[h] == "not started" for h in ALL[1:]), outcomes
    assert not any(fleet8.locked(h) for h in ALL)


def test_an_unreachable_host_stops_the_deploy_unless_skipped(fleet8):
    fleet8.deploy_all()
    fleet8.knobs(defaults={"release": "1.1"})
    fleet8.lab.exec("app2", "ip", "link", "set", "lab0", "down")
    try:
        proc = fleet8.invoke("switch", "--tag", "app", "--yes")
        assert proc.returncode == 1, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith("error: app2: cannot reach the host"), proc.stderr
        assert "--skip-unreachable" in errors[0]
        assert fleet8.release("app1") == "1.0" and fleet8.release("app3") == "1.0"  # nothing changed
        proc = fleet8.invoke("switch", "--tag", "app", "--yes", "--skip-unreachable")
        assert proc.returncode == 1, proc.stderr  # the others went out; the selection is not done
        assert "app2  skipped" in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert errors == ["error: skipped as unreachable (--skip-unreachable): app2; nothing was changed there; "
                          "deploy it once reachable"], proc.stderr
        assert fleet8.release("app1") == "1.1" and fleet8.release("app3") == "1.1"
    finally:
        fleet8.lab.exec("app2", "ip", "link", "set", "lab0", "up")


def test_gc_stops_for_an_unreachable_host_unless_skipped(fleet8):
    """gc admits its hosts as a deploy does: it used to read generations before asking whether a
    host answered, so one unreachable host aborted the whole gc and --skip-unreachable was not
    taken."""
    fleet8.deploy_all()
    fleet8.knobs(defaults={"release": "1.1"})
    assert fleet8.invoke("switch", "--tag", "app", "--yes").returncode == 0

    def generations(host: str) -> list[int]:
        return [g["number"] for g in fleet8.invoke_json("generations", "--host", host)[host]]

    before = {h: generations(h) for h in ("app1", "app2", "app3")}
    assert all(len(numbers) >= 2 for numbers in before.values()), before
    fleet8.lab.exec("app2", "ip", "link", "set", "lab0", "down")
    try:
        proc = fleet8.invoke("gc", "--tag", "app", "--keep", "1", "--yes")
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 1 and len(errors) == 1, proc.stderr
        assert errors[0].startswith("error: app2: cannot reach the host") and "--skip-unreachable" in errors[0]
        assert generations("app1") == before["app1"] and generations("app3") == before["app3"]  # nothing deleted
        proc = fleet8.invoke("gc", "--tag", "app", "--keep", "1", "--yes", "--skip-unreachable")
        assert proc.returncode == 1, proc.stderr  # the selection is not done
        assert "app2  skipped" in proc.stderr
        assert generations("app1") == before["app1"][:1] and generations("app3") == before["app3"][:1]
    finally:
        fleet8.lab.exec("app2", "ip", "link", "set", "lab0", "up")
    assert generations("app2") == before["app2"]
    records = [r for r in fleet8.invoke_json("history", "--tag", "app") if r["action"] == "gc"]
    assert sorted((r["host"], r["outcome"]) for r in records) == [("app1", "ok"), ("app2", "skipped"),
                                                                  ("app3", "ok")], records


def test_fleet_rollback_by_tag(fleet8):
    fleet8.deploy_all()
    fleet8.knobs(defaults={"release": "1.1"})
    assert fleet8.invoke("switch", "--tag", "app", "--yes").returncode == 0
    proc = fleet8.invoke("rollback", "--tag", "app", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "Roll back app1, app2, app3 (3 hosts)? yes" in proc.stderr
    assert all(fleet8.release(h) == "1.0" for h in ("app1", "app2", "app3"))


def test_ctrl_c_during_the_copies_after_a_keep_going_failure_reports_every_host(fleet):
    """Issue 18 (the soak): with --keep-going, web2's build failed and the others go on; Ctrl-C
    comes while db1's system is copied (over a slow link). Every host is in the report, the
    deployer's journal has one record each, no host's journal or system changed, exit 130."""
    assert fleet.invoke("switch", "--all", "--yes").returncode == 0
    before = {h: (fleet.lab.current_system(h), fleet.lab.profile(h)) for h in ("web1", "web2", "db1")}
    on_host = {h: fleet.lab.exec(h, "cat", "/var/lib/nixtasks/journal.jsonl").stdout for h in before}
    fleet.set_knobs("web2", release="1.1", fail_build=True)
    fleet.set_knobs("db1", release="1.1", payload_kib=192)  # about 30 s over a 50 kbit/s link
    fleet.set_knobs("web1", release="1.1")
    journal = Path(fleet.lab.env["NIXTASKS_JOURNAL"])
    known = len(journal.read_text().splitlines())
    fleet.lab.slow_link("db1", "50kbit")
    try:
        proc, lines = start_invoke(fleet.path, {**fleet.lab.env, "PYTHONFAULTHANDLER": "1"}, "switch", "--all", "--yes",
                                   "--keep-going", "--json")
        wait_for(lines, "(--keep-going: the others go on)", timeout=300)
        deadline = time.monotonic() + 120
        while not copying(proc.pid):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            time.sleep(0.2)
        time.sleep(2)  # under way
        assert interrupt(proc, lines) == 130, "".join(lines)
    finally:
        fleet.lab.slow_link("db1", None)
    assert proc.stdout is not None
    report = json.loads(proc.stdout.read())
    text = "".join(lines)
    outcomes = {h["host"]: (h["outcome"], h["message"]) for h in report["hosts"]}
    assert report["interrupted"], report
    assert outcomes["web2"][0] == "failed" and outcomes["web2"][1].startswith("its build failed: "), outcomes
    assert outcomes["web1"] == outcomes["db1"] == ("not started", "interrupted before the plan; nothing changed")
    assert "error: interrupted before the plan; nothing was changed on any host" in text, text
    records = [json.loads(line) for line in journal.read_text().splitlines()[known:]]
    assert sorted((r["host"], r["outcome"]) for r in records) == [
        ("db1", "not started"), ("web1", "not started"), ("web2", "failed")], records
    for host in before:  # nothing changed on any host, not even its journal
        assert (fleet.lab.current_system(host), fleet.lab.profile(host)) == before[host], host
        assert fleet.lab.exec(host, "cat", "/var/lib/nixtasks/journal.jsonl").stdout == on_host[host], host
        assert fleet.lab.left_behind(host) == "", host


def test_keep_going_deploys_the_hosts_whose_systems_could_be_made(fleet):
    """--keep-going: db1 does not evaluate (a knob nobody knows) and web2 does not build; web1
    goes out, the others are failed at their stage with Nix's own error, and nothing touches them."""
    fleet.set_knobs("db1", no_such_knob=True)
    fleet.set_knobs("web2", fail_build=True)
    proc = fleet.invoke("switch", "--all", "--yes")  # without it: the one evaluation fails, nothing goes out
    assert proc.returncode == 1 and "unknown knob 'no_such_knob'" in proc.stderr, proc.stderr
    assert [fleet.lab.current_system(h) for h in ("web1", "web2", "db1")] == ["", "", ""]
    proc = fleet.invoke("switch", "--all", "--yes", "--keep-going", "--json")
    assert proc.returncode == 1, proc.stderr
    outcomes = {h["host"]: (h["outcome"], h["message"]) for h in json.loads(proc.stdout)["hosts"]}
    assert outcomes["web1"] == ("ok", "")
    assert outcomes["db1"][0] == "failed" and "its evaluation failed: " in outcomes["db1"][1]
    assert "unknown knob 'no_such_knob'" in outcomes["db1"][1]
    assert outcomes["web2"][0] == "failed" and outcomes["web2"][1].startswith("its build failed: ")
    assert fleet.lab.current_system("web1") == fleet.build("web1")
    assert fleet.lab.current_system("web2") == fleet.lab.current_system("db1") == ""
    assert fleet.lab.exec("web2", "test", "-e", "/var/lib/nixtasks/journal.jsonl", check=False).returncode != 0
    fleet.set_knobs("web2", fail_build=False)
    fleet.path.joinpath("nixtasks.toml").write_text(fleet.path.joinpath("nixtasks.toml").read_text()
                                                     + "\n[policy]\nkeep_going = true\n")
    fleet.git("commit", "-qam", "keep going by default")
    proc = fleet.invoke("switch", "--all", "--yes")
    assert proc.returncode == 1 and fleet.lab.current_system("web2") == fleet.build("web2"), proc.stderr
