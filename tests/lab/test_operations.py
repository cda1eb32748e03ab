"""Generations, rollback, verify, status and history, end to end in the lab."""

from __future__ import annotations

import json
import subprocess

from nixtasks.actions.journal import HOST_JOURNAL

from .conftest import labctl


def deploy(fleet, host: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return fleet.invoke("switch", "--host", host, "--yes", *extra)


def release(fleet, host: str) -> str:
    return json.loads(fleet.lab.health(host)[1])["release"]


def test_two_deploys_then_rollback_to_previous_then_to_a_number(fleet, deploy_host):
    """As the deploy user: listing generations needs sudo -n (the profile lock is root's)."""
    host = deploy_host
    assert deploy(fleet, host).returncode == 0
    first = fleet.build(host)
    fleet.set_knobs(host, release="1.1")
    assert deploy(fleet, host).returncode == 0
    second = fleet.build(host)
    gens = fleet.invoke_json("generations", "--host", host)[host]
    assert [(g["number"], g["path"], g["running"], g["boots"]) for g in gens] == [
        (2, second, True, True), (1, first, False, False)]
    assert gens[0]["nixos_version"] == "1.1"

    proc = fleet.invoke("rollback", "--host", host, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "nixtasks-webapp: 1.1 → 1.0" in proc.stderr  # the closure diff before the question
    assert fleet.lab.current_system(host) == first == fleet.lab.profile(host)
    assert release(fleet, host) == "1.0"

    proc = fleet.make(f"host/{host}/rollback", "YES=1")  # previous of generation 1: none
    assert proc.returncode == 2 and "no generation older" in proc.stderr, proc.stderr
    proc = fleet.invoke("rollback", "--host", host, "--generation", "2", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert fleet.lab.current_system(host) == second and release(fleet, host) == "1.1"

def test_rollback_to_a_missing_generation_lists_the_real_ones(fleet):
    assert deploy(fleet, "web1").returncode == 0
    before = fleet.lab.current_system("web1")
    proc = fleet.invoke("rollback", "--host", "web1", "--generation", "42", "--yes")
    assert proc.returncode == 2
    assert "error: web1: there is no generation 42; it has 1" in proc.stderr
    assert fleet.lab.current_system("web1") == before


def test_rollback_without_approval_is_refused(fleet):
    deploy(fleet, "web1")
    fleet.set_knobs("web1", release="1.1")
    deploy(fleet, "web1")
    before = fleet.lab.current_system("web1")
    proc = fleet.invoke("rollback", "--host", "web1")
    assert proc.returncode == 3 and "--yes" in proc.stderr
    assert fleet.lab.current_system("web1") == before


def test_rollback_boot_only_sets_the_boot_entry(fleet):
    deploy(fleet, "web1")
    first = fleet.build("web1")
    fleet.set_knobs("web1", release="1.1")
    deploy(fleet, "web1")
    second = fleet.build("web1")
    proc = fleet.invoke("rollback", "--host", "web1", "--boot", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert fleet.lab.current_system("web1") == second and fleet.lab.profile("web1") == first


def test_a_rollback_whose_activation_fails_is_put_back_where_it_was(fleet):
    deploy(fleet, "web1")
    fleet.set_knobs("web1", fail_activation=True)
    # generation 2 is a bad one: made by a boot (a switch that fails no longer leaves a generation)
    assert fleet.invoke("boot", "--host", "web1", "--yes").returncode == 0
    fleet.set_knobs("web1", fail_activation=False, release="1.1")
    assert deploy(fleet, "web1").returncode == 0  # generation 3
    good = fleet.build("web1")
    proc = fleet.invoke("rollback", "--host", "web1", "--generation", "2", "--yes")
    assert proc.returncode == 1, proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "rollback to generation 2 failed (exit 2)" in error[0], proc.stderr
    assert "rolled back to generation 3" in error[0]
    assert fleet.lab.current_system("web1") == good == fleet.lab.profile("web1")
    assert '"release": "1.1"' in fleet.lab.health("web1")[1]


def test_verify_clean_then_a_failed_unit_then_unhealthy(fleet, root_host):
    host = root_host
    deploy(fleet, host)
    proc = fleet.invoke("verify", "--host", host)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{host}: ok" in proc.stdout and "check http" in proc.stdout

    fleet.set_knobs(host, failed_units=["broken"])
    deploy(fleet, host, "--no-rollback")  # left broken, for verify to find
    proc = fleet.invoke("verify", "--host", host)
    assert proc.returncode == 1
    assert "failed units: broken.service" in proc.stdout
    assert "broken" in proc.stdout  # the error journal's last lines are shown

    fleet.set_knobs(host, failed_units=[], healthy=False)
    deploy(fleet, host, "--no-rollback")
    proc = fleet.invoke("verify", "--host", host)
    assert proc.returncode == 1
    assert "answered 500, expected 200" in proc.stdout and "(after 2 tries)" in proc.stdout
    # The check reads as the URL it requested, the address filled in as ssh resolved it.
    assert f"check http http://{fleet.lab.address(host)}/health: answered 500, expected 200" in proc.stdout
    assert "{address}" not in proc.stdout + proc.stderr

def test_drift_after_a_change_behind_nixtasks_back(fleet):
    deploy(fleet, "web1")
    other = fleet.build("web2")  # any other system, activated by hand on web1
    subprocess.run(["nix", "copy", "--to", "ssh://web1", other], env=fleet.lab.env, check=True, capture_output=True)
    fleet.lab.ssh("web1", f"{other}/bin/switch-to-configuration test")
    proc = fleet.invoke("verify", "--host", "web1")
    assert proc.returncode == 1
    assert f"drifted: runs {other}" in proc.stdout and "but boots" in proc.stdout
    rows = fleet.invoke_json("status", "--host", "web1")
    assert rows[0]["flake"] == "drifted"


def test_status_over_several_hosts_with_one_unreachable(fleet, root_host):
    host, cut = root_host, "web1" if root_host == "db1" else "db1"  # one of each Nix version
    deploy(fleet, host)
    fleet.lab.exec(cut, "ip", "link", "set", "lab0", "down")
    try:
        proc = fleet.invoke("status", "--all", "--json")
        table = fleet.make("fleet/status")  # as a user types it
    finally:
        fleet.lab.exec(cut, "ip", "link", "set", "lab0", "up")
    # The table is shown, but a host it could not read is not "all is well": unknown, and exit 1.
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {cut}: cannot reach the host over ssh"), proc.stderr
    assert errors[0].endswith("; so its system and failed units are unknown"), errors[0]
    rows = {r["host"]: r for r in json.loads(proc.stdout)}
    assert rows[cut]["reachable"] is False and "cannot reach" in rows[cut]["error"]
    assert rows[cut]["failed_units"] is None and rows[host]["failed_units"] == []
    assert table.returncode != 0 and errors[0] in table.stderr.splitlines(), table.stderr
    line = next(row for row in table.stdout.splitlines() if f" {cut} " in row)
    assert " no " in line and "unknown" in line and "none" not in line, table.stdout
    assert rows[host]["reachable"] and rows[host]["flake"] == "up to date"
    assert rows[host]["revision"] == "matches HEAD" and rows[host]["generation"] == 1
    assert rows["web2"]["reachable"] and rows["web2"]["flake"] == "unknown"  # nothing activated yet

def test_history_records_deploys_refusals_failures_and_rollbacks(fleet):
    deploy(fleet, "web1", "--reason", "first")
    fleet.invoke("switch", "--host", "web1")  # refused: no terminal
    fleet.set_knobs("web1", fail_activation=True)
    deploy(fleet, "web1", "--no-rollback")
    fleet.invoke("rollback", "--host", "web1", "--yes")
    every = [r for r in fleet.invoke_json("history", "--host", "web1") if r["host"] == "web1"]
    records = [r for r in every if r["outcome"] != "started"]  # each activation's first record, on the host too
    outcomes = [(r["action"], r["outcome"]) for r in records][-4:]
    assert outcomes == [("switch", "ok"), ("switch", "refused"), ("switch", "failed"), ("rollback", "ok")]
    assert [r for r in every if r["outcome"] == "started"] == []  # one record per deploy: the start is folded in
    first = records[-4]
    assert first["reason"] == "first" and first["after_generation"] == 1 and first["git_revision"]
    # the failed switch never became generation 2: the rollback goes back to what boots, generation 1
    assert records[-1]["before_generation"] == 1 and records[-1]["after_generation"] == 1
    assert fleet.lab.current_system("web1") == fleet.lab.profile("web1")
    on_host = fleet.lab.exec("web1", "cat", HOST_JOURNAL).stdout
    assert first["id"] in on_host and records[-1]["id"] in on_host
    assert records[-3]["id"] not in on_host  # a refusal never reached the host
    assert '"outcome": "started"' in on_host  # the host keeps each start (a killed deployer leaves only that)


def test_a_rollback_after_a_reboot_warns_of_no_kernel_change_that_is_not_there(fleet):
    """The lab's systems have no kernel: the missing link must not read as a kernel per
    generation (it once warned that modules would not match after every reboot)."""
    assert deploy(fleet, "web1").returncode == 0
    fleet.set_knobs("web1", release="1.1")
    assert deploy(fleet, "web1").returncode == 0
    labctl("reboot", "web1")
    proc = fleet.invoke("rollback", "--host", "web1", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "kernel" not in proc.stderr
    assert fleet.lab.current_system("web1") == fleet.lab.profile("web1") != fleet.build("web1")
