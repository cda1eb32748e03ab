"""gc, the disk pre-check, doctor and the sudoers snippet, end to end in the lab."""

from __future__ import annotations

from nixtasks.host.commands import REMOTE_PATH

from .conftest import STATE, labctl
from .test_operations import deploy


def generation_numbers(fleet, host: str) -> list[int]:
    return [g["number"] for g in fleet.invoke_json("generations", "--host", host)[host]]


def test_gc_keeps_the_newest_the_running_and_the_booting_generation(fleet):
    paths = []
    for release in ("1.0", "1.1", "1.2", "1.3"):
        fleet.set_knobs("web1", release=release)
        assert deploy(fleet, "web1").returncode == 0
        paths.append(fleet.build("web1"))
    assert fleet.invoke("rollback", "--host", "web1", "--generation", "2", "--yes").returncode == 0
    proc = fleet.invoke("gc", "--host", "web1", "--keep", "1", "--dry-run")
    assert proc.returncode == 0 and "delete generation(s) 3, 1" in proc.stderr, proc.stderr
    assert generation_numbers(fleet, "web1") == [4, 3, 2, 1]
    assert fleet.invoke("gc", "--host", "web1", "--keep", "1").returncode == 3  # asks first; no terminal
    proc = fleet.invoke("gc", "--host", "web1", "--keep", "1", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "store paths deleted" in proc.stderr
    assert generation_numbers(fleet, "web1") == [4, 2]
    assert fleet.lab.current_system("web1") == paths[1] == fleet.lab.profile("web1")
    for gone in (paths[0], paths[2]):
        assert fleet.lab.exec("web1", "test", "-e", gone, check=False).returncode != 0


def test_disk_precheck_refuses_on_a_nearly_full_store(fleet):
    lab = fleet.lab
    labctl("up", "tiny", "--store-size", "2M")
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
    proc = fleet.invoke("doctor", "--host", "web1,web2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[ok  ] web2: sudo: deploy can run nixtasks' commands with sudo -n" in proc.stdout
    assert "[ok  ] web2: copy trust" in proc.stdout
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


def test_the_sudoers_snippet_is_all_deploy_needs(fleet):
    snippet = fleet.invoke("sudoers", "--user", "deploy").stdout
    lab = fleet.lab
    lab.exec("web2", "sh", "-c", f"cat > /etc/sudoers.d/deploy <<'EOF'\n{snippet}EOF\nchmod 0440 /etc/sudoers.d/deploy")
    assert "parsed OK" in lab.exec("web2", "visudo", "-c").stdout
    assert lab.ssh("deploy@web2", "sudo -n id", check=False).returncode != 0  # nothing else is allowed
    env = f"env -i PATH={REMOTE_PATH}"
    for attack in ("/nix/store/../../bin/sh -c id x/bin/switch-to-configuration switch",
                   f"/nix/store/{'a' * 32}-x/../../../bin/sh/bin/switch-to-configuration switch",
                   "nix-env -p /nix/var/nix/profiles/system --switch-generation 1 -p /tmp/other"):
        proc = lab.ssh("deploy@web2", f"sudo -n {env} {attack}", check=False)
        assert proc.returncode != 0 and "password is required" in proc.stderr, attack
    assert deploy(fleet, "web2").returncode == 0
    fleet.set_knobs("web2", release="1.1")
    assert deploy(fleet, "web2").returncode == 0
    proc = fleet.invoke("rollback", "--host", "web2", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert '"release": "1.0"' in lab.health("web2")[1]
    assert "could not write the host's journal" not in proc.stderr
    assert fleet.invoke("gc", "--host", "web2", "--keep", "1", "--yes").returncode == 0
