"""Hosts reached by an IPv6 address (`labctl up --ipv6`): ssh, nix copy, the HTTP check on
`http://{address}/health` (bracketed), the journals, doctor and the sudoers snippet."""

from __future__ import annotations

import ipaddress

import pytest

from nixtasks.actions.journal import HOST_JOURNAL

from .conftest import LAB_ID, NIX_2_26_HOST, labctl
from .test_operations import deploy, release

GATEWAY6 = str(ipaddress.IPv6Address(f"fd00:250:{LAB_ID}::1"))  # the deployer's side of the bridge


@pytest.fixture
def ipv6(fleet) -> dict[str, str]:
    """Each lab host's IPv6 address, given to the hosts already up (and kept by `reset`)."""
    labctl("up", "--ipv6", "web1", "web2", "db1")
    env = labctl("env").stdout
    line = next(word for word in env.splitlines() if word.startswith("export NIXTASKS_LAB_IPV6="))
    pairs = line.partition("=")[2].strip("'").split()
    return dict(pair.split("=", 1) for pair in pairs)


def test_labctl_gives_hosts_already_up_an_ipv6_address_that_reset_keeps(fleet, ipv6):
    rows = {row[0]: row for row in (line.split() for line in labctl("status").stdout.splitlines()[1:])}
    assert {h: rows[h][6] for h in ipv6} == ipv6 == {
        h: str(ipaddress.IPv6Address(f"fd00:250:{LAB_ID}::{10 + fleet.lab.index(h)}")) for h in ("web1", "web2", "db1")}
    labctl("reset", "web1")
    assert fleet.lab.ssh(f"root@{ipv6['web1']}", "hostname").stdout.strip() == "web1"  # host key known by it too


def health_requests_from_the_deployer(fleet, host: str) -> list[str]:
    """The webapp's request log lines for /health that came from the bridge's IPv6 address."""
    log = fleet.lab.exec(host, "journalctl", "-u", "nixtasks-web.service", "--no-pager", "-o", "cat").stdout
    return [line for line in log.splitlines() if line.startswith(f"{GATEWAY6} ") and "GET /health" in line]


def journal_records(fleet, host: str) -> list[dict]:
    return [r for r in fleet.invoke_json("history", "--host", host) if r["host"] == host]


@pytest.mark.parametrize("host", ["web1", NIX_2_26_HOST], ids=["nix-2.8", "nix-2.26"])
def test_switch_a_host_named_by_a_bracketed_ipv6_address_in_the_inventory(fleet, ipv6, host):
    address = ipv6[host]
    fleet.set_target(host, f"root@[{address}]")
    fleet.set_knobs(host, release="1.1")
    proc = deploy(fleet, host, "--verbose")
    assert proc.returncode == 0, proc.stderr
    assert fleet.lab.current_system(host) == fleet.build(host) == fleet.lab.profile(host)
    assert release(fleet, host) == "1.1"
    # ssh was given the bare address, Nix the bracketed store URL, curl the bracketed check URL
    assert f"root@{address} --" in proc.stderr
    assert f"ssh://root@[{address}]" in proc.stderr
    assert f"http://[{address}]/health" in proc.stderr
    assert health_requests_from_the_deployer(fleet, host), "the check never reached the host over IPv6"
    records = journal_records(fleet, host)
    assert [(r["action"], r["outcome"], r["after_generation"]) for r in records] == [("switch", "ok", 1)]
    assert records[0]["id"] in fleet.lab.exec(host, "cat", HOST_JOURNAL).stdout


def test_target_host_given_as_a_bare_ipv6_address(fleet, ipv6):
    address = ipv6["web1"]
    proc = fleet.invoke("switch", "--host", "web1", "--target-host", address, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert fleet.lab.current_system("web1") == fleet.build("web1")
    assert health_requests_from_the_deployer(fleet, "web1")
    assert [(r["action"], r["outcome"]) for r in journal_records(fleet, "web1")] == [("switch", "ok")]
    # the address in its brackets, where a person reads it
    status = fleet.invoke("switch", "--host", "web1", "--target-host", address, "--dry-run")
    assert status.returncode == 0 and f"[{address}]" in status.stderr, status.stderr


@pytest.mark.parametrize("target", ["root@fd00::zz", "root@[fd00::1", "fd00::1%lab0", "-oProxyCommand=id"])
def test_a_bad_ipv6_target_changes_nothing(fleet, ipv6, target):
    proc = fleet.invoke("switch", "--host", "web1", "--target-host", target, "--yes")
    assert proc.returncode == 2, proc.stderr
    assert f'error: "{target}" is not a valid ssh target' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert fleet.lab.current_system("web1") == ""


def test_the_deploy_user_over_ipv6_with_the_sudoers_snippet(fleet, ipv6):
    """web2 as deploy@[fd00:...] with only `invoke sudoers` in sudoers: doctor, switch, rollback."""
    host, address = "web2", ipv6["web2"]
    fleet.set_target(host, f"deploy@[{address}]")
    snippet = fleet.invoke("sudoers", "--user", "deploy").stdout
    lab = fleet.lab
    lab.exec(host, "sh", "-c", f"cat > /etc/sudoers.d/deploy <<'EOF'\n{snippet}EOF\nchmod 0440 /etc/sudoers.d/deploy")
    assert "parsed OK" in lab.exec(host, "visudo", "-c").stdout
    assert lab.ssh(f"deploy@{address}", "sudo -n id", check=False).returncode != 0  # nothing else is allowed
    proc = fleet.invoke("doctor", "--host", host)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"[ok  ] {host}: ssh: deploy@[{address}]: batch mode, host key known, logged in as deploy" in proc.stdout
    assert f"[ok  ] {host}: sudo: deploy can run nixtasks' commands with sudo -n" in proc.stdout
    assert deploy(fleet, host).returncode == 0
    first = fleet.build(host)
    fleet.set_knobs(host, release="1.1")
    assert deploy(fleet, host).returncode == 0
    assert lab.current_system(host) == fleet.build(host) and release(fleet, host) == "1.1"
    proc = fleet.invoke("rollback", "--host", host, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert lab.current_system(host) == first == lab.profile(host)
    assert health_requests_from_the_deployer(fleet, host)
    assert [(r["action"], r["outcome"]) for r in journal_records(fleet, host)] == [
        ("switch", "ok"), ("switch", "ok"), ("rollback", "ok")]
