"""The recipes end to end on the lab: canary, rolling, blue-green, update-deploy, stage/apply
and emergency, each with the failure it exists for. The example repository marks web1 as the
canary, tags web1 blue and web2 green, and writes `traffic.txt` as its switch_traffic."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from nixtasks.actions.journal import HOST_JOURNAL

from .conftest import Fleet, interrupt, start_invoke

RELEASES = ("web1", "web2", "db1")


def release(fleet: Fleet, host: str) -> str:
    status, body = fleet.lab.health(host)
    return json.loads(body)["release"] if status == 200 else f"http {status}"


def first_deploy(fleet: Fleet) -> None:
    proc = fleet.invoke("switch", "--all", "--yes")
    assert proc.returncode == 0, proc.stderr


def new_release(fleet: Fleet, number: str = "1.1", **per_host: dict[str, object]) -> None:
    data = json.loads((fleet.path / "hosts.json").read_text())
    data["defaults"]["release"] = number
    for host, knobs in per_host.items():
        data["hosts"][host].update(knobs)
    (fleet.path / "hosts.json").write_text(json.dumps(data, indent=2) + "\n")
    fleet.git("commit", "-qam", f"release {number}")


def errors(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def records(fleet: Fleet) -> list[dict[str, object]]:
    return [json.loads(line) for line in open(fleet.lab.env["NIXTASKS_JOURNAL"])]


def test_canary_then_the_rest_from_make(fleet):
    first_deploy(fleet)
    new_release(fleet)
    proc = fleet.make("canary", "HOSTS=web1,web2,db1", "YES=1")
    assert proc.returncode == 0, proc.stderr
    assert "Canary: switch web1 first (1 host)? yes" in proc.stderr
    assert "The canary is healthy. Switch the rest: web2, db1 (2 hosts)? yes" in proc.stderr
    assert proc.stderr.index("[web1] ok") < proc.stderr.index("[web2] lock")  # the canary went first
    assert [release(fleet, h) for h in RELEASES] == ["1.1"] * 3


def test_a_bad_release_stops_at_the_canary(fleet):
    first_deploy(fleet)
    new_release(fleet, web1={"healthy": False})
    proc = fleet.invoke("canary", "--all", "--yes", "--soak", "1")
    assert proc.returncode == 1, proc.stderr
    assert len(errors(proc)) == 1 and "web1: rolled back: check http" in errors(proc)[0]
    assert [release(fleet, h) for h in RELEASES] == ["1.0"] * 3  # the canary went back; the rest never saw it
    assert "The canary is healthy" not in proc.stderr  # never reached the second gate
    outcomes = {r["host"]: r["outcome"] for r in records(fleet) if r["git_revision"] and r["action"] == "switch"}
    assert outcomes == {"web1": "rolled back", "web2": "not started", "db1": "not started"}


def test_ctrl_c_while_a_failed_canary_halts_reports_and_journals_every_host(fleet):
    """Issue 18 (the soak): the canary was rolled back and the rest are being journalled "not
    started" when Ctrl-C comes. db1's journal is a pipe nobody reads for that while, so its record
    waits there and the SIGINT lands in it, as it can for a host slow to answer."""
    first_deploy(fleet)
    new_release(fleet, web1={"healthy": False})
    before = {h: (fleet.lab.current_system(h), fleet.lab.profile(h)) for h in RELEASES}
    on_host = {h: fleet.lab.exec(h, "cat", HOST_JOURNAL).stdout for h in RELEASES}
    fleet.lab.exec("db1", "sh", "-c", f"mv {HOST_JOURNAL} {HOST_JOURNAL}.kept && mkfifo -m 600 {HOST_JOURNAL}")
    try:
        proc, lines = start_invoke(fleet.path, {**fleet.lab.env, "PYTHONFAULTHANDLER": "1"}, "canary", "--host",
                                   "web1,web2,db1", "--yes", "--json")
        deadline = time.monotonic() + 180
        while fleet.lab.exec("db1", "pgrep", "-x", "dd", check=False).returncode != 0:  # the record, waiting
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            time.sleep(0.2)
        assert interrupt(proc, lines) == 130, "".join(lines)
    finally:  # the blocked write let go, db1's journal put back
        fleet.lab.exec("db1", "sh", "-c", f"timeout 5 cat {HOST_JOURNAL} >/dev/null; rm -f {HOST_JOURNAL}; "
                       f"mv {HOST_JOURNAL}.kept {HOST_JOURNAL}", check=False)
    assert proc.stdout is not None
    report = json.loads(proc.stdout.read())
    text = "".join(lines)
    assert report["interrupted"] and not report["ok"], report
    assert {h["host"]: h["outcome"] for h in report["hosts"]} == {
        "web1": "rolled back", "web2": "not started", "db1": "not started"}, text
    assert "error: interrupted; 1 rolled back, 2 not started" in text, text
    for host in RELEASES:  # the canary back where it was, the others never touched
        assert (fleet.lab.current_system(host), fleet.lab.profile(host)) == before[host], host
        assert fleet.lab.left_behind(host) == "", host
    assert [release(fleet, h) for h in RELEASES] == ["1.0"] * 3
    mine = [r for r in records(fleet) if r["outcome"] != "started"][3:]  # after the first deploy's three
    assert sorted((r["host"], r["outcome"]) for r in mine) == [
        ("db1", "not started"), ("web1", "rolled back"), ("web2", "not started")], mine
    for host, outcome in (("web1", "rolled back"), ("web2", "not started")):
        added = fleet.lab.exec(host, "cat", HOST_JOURNAL).stdout[len(on_host[host]):].splitlines()
        assert [o for o in (json.loads(line)["outcome"] for line in added) if o != "started"] == [outcome], added


def test_rolling_halts_at_the_host_that_fails(fleet):
    first_deploy(fleet)
    new_release(fleet, web1={"fail_activation": True})
    proc = fleet.invoke("rolling", "--host", "web2,web1,db1", "--yes", "--json")
    assert proc.returncode == 1, proc.stderr
    outcomes = [(h["host"], h["outcome"]) for h in json.loads(proc.stdout)["hosts"]]
    assert outcomes == [("web2", "ok"), ("web1", "rolled back"), ("db1", "not started")]
    assert [release(fleet, h) for h in ("web2", "web1", "db1")] == ["1.1", "1.0", "1.0"]


def boot_id(fleet: Fleet, host: str) -> str:
    return fleet.lab.exec(host, "cat", "/proc/sys/kernel/random/boot_id").stdout.strip()


def test_blue_green_boots_reboots_checks_then_switches_traffic(fleet):
    first_deploy(fleet)
    new_release(fleet)
    booted = boot_id(fleet, "web1")
    proc = fleet.make("blue-green", "TO=blue", "YES=1")
    assert proc.returncode == 0, proc.stderr
    assert boot_id(fleet, "web1") != booted  # really rebooted
    assert release(fleet, "web1") == "1.1" and fleet.lab.current_system("web1") == fleet.lab.profile("web1")
    assert release(fleet, "web2") == "1.0"  # the other group is left for a later run
    assert (fleet.path / "traffic.txt").read_text().split() == ["blue", "web1"]
    assert proc.stderr.index("Switch traffic to blue?") > proc.stderr.index("[web1] checks")


def test_blue_green_with_an_unhealthy_group_boots_it_back_and_never_switches(fleet):
    first_deploy(fleet)
    old = fleet.lab.current_system("web1")
    new_release(fleet, web1={"healthy": False})
    proc = fleet.invoke("blue-green", "--to", "blue", "--yes")
    assert proc.returncode == 1, proc.stderr
    assert "booted back into generation 1" in proc.stderr
    assert fleet.lab.current_system("web1") == old == fleet.lab.profile("web1")
    assert release(fleet, "web1") == "1.0"
    assert not (fleet.path / "traffic.txt").exists()
    assert "traffic stays where it is" in proc.stderr


def set_motd(fleet: Fleet, motd: str) -> None:
    site = fleet.path / "site" / "flake.nix"
    lines = [f"      motd = {motd};" if line.strip().startswith("motd =") else line
             for line in site.read_text().splitlines()]
    site.write_text("\n".join(lines) + "\n")
    fleet.git("commit", "-qam", "site: new motd")


def test_update_deploy_with_a_real_input_change(fleet):
    first_deploy(fleet)
    assert fleet.invoke("update-deploy", "--all", "--yes").stderr.count("no input changed") == 1
    before = fleet.git("rev-parse", "HEAD").strip()
    set_motd(fleet, '"Welcome to release two."')
    proc = fleet.invoke("update-deploy", "--all", "--yes", "--input", "site", "--json")
    assert proc.returncode == 0, proc.stderr
    deployed = {h["host"]: h["system_after"] for h in json.loads(proc.stdout)["hosts"]}
    assert "1 input(s) updated:" in proc.stderr and "  site: " in proc.stderr
    assert "+        \"narHash\"" in proc.stderr  # git diff flake.lock
    log = fleet.git("log", "--format=%s", "-3").splitlines()
    assert log[0] == "chore: update flake inputs" and log[1] == "site: new motd"
    assert fleet.git("show", "--name-only", "--format=", "HEAD").split() == ["flake.lock"]
    head = fleet.git("rev-parse", "HEAD").strip()
    assert head != before and f"commit {head}" in proc.stderr
    assert "Canary: switch web1 first" in proc.stderr  # the selection has a canary host
    for host in RELEASES:  # exactly the systems of the commit that landed, its revision in them
        assert fleet.lab.current_system(host) == fleet.build(host) == deployed[host] == fleet.lab.profile(host)
    assert_status_matches_head(fleet, RELEASES)
    with urllib.request.urlopen(f"http://{fleet.lab.address('web2')}/", timeout=5) as page:
        assert "Welcome to release two." in page.read().decode()  # the updated input is what runs


def assert_status_matches_head(fleet: Fleet, hosts: tuple[str, ...]) -> None:
    rows = {r["host"]: r for r in fleet.invoke_json("status", "--all")}
    for host in hosts:
        assert (rows[host]["flake"], rows[host]["revision"]) == ("up to date", "matches HEAD"), rows[host]


def test_update_deploy_whose_build_fails_restores_the_lock(fleet):
    first_deploy(fleet)
    lock = (fleet.path / "flake.lock").read_text()
    set_motd(fleet, 'throw "the site input is broken"')
    head = fleet.git("rev-parse", "HEAD").strip()
    proc = fleet.invoke("update-deploy", "--all", "--yes")
    assert proc.returncode == 1, proc.stderr
    assert "the site input is broken" in proc.stderr and "flake.lock restored" in proc.stderr
    assert (fleet.path / "flake.lock").read_text() == lock
    assert fleet.git("rev-parse", "HEAD").strip() == head and fleet.git("status", "--porcelain") == ""
    assert [release(fleet, h) for h in RELEASES] == ["1.0"] * 3


def test_update_deploy_refuses_an_uncommitted_lock_and_no_terminal(fleet):
    lock = fleet.path / "flake.lock"
    lock.write_text(lock.read_text() + "\n")
    proc = fleet.invoke("update-deploy", "--all", "--yes")
    assert proc.returncode == 2 and "flake.lock has uncommitted changes" in proc.stderr, proc.stderr
    fleet.git("checkout", "--", "flake.lock")
    flake = fleet.path / "flake.nix"  # `nix flake update` would lock what HEAD's flake.nix does not ask for
    flake.write_text(flake.read_text() + "\n")
    proc = fleet.invoke("update-deploy", "--all", "--yes")
    assert proc.returncode == 2 and "flake.nix has uncommitted changes" in proc.stderr, proc.stderr
    fleet.git("checkout", "--", "flake.nix")
    proc = fleet.invoke("update-deploy", "--all")
    assert proc.returncode == 3 and "--yes" in errors(proc)[0]


def test_stage_then_apply_exactly_the_staged_paths(fleet):
    first_deploy(fleet)
    new_release(fleet)
    plan = fleet.lab.workspace / "plan.json"
    proc = fleet.invoke("stage", "--tag", "web", "--plan", str(plan))
    assert proc.returncode == 0, proc.stderr
    staged = json.loads(plan.read_text())["hosts"]
    assert release(fleet, "web1") == "1.0"  # staging changes nothing that runs
    new_release(fleet, "1.2")  # what HEAD builds now is not what was staged
    revision = json.loads(plan.read_text())["git_revision"]
    proc = fleet.invoke("apply", str(plan), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "[eval]" not in proc.stderr and "nothing evaluated" in proc.stderr
    for host in ("web1", "web2"):
        assert fleet.lab.current_system(host) == staged[host]["system"] and release(fleet, host) == "1.1"
    # What went out was built from the plan's revision, not HEAD's: the plan line and both journals say so.
    assert f"git:      {revision[:12]}" in proc.stderr and fleet.git("rev-parse", "HEAD").strip() != revision
    here = Path(fleet.lab.env["NIXTASKS_JOURNAL"]).read_text()
    there = fleet.lab.exec("web1", "cat", "/var/lib/nixtasks/journal.jsonl").stdout
    for journal, hosts in ((here, ("web1", "web2")), (there, ("web1",))):
        ends = [json.loads(line) for line in journal.splitlines() if '"started"' not in line]
        for host in hosts:
            last = [r for r in ends if r["host"] == host][-1]
            assert (last["outcome"], last["git_revision"]) == ("ok", revision)


def test_apply_refuses_a_hand_edited_plan_and_one_sealed_elsewhere(fleet, tmp_path):
    """One host's system swapped for an older real system of that host: apply names it and
    changes nothing; a plan edited and sealed again with another deployer's key: refused too."""
    first_deploy(fleet)
    older = fleet.lab.current_system("web1")
    new_release(fleet)
    plan = fleet.lab.workspace / "plan.json"
    assert fleet.invoke("stage", "--tag", "web", "--plan", str(plan)).returncode == 0
    data = json.loads(plan.read_text())
    data["hosts"]["web1"]["system"] = older
    plan.write_text(json.dumps(data))
    proc = fleet.invoke("apply", str(plan), "--yes")
    assert proc.returncode == 2, proc.stderr
    assert len(errors(proc)) == 1 and "hosts.web1 was changed after stage" in errors(proc)[0]
    assert "web2" not in errors(proc)[0] and "Nothing was changed on any host" in errors(proc)[0]
    assert fleet.lab.current_system("web1") == older and release(fleet, "web2") == "1.0"
    # Sealed again elsewhere: the same content signed with another deployer's key.
    other = {"NIXTASKS_PLAN_KEY": str(tmp_path / "other-key")}
    assert fleet.invoke("stage", "--tag", "web", "--plan", str(plan), env=other).returncode == 0
    proc = fleet.invoke("apply", str(plan), "--yes")
    assert proc.returncode == 2 and "sealed with another key" in errors(proc)[0], proc.stderr
    assert release(fleet, "web1") == "1.0" and release(fleet, "web2") == "1.0"


