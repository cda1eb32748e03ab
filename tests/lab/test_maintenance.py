"""gc, the disk pre-check, doctor and the sudoers snippet, end to end in the lab."""

from __future__ import annotations

import re

import pytest

from nixtasks.host.commands import REMOTE_PATH

from .conftest import STATE, labctl
from .test_operations import deploy


def generation_numbers(fleet, host: str) -> list[int]:
    return [g["number"] for g in fleet.invoke_json("generations", "--host", host)[host]]


def test_gc_keeps_the_newest_the_running_and_the_booting_generation(fleet, root_host):
    host = root_host
    paths = []
    for release in ("1.0", "1.1", "1.2", "1.3"):
        fleet.set_knobs(host, release=release)
        assert deploy(fleet, host).returncode == 0
        paths.append(fleet.build(host))
    assert fleet.invoke("rollback", "--host", host, "--generation", "2", "--yes").returncode == 0
    proc = fleet.invoke("gc", "--host", host, "--keep", "1", "--dry-run")
    assert proc.returncode == 0 and "delete generation(s) 3, 1" in proc.stderr, proc.stderr
    assert generation_numbers(fleet, host) == [4, 3, 2, 1]
    assert fleet.invoke("gc", "--host", host, "--keep", "1").returncode == 3  # asks first; no terminal
    proc = fleet.invoke("gc", "--host", host, "--keep", "1", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert re.search(rf"{host}: deleted generation\(s\) 3, 1; \d+ store paths deleted, .* freed", proc.stderr)
    assert generation_numbers(fleet, host) == [4, 2]
    assert fleet.lab.current_system(host) == paths[1] == fleet.lab.profile(host)
    for gone in (paths[0], paths[2]):
        assert fleet.lab.exec(host, "test", "-e", gone, check=False).returncode != 0

@pytest.mark.parametrize("rooted", [True, False], ids=["rooted-as-on-nixos", "root-removed"])
def test_gc_never_collects_what_runs_or_boots(fleet, rooted):
    """After a `test` activation, what runs is no generation: gc must keep it all the same, and
    the next switch must see it (it once failed with a false "changed since the plan")."""
    host, lab = "web1", fleet.lab
    assert deploy(fleet, host).returncode == 0
    booted = fleet.build(host)
    fleet.set_knobs(host, release="1.1")
    assert fleet.invoke("test", "--host", host, "--yes").returncode == 0
    tested = fleet.build(host)
    assert lab.exec(host, "readlink", "/nix/var/nix/gcroots/current-system").stdout.strip() == "/run/current-system"
    if not rooted:  # a host that does not root what runs (or whose link someone removed)
        lab.exec(host, "rm", "/nix/var/nix/gcroots/current-system")
    proc = fleet.invoke("gc", "--host", host, "--keep", "1", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "held as garbage-collector roots" in proc.stderr
    assert lab.current_system(host) == tested and lab.profile(host) == booted
    for path in (tested, booted):
        assert lab.exec(host, "test", "-e", f"{path}/bin/switch-to-configuration", check=False).returncode == 0
    assert "nixtasks-gc-hold" not in lab.exec(host, "ls", "/nix/var/nix/gcroots").stdout  # released
    fleet.set_knobs(host, release="1.2")
    proc = deploy(fleet, host)
    assert proc.returncode == 0, proc.stderr
    assert lab.current_system(host) == fleet.build(host)


@pytest.mark.parametrize("suite", ["bookworm", "trixie"], ids=["nix-2.8", "nix-2.26"])
def test_disk_precheck_refuses_on_a_nearly_full_store(fleet, suite):
    lab = fleet.lab
    labctl("up", "tiny", "--store-size", "2M", f"--suite={suite}")
    try:
        fleet.set_knobs("tiny")
        free_kb = int(lab.exec("tiny", "df", "-Pk", "/nix/store").stdout.splitlines()[-1].split()[3])
        lab.exec("tiny", "fallocate", "-l", f"{free_kb - 4}K", "/nix/store/.filler")
        proc = fleet.invoke("switch", "--host", "tiny", "--yes")
        assert proc.returncode == 1, proc.stderr
        error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert error and "tiny: /nix/store has 4.0 KiB free, but the new system needs" in error[0], proc.stderr
        assert "invoke gc --host tiny --keep 3" in error[0]
        assert lab.current_system("tiny") == ""
        lab.exec("tiny", "rm", "/nix/store/.filler")
        assert fleet.invoke("switch", "--host", "tiny", "--yes").returncode == 0
    finally:
        labctl("down", "tiny")

def test_doctor_on_a_healthy_host_and_on_a_host_with_broken_sudo(fleet):
    fleet.set_target("db1", "deploy@db1")  # the trust check on Nix 2.26 too (`nix config show`)
    proc = fleet.invoke("doctor", "--host", "web1,web2,db1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[ok  ] web2: sudo: deploy can run nixtasks' commands with sudo -n" in proc.stdout
    assert "[ok  ] web2: copy trust" in proc.stdout and "[ok  ] db1: copy trust" in proc.stdout
    # Each host's Nix version, and the deployer's; no Nix here lacks what nixtasks uses
    assert "[ok  ] web1: nix: Nix 2.8.0" in proc.stdout and "[ok  ] db1: nix: Nix 2.26." in proc.stdout
    assert "[ok  ] (deployer): nix: Nix 2.8.0" in proc.stdout and "upgrade Nix" not in proc.stdout
    assert "deprecated" not in proc.stderr  # `nix show-config` warns on Nix 2.20 and newer
    fleet.lab.exec("web2", "rm", "/etc/sudoers.d/deploy")
    proc = fleet.invoke("doctor", "--host", "web2")
    assert proc.returncode == 1
    assert "[FAIL] web2: sudo: deploy cannot run nixtasks' commands with sudo -n" in proc.stdout
    assert "fix: put the output of `invoke sudoers --user deploy` in /etc/sudoers.d/nixtasks" in proc.stdout

def test_doctor_names_an_unknown_host_key(fleet):
    known = STATE / "ssh" / "known_hosts"
    saved = known.read_text()
    try:
        known.write_text("\n".join(line for line in saved.splitlines() if not line.startswith("db1,")))
        proc = fleet.invoke("doctor", "--host", "db1")
    finally:
        known.write_text(saved)
    assert proc.returncode == 1
    assert "fix: check the host's key fingerprint out of band, then: ssh-keyscan" in proc.stdout


def test_the_sudoers_snippet_is_all_deploy_needs(fleet, deploy_host):
    """On sudo 1.9.13 (Debian 12) and 1.9.16 (Debian 13)."""
    host = deploy_host
    snippet = fleet.invoke("sudoers", "--user", "deploy").stdout
    lab = fleet.lab
    lab.exec(host, "sh", "-c", f"cat > /etc/sudoers.d/deploy <<'EOF'\n{snippet}EOF\nchmod 0440 /etc/sudoers.d/deploy")
    assert "parsed OK" in lab.exec(host, "visudo", "-c").stdout
    assert lab.ssh(f"deploy@{host}", "sudo -n id", check=False).returncode != 0  # nothing else is allowed
    env = f"env -i PATH={REMOTE_PATH}"
    for attack in ("/nix/store/../../bin/sh -c id x/bin/switch-to-configuration switch",
                   f"/nix/store/{'a' * 32}-x/../../../bin/sh/bin/switch-to-configuration switch",
                   "nix-env -p /nix/var/nix/profiles/system --switch-generation 1 -p /tmp/other"):
        proc = lab.ssh(f"deploy@{host}", f"sudo -n {env} {attack}", check=False)
        assert proc.returncode != 0 and "password is required" in proc.stderr, attack
    assert deploy(fleet, host).returncode == 0
    fleet.set_knobs(host, release="1.1")
    assert deploy(fleet, host).returncode == 0
    proc = fleet.invoke("rollback", "--host", host, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert '"release": "1.0"' in lab.health(host)[1]
    assert "could not write the host's journal" not in proc.stderr
    assert fleet.invoke("gc", "--host", host, "--keep", "1", "--yes").returncode == 0
