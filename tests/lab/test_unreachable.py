"""What a person reads about a host nixtasks cannot reach, and what a plan promises: verify
names the host once and gives the ssh command nixtasks runs; boot and dry-activate plans say
what really happens, and the hosts show it."""

from __future__ import annotations

from .conftest import Fleet


def errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def test_verify_of_an_unreachable_host_names_it_once_with_the_ssh_command_to_try(fleet: Fleet):
    config = fleet.lab.env["NIXTASKS_LAB_SSH_CONFIG"]  # the inventory's ssh_config, and NIX_SSHOPTS' -F
    fleet.lab.silence("web2")
    try:
        made = fleet.make("host/web2/verify")
        proc = fleet.invoke("verify", "--host", "web2")
    finally:
        fleet.lab.silence("web2", on=False)
    assert made.returncode == 2 and "host/web2/verify] Error 1" in made.stderr, made.stderr  # invoke's 1, in make
    assert proc.returncode == 1 and errors(proc.stderr) == errors(made.stderr), proc.stderr
    found = errors(made.stderr)
    assert len(found) == 1 and found[0].startswith("error: web2: cannot reach the host over ssh ("), made.stderr
    assert found[0].endswith(f"; check it is up and try `ssh -F {config} deploy@web2`"), found[0]
    assert "web2: web2:" not in made.stdout + made.stderr
    shown = ["web2: PROBLEMS", found[0].replace("error: web2: ", "  - ", 1)]
    assert proc.stdout.splitlines()[:2] == shown and made.stdout.splitlines()[1:3] == shown  # after make's echo


def test_boot_and_dry_activate_plans_say_what_really_happens(fleet: Fleet):
    assert fleet.make("host/web1/switch", "YES=1").returncode == 0
    first = fleet.lab.current_system("web1")
    fleet.set_knobs("web1", release="1.1")
    dry = fleet.make("host/web1/dry-activate")
    assert dry.returncode == 0, dry.stderr
    assert "  effect:   none: each host only says what an activation would change" in dry.stderr
    assert "checks:" not in dry.stderr and "watchdog:" not in dry.stderr
    assert fleet.lab.current_system("web1") == first == fleet.lab.profile("web1")
    boot = fleet.make("host/web1/boot", "YES=1")
    assert boot.returncode == 0, boot.stderr
    assert ("  effect:   only the boot entry is set: each host runs what it runs now until it reboots; a host whose "
            "boot entry is not the new system is rolled back") in boot.stderr
    assert "  checks:   none: they would test the system that runs now, not the new one" in boot.stderr
    assert "  watchdog: none: nothing is activated now" in boot.stderr and "[web1] checks" not in boot.stderr
    assert fleet.lab.current_system("web1") == first and fleet.lab.profile("web1") == fleet.build("web1") != first