def test_apply_after_someone_else_deployed_is_refused(fleet):
    first_deploy(fleet)
    new_release(fleet)
    plan = fleet.lab.workspace / "plan.json"
    assert fleet.invoke("stage", "--tag", "web", "--plan", str(plan)).returncode == 0
    assert fleet.invoke("test", "--host", "web2", "--yes").returncode == 0  # someone deploys in between
    web1 = fleet.lab.current_system("web1")
    proc = fleet.invoke("apply", str(plan), "--yes")
    assert proc.returncode == 1, proc.stderr
    assert errors(proc)[0].startswith("error: web2 ran ") and "nothing was changed on any host" in errors(proc)[0]
    assert fleet.lab.current_system("web1") == web1


def test_emergency_tests_checks_asks_then_switches(fleet):
    first_deploy(fleet)
    new_release(fleet)
    assert fleet.invoke("emergency", "--host", "web1", "--yes").returncode == 2  # the reason is required
    proc = fleet.invoke("emergency", "--host", "web1", "--yes", "--reason", "CVE fix", "--follow", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.index("EMERGENCY: test-activate web1") < proc.stderr.index("passed the test activation")
    assert fleet.lab.current_system("web1") == fleet.lab.profile("web1") == fleet.build("web1")
    marked = [(r["action"], r["outcome"], r["reason"]) for r in records(fleet)
              if r["action"].startswith("emergency") and r["outcome"] != "started"]
    assert marked == [("emergency-test", "ok", "EMERGENCY: CVE fix"), ("emergency-switch", "ok", "EMERGENCY: CVE fix")]


def test_emergency_whose_test_activation_fails_switches_nothing(fleet):
    first_deploy(fleet)
    old = fleet.lab.current_system("web1")
    new_release(fleet, web1={"fail_activation": True})
    proc = fleet.invoke("emergency", "--host", "web1", "--yes", "--reason", "risky fix")
    assert proc.returncode == 1, proc.stderr
    assert "passed the test activation" not in proc.stderr
    assert fleet.lab.current_system("web1") == old == fleet.lab.profile("web1")
    assert release(fleet, "web1") == "1.0"


def test_recipes_refuse_without_a_selection_or_a_group(fleet):
    for args, message in ((("canary",), "canary needs hosts"), (("rolling",), "rolling needs hosts"),
                          (("blue-green",), "blue-green needs --to GROUP"),
                          (("blue-green", "--to", "purple"), "not one of the groups"),
                          (("canary", "--host", "db1"), "no canary host in the selection")):
        proc = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=fleet.path, text=True, capture_output=True,
                              env=fleet.lab.env, stdin=subprocess.DEVNULL, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
