"""Plans that say what will happen (#18, 7-9), on lab hosts, typed as a user types them: what the
plan and the report say is compared with the host's real /run/current-system and boot profile."""

from __future__ import annotations

import json

from .conftest import labctl


def boot_generation(fleet, host: str) -> int:
    """The number of the generation the host's boot profile points at, read on the host."""
    link = fleet.lab.exec(host, "readlink", "/nix/var/nix/profiles/system").stdout.strip()
    return int(link.removeprefix("system-").removesuffix("-link"))


def release(fleet, host: str, version: str) -> str:
    """The host's system of `version`, committed, built."""
    fleet.set_knobs(host, release=version)
    return fleet.build(host)


def plan_lines(stderr: str, host: str) -> list[str]:
    """The plan's lines about `host`, from its heading to its `new` line."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {host} -> "))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("    new:"))
    return lines[start + 1:end + 1]


def test_after_a_test_the_plan_shows_what_runs_and_what_boots_each_with_its_generation(fleet):
    proc = fleet.make("host/web1/switch", "YES=1")
    assert proc.returncode == 0, proc.stderr
    first = fleet.build("web1")
    tested = release(fleet, "web1", "1.1")
    proc = fleet.make("host/web1/test", "YES=1")
    assert proc.returncode == 0, proc.stderr
    assert fleet.lab.current_system("web1") == tested and fleet.lab.profile("web1") == first
    generation = boot_generation(fleet, "web1")

    rows = json.loads(fleet.invoke("status", "--host", "web1", "--json").stdout)
    assert (rows[0]["system"], rows[0]["running_generation"], rows[0]["test_activated"]) == (tested, None, True)
    assert (rows[0]["generation"], rows[0]["boot_system"]) == (generation, first)
    table = fleet.invoke("status", "--host", "web1").stdout
    assert f"test-activated (boots {generation})" in table
    listing = fleet.invoke("generations", "--host", "web1")
    assert f"runs {tested}: test-activated, no generation (the next boot runs generation {generation})" in \
        listing.stdout + listing.stderr

    new = release(fleet, "web1", "1.2")
    proc = fleet.invoke("switch", "--host", "web1", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert plan_lines(proc.stderr, "web1") == [
        "    action:  switch",
        f"    runs:    {tested} (test-activated, no generation)",
        f"    boots:   {first} (generation {generation})",
        f"    new:     {new}",
    ]
    assert fleet.lab.current_system("web1") == new == fleet.lab.profile("web1")
    assert boot_generation(fleet, "web1") == generation + 1


def test_a_boot_deploy_runs_no_checks_and_says_the_old_system_runs_until_the_reboot(fleet):
    proc = fleet.invoke("switch", "--host", "web1", "--yes")
    assert proc.returncode == 0, proc.stderr
    old = fleet.build("web1")
    new = release(fleet, "web1", "1.1")
    proc = fleet.invoke("boot", "--host", "web1", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = proc.stderr.splitlines()
    assert "  checks:   none: they would test the system that runs now, not the new one (after the reboot: invoke " \
           "verify)" in plan
    assert "  watchdog: none: nothing is activated now" in plan
    assert "[web1] checks" not in plan and "[web1] confirm" not in plan  # nothing was checked on the old system
    # the host runs the old system and boots the new one, as the report says
    assert fleet.lab.current_system("web1") == old and fleet.lab.profile("web1") == new
    assert json.loads(fleet.lab.health("web1")[1])["release"] == "1.0"
    generation = boot_generation(fleet, "web1")
    [host] = json.loads(proc.stdout)["hosts"]
    assert (host["outcome"], host["system_after"], host["generation_after"]) == ("ok", new, generation)
    assert host["message"] == (f"boot entry set (generation {generation}); it still runs "
                               f"{old.split('-', 1)[1]} until it reboots")
    assert "checks" not in host["stages"]

    # the next plan labels each with its own generation: the old one runs, the new one boots
    proc = fleet.invoke("test", "--host", "web1", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert plan_lines(proc.stderr, "web1")[1:3] == [f"    runs:    {old} (generation {generation - 1}, not the boot "
                                                    "entry)", f"    boots:   {new} (generation {generation})"]


def test_make_boot_names_what_becomes_the_boot_entry_of_a_fresh_host(fleet):
    proc = fleet.make("host/db1/boot", "YES=1")
    assert proc.returncode == 0, proc.stderr
    path = fleet.build("db1")
    assert f"Make {path.split('-', 1)[1]} the boot entry of db1 (root@db1)?" in proc.stderr
    assert fleet.lab.current_system("db1") == "" and fleet.lab.profile("db1") == path
    assert "(boot entry set (generation 1); it runs no system until it reboots)" in proc.stderr
    labctl("reboot", "db1")
    assert fleet.lab.current_system("db1") == path


def test_a_blue_green_plan_checks_after_the_reboot(fleet):
    proc = fleet.make("blue-green", "TO=blue", "YES=1")
    assert proc.returncode == 0, proc.stderr
    text = proc.stderr
    assert "  checks:   after the reboot, on the new system (never before the host answers with a new boot id); a " \
           "host that fails is booted back into its previous generation" in text.splitlines()
    assert "no checks" not in text and "  watchdog: a remote host" not in text
    assert text.index("  checks:   after the reboot") < text.index("[web1] reboot") < text.index("[web1] checks")
    assert fleet.lab.current_system("web1") == fleet.build("web1") == fleet.lab.profile("web1")


def test_the_plan_lists_each_batch_and_the_run_goes_so(fleet):
    proc = fleet.invoke("switch", "--host", "web1,web2,db1", "--batch-size", "1", "--pause", "1",
                        "--rollback-batch-on-failure", "--yes")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    start = lines.index("  batches:  3, one after another, 1 s apart (--pause), up to 1 host(s) at a time")
    assert lines[start + 1:start + 5] == [
        "    1: web1", "    2: web2", "    3: db1",
        "  halt:     when a host of a batch fails (--max-fail-percentage 0): the batches after it do not start; its "
        "healthy hosts are rolled back too (--rollback-batch-on-failure)"]
    # fresh hosts run nothing the watchdog could go back to: the plan says so
    assert lines[start + 7] == ("  watchdog: a remote host reverts by itself unless it confirms within 30 s; not on "
                                "web1, web2, db1 (it runs no system yet to go back to)")
    order = [lines.index("[web1] lock"), lines.index("pausing 1 s before batch 2"), lines.index("[web2] lock"),
             lines.index("pausing 1 s before batch 3"), lines.index("[db1] lock")]
    assert order == sorted(order)
    for host in ("web1", "web2", "db1"):
        assert fleet.lab.current_system(host) == fleet.build(host) == fleet.lab.profile(host)
