"""Nothing boots a system that was not confirmed (issue 18): a switch is activated with `test`,
confirmed and checked, and only then made the boot entry. A host that loses power after the
activation of a system that cut it off, before its watchdog (in /run) reverted it, boots what
it booted before; a good switch ends with the new system running, in the profile and in the
boot entry; a switch whose checks fail leaves no generation behind."""

from __future__ import annotations

import json
from pathlib import Path

from nixtasks.actions.journal import read_local

from .conftest import labctl, start_invoke
from .test_fleet import wait_for

BOOT_ENTRY = "/boot/nixtasks-lab/default"  # what the example system's switch-to-configuration writes


def on_host(fleet, command: str) -> str:
    """Over ssh, as an operator would look: the host must answer."""
    return fleet.lab.ssh("root@web1", command).stdout.strip()


def generations(fleet) -> str:
    return on_host(fleet, "ls /nix/var/nix/profiles | grep '^system-' | sort -V")


def test_a_host_powered_off_after_a_cutting_activation_boots_the_old_system_and_is_reported_not_switched(fleet):
    assert fleet.invoke("switch", "--host", "web1", "--yes").returncode == 0
    old = fleet.lab.current_system("web1")
    old_gens = generations(fleet)
    fleet.set_knobs("web1", release="1.1", break_network=True)
    new = fleet.build("web1")
    proc, lines = start_invoke(fleet.path, fleet.lab.env, "switch", "--host", "web1", "--yes", "--json",
                               "--confirm-timeout", "90", "--reason", "cut off")
    # activated (the link is down, the confirmation cannot get through), the watchdog not fired yet
    wait_for(lines, "no confirmation over a new connection", timeout=90)
    assert fleet.lab.current_system("web1") == new
    labctl("stop", "web1")
    started = labctl("start", "web1", check=False)  # waits for it to answer ssh (it fails if cut off)
    assert fleet.lab.current_system("web1") == old, started.stderr  # read inside: it answers or not
    assert started.returncode == 0, started.stderr
    assert proc.wait(timeout=300) == 1, "".join(lines)
    assert proc.stdout is not None
    (report,) = json.loads(proc.stdout.read())["hosts"]
    text = "".join(lines)
    # on the host itself: the old system runs and boots, nothing of the deploy is left
    assert on_host(fleet, "readlink -e /run/current-system") == old
    assert on_host(fleet, "readlink -e /nix/var/nix/profiles/system") == old
    assert on_host(fleet, f"readlink -e {BOOT_ENTRY}") == old
    assert generations(fleet) == old_gens  # the cut-off system never became a generation
    units = on_host(fleet, "systemctl list-units --all --plain --no-legend 'nixtasks-*'; ls /run/nixtasks 2>&1 || :")
    assert "nixtasks-watchdog" not in units and "nixtasks-lock" not in units and "watchdog-armed" not in units
    # the report, the exit code and the journal: not switched
    assert report["outcome"] == "failed", text
    assert (report["system_after"], report["generation_after"]) == (old, report["generation_before"])
    assert "the host was restarted before its watchdog fired" in report["message"], text
    assert f"it runs {old} again" in report["message"]
    (done,) = [r for r in read_local(Path(fleet.lab.env["NIXTASKS_JOURNAL"]))
               if r.host == "web1" and r.reason == "cut off" and r.outcome != "started"]
    assert (done.outcome, done.after_path, done.tried_path) == ("failed", old, new)
    # and `generations` has nothing failed to offer: the failed system is no generation
    listed = fleet.invoke_json("generations", "--host", "web1")["web1"]
    assert not any(g["failed"] for g in listed), listed


def test_a_switch_runs_profiles_and_boots_the_new_system_and_a_failed_one_leaves_no_generation(fleet):
    assert fleet.invoke("switch", "--host", "web1", "--yes").returncode == 0
    good = fleet.build("web1")
    assert fleet.lab.current_system("web1") == good == fleet.lab.profile("web1")
    assert on_host(fleet, f"readlink -e {BOOT_ENTRY}") == good  # switch-to-configuration boot wrote it
    gens = generations(fleet)
    fleet.set_knobs("web1", release="1.1", healthy=False)
    proc = fleet.invoke("switch", "--host", "web1", "--yes", "--json")
    assert proc.returncode == 1, proc.stderr
    (report,) = json.loads(proc.stdout)["hosts"]
    assert report["outcome"] == "rolled back" and report["system_after"] == good
    assert report["generation_after"] == report["generation_before"]
    assert (fleet.lab.current_system("web1"), fleet.lab.profile("web1")) == (good, good)
    assert on_host(fleet, f"readlink -e {BOOT_ENTRY}") == good
    assert generations(fleet) == gens  # the profile was never moved: no failed generation to boot


def test_a_switch_whose_boot_entry_cannot_be_written_goes_back_with_the_boot_loader_s_words(fleet):
    """A full /boot, as the example's fail_boot_entry knob has it: the new system was confirmed
    and checked, but it is not made what boots; the host runs and boots what it did before."""
    assert fleet.invoke("switch", "--host", "web1", "--yes").returncode == 0
    good = fleet.build("web1")
    fleet.set_knobs("web1", release="1.1", fail_boot_entry=True)
    proc = fleet.invoke("switch", "--host", "web1", "--yes", "--json")
    assert proc.returncode == 1, proc.stderr
    (report,) = json.loads(proc.stdout)["hosts"]
    assert report["outcome"] == "rolled back", proc.stderr
    assert report["message"].startswith("switch passed its checks, but making it the boot entry failed (exit 1): "
                                        "Failed to install bootloader (fail_boot_entry)"), report["message"]
    assert (report["system_after"], report["generation_after"]) == (good, report["generation_before"])
    assert (fleet.lab.current_system("web1"), fleet.lab.profile("web1")) == (good, good)
    assert on_host(fleet, f"readlink -e {BOOT_ENTRY}") == good
