"""The lab itself behaves like real machines."""

from __future__ import annotations

import subprocess
import time

from .conftest import REPO, STATE, labctl


def test_fresh_host_runs_systemd(fleet):
    for host in ("web1", "web2", "db1"):
        assert fleet.lab.ssh(host, "systemctl is-system-running").stdout.strip() == "running"


def test_copied_path_lands_only_on_that_host(fleet):
    path = fleet.build("web1")
    subprocess.run(["nix", "copy", "--to", "ssh://web1", path], env=fleet.lab.env, check=True, capture_output=True)
    assert fleet.lab.exec("web1", "test", "-e", path, check=False).returncode == 0
    assert fleet.lab.exec("web2", "test", "-e", path, check=False).returncode != 0


def test_password_login_is_refused(lab):
    proc = subprocess.run(["ssh", "-F", str(STATE / "ssh/config"), "-o", "PreferredAuthentications=password,none",
                           "-o", "PubkeyAuthentication=no", "web1", "true"], capture_output=True, text=True)
    assert proc.returncode == 255
    assert "Permission denied (publickey)" in proc.stderr  # the server offers keys only


def test_unknown_host_key_is_refused(lab):
    proc = subprocess.run(["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                           "-o", "UserKnownHostsFile=/dev/null", "-i", str(STATE / "ssh/id_ed25519"),
                           f"root@{lab.address('web1')}", "true"], capture_output=True, text=True)
    assert proc.returncode == 255
    assert "Host key verification failed" in proc.stderr


def test_deploy_can_sudo_without_password(lab):
    assert lab.ssh("deploy@web2", "sudo -n id -u").stdout.strip() == "0"


def test_path_puts_current_system_first(lab):
    assert lab.ssh("web1", "echo $PATH").stdout.startswith("/run/current-system/sw/bin:")


def test_transient_timer_fires(lab):
    lab.ssh("web1", "rm -f /tmp/fired; systemd-run --quiet --on-active=2 --timer-property=AccuracySec=100ms "
                    "--unit=lab-timer-test touch /tmp/fired")
    deadline = time.monotonic() + 10
    while lab.exec("web1", "test", "-e", "/tmp/fired", check=False).returncode != 0:
        assert time.monotonic() < deadline, "the transient timer did not fire"
        time.sleep(0.2)


def test_exec_works_with_the_network_cut(fleet):
    lab = fleet.lab
    lab.exec("db1", "ip", "link", "set", "lab0", "down")
    assert lab.ssh("db1", "true", check=False).returncode == 255
    assert lab.exec("db1", "hostname").stdout.strip() == "db1"
    lab.exec("db1", "ip", "link", "set", "lab0", "up")


def test_reboot_activates_the_boot_profile(fleet):
    lab = fleet.lab
    path = fleet.build("db1")
    env = lab.env
    subprocess.run(["nix", "copy", "--to", "ssh://db1", path], env=env, check=True, capture_output=True)
    lab.ssh("db1", f"nix-env -p /nix/var/nix/profiles/system --set {path}")
    assert lab.current_system("db1") == ""
    labctl("reboot", "db1")
    assert lab.current_system("db1") == path
    assert lab.health("db1")[0] == 200
    # A reboot from inside the host brings it back too.
    lab.ssh("db1", "systemctl reboot", check=False)
    deadline = time.monotonic() + 30
    while lab.ssh("db1", "systemctl is-system-running", check=False).stdout.strip() != "running":
        assert time.monotonic() < deadline, "db1 did not come back after systemctl reboot"
        time.sleep(0.3)
    assert lab.current_system("db1") == path


def test_status_shows_each_host_with_its_nix(lab):
    rows = {row[0]: row for row in (line.split() for line in labctl("status").stdout.splitlines()[1:])}
    assert {h: rows[h][1] for h in ("web1", "web2", "db1")} == {h: lab.address(h) for h in ("web1", "web2", "db1")}
    # A mixed fleet: db1 on Debian 13 with Nix 2.26, the others on Debian 12 with Nix 2.8
    assert {h: (rows[h][4].rsplit(".", 1)[0], rows[h][5]) for h in ("web1", "web2", "db1")} == {
        "web1": ("2.8", "bookworm"), "web2": ("2.8", "bookworm"), "db1": ("2.26", "trixie")}


def test_env_lines_work_for_nix_copy_and_ssh(lab):
    out = labctl("env").stdout
    assert "export NIX_CONF_DIR=" in out and "export NIX_SSHOPTS='-F " in out
    proc = subprocess.run(["bash", "-c", 'eval "$(lab/labctl env)"; ssh $NIX_SSHOPTS web1 systemctl is-system-running'],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.stdout.strip() == "running", proc.stderr


def test_each_knob_does_what_it_says(fleet):
    lab = fleet.lab
    fleet.set_knobs("web1", healthy=False, failed_units=["broken"])
    fleet.set_knobs("db1", activation_seconds=2)
    proc = fleet.invoke("switch", "--host", "web1", "--yes")
    assert proc.returncode == 1 and "broken.service" in proc.stderr, proc.stderr  # activation exits 4
    assert lab.health("web1")[0] == 500
    assert "broken.service" in lab.exec("web1", "systemctl", "--failed", "--plain", "--no-legend").stdout
    assert "broken" in lab.exec("web1", "journalctl", "-p", "err", "-b", "--no-pager").stdout
    started = time.monotonic()
    proc = fleet.invoke("switch", "--host", "db1", "--yes")
    assert proc.returncode == 0 and time.monotonic() - started >= 2, proc.stderr
    fleet.set_knobs("web2", break_network=True)
    fleet.invoke("switch", "--host", "web2", "--yes")
    assert lab.ssh("web2", "true", check=False).returncode == 255  # cut off
    fleet.set_knobs("web2", break_network=False)
    good = fleet.build("web2")
    subprocess.run(["nix", "copy", "--to", f"file://{lab.workspace}/cache", good], env=lab.env, check=True,
                   capture_output=True)
    lab.exec("web2", "nix", "copy", "--no-check-sigs", "--from", f"file://{lab.workspace}/cache", good)
    lab.exec("web2", f"{good}/bin/switch-to-configuration", "test")
    assert lab.ssh("web2", "true").returncode == 0  # a good activation restores it
