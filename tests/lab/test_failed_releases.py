"""A release that fails on one host of a recipe's group (issue 18, "every report true"): each
host ends as its row says, and the fleet consistent. blue-green puts its group back as a whole
(boot entries set back before the reboot, rebooted hosts booted back after it); a no at its
traffic question is exit 1 with what runs; emergency's hosts whose test passed are put back
when another's failed (--yes) or said to run the tested system. Asserted on the hosts
(/run/current-system, the system profile, the lab's boot entry, the boot id), in the report and
`--json`, the exit code, and the deployer's and the hosts' journals."""

from __future__ import annotations

import json
import sys

from tests.screen import DOWN, ENTER, Terminal

from .conftest import Fleet
from .test_reboot_lock import host_records, lock_left
from .test_recipes import boot_id, first_deploy, new_release, records, release

BOOT_ENTRY = "/boot/nixtasks-lab/default"  # written by the example system's switch-to-configuration


def boot_entry(fleet: Fleet, host: str) -> str:
    return fleet.lab.exec(host, "readlink", "-e", BOOT_ENTRY, check=False).stdout.strip()


def state(fleet: Fleet, host: str) -> tuple[str, str, str]:
    """What the host runs, what its profile is, and what its boot entry boots."""
    return fleet.lab.current_system(host), fleet.lab.profile(host), boot_entry(fleet, host)


def blue_is_web1_and_web2(fleet: Fleet) -> None:
    """web2 joins web1 in blue: a group of two, one of which fails."""
    toml = fleet.path / "nixtasks.toml"
    toml.write_text(toml.read_text().replace('tags = ["web", "green"]', 'tags = ["web", "blue"]', 1))
    fleet.git("commit", "-qam", "blue is web1 and web2")


def outcomes_of(fleet: Fleet, since: int, action_prefix: str) -> dict[str, list[tuple[str, str]]]:
    """Per host, the (action, outcome) of the deployer's records since `since`."""
    found: dict[str, list[tuple[str, str]]] = {}
    for r in records(fleet)[since:]:
        if str(r["action"]).startswith(action_prefix) and r["outcome"] != "started":
            found.setdefault(str(r["host"]), []).append((str(r["action"]), str(r["outcome"])))
    return found


def on_host(fleet: Fleet, host: str, since: int, action_prefix: str) -> list[tuple[str, str]]:
    return [(str(r["action"]), str(r["outcome"])) for r in host_records(fleet, host)[since:]
            if str(r["action"]).startswith(action_prefix) and r["outcome"] != "started"]


# --- blue-green ---------------------------------------------------------------------------------


def test_blue_green_whose_boot_fails_on_one_host_sets_the_others_boot_entry_back(fleet):
    first_deploy(fleet)
    blue_is_web1_and_web2(fleet)
    before = {h: state(fleet, h) for h in ("web1", "web2")}
    booted = {h: boot_id(fleet, h) for h in ("web1", "web2")}
    since, since_host = len(records(fleet)), {h: len(host_records(fleet, h)) for h in ("web1", "web2")}
    new_release(fleet, web2={"fail_boot_entry": True})
    proc = fleet.invoke("blue-green", "--to", "blue", "--yes", "--json")
    assert proc.returncode == 1, proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and error[0].startswith("error: web2: rolled back: boot failed"), proc.stderr
    assert "blue went back as a whole (web1 too: see the report); traffic stays where it is" in error[0]
    rows = {h["host"]: h for h in json.loads(proc.stdout)["hosts"]}
    assert {h: r["outcome"] for h, r in rows.items()} == {"web1": "rolled back", "web2": "rolled back"}, proc.stderr
    assert "its boot entry is set back to generation 1: it runs and boots nixos-system-web1-1.0 as before" in \
        rows["web1"]["message"]
    assert (rows["web1"]["system_after"], rows["web1"]["generation_after"]) == (before["web1"][1], 1)
    # Nothing rebooted; each host runs, and boots, what it did before: its boot entry too.
    for host in ("web1", "web2"):
        assert state(fleet, host) == before[host], host
        assert len(set(before[host])) == 1 and boot_id(fleet, host) == booted[host]
        assert lock_left(fleet, host) == ""
        assert on_host(fleet, host, since_host[host], "blue-green") == [("blue-green", "rolled back")], host
    assert outcomes_of(fleet, since, "blue-green") == {"web1": [("blue-green", "rolled back")],
                                                      "web2": [("blue-green", "rolled back")]}
    assert release(fleet, "web1") == release(fleet, "web2") == "1.0"
    assert not (fleet.path / "traffic.txt").exists()


def test_blue_green_whose_host_fails_its_checks_after_the_reboot_boots_the_group_back(fleet):
    first_deploy(fleet)
    blue_is_web1_and_web2(fleet)
    before = {h: state(fleet, h) for h in ("web1", "web2")}
    booted = {h: boot_id(fleet, h) for h in ("web1", "web2")}
    since = len(records(fleet))
    new_release(fleet, web2={"healthy": False})
    proc = fleet.invoke("blue-green", "--to", "blue", "--yes", "--json")
    assert proc.returncode == 1, proc.stderr
    assert "traffic stays where it is" in proc.stderr
    rows = {h["host"]: h for h in json.loads(proc.stdout)["hosts"]}
    assert {h: r["outcome"] for h, r in rows.items()} == {"web1": "rolled back", "web2": "rolled back"}, proc.stderr
    assert rows["web1"]["message"].startswith("rebooted into the new system, but its group goes as a whole and web2 "
                                              "failed (web2: rolled back: check http")
    assert rows["web1"]["message"].endswith("; booted back into generation 1")
    # Both rebooted (twice), and both run and boot the old release again: a later reboot keeps it.
    for host in ("web1", "web2"):
        assert boot_id(fleet, host) != booted[host]
        assert state(fleet, host) == before[host], host
        assert rows[host]["system_after"] == before[host][0] and rows[host]["generation_after"] == 1
        assert lock_left(fleet, host) == ""
        assert on_host(fleet, host, 0, "blue-green")[-1] == ("blue-green", "rolled back")
    # one record per host, with how it ended (the boot's ok waited for the reboot)
    assert outcomes_of(fleet, since, "blue-green") == {h: [("blue-green", "rolled back")] for h in ("web1", "web2")}
    assert release(fleet, "web1") == release(fleet, "web2") == "1.0"
    assert not (fleet.path / "traffic.txt").exists()


def test_blue_green_no_at_the_traffic_question_exits_1_and_says_what_runs(fleet):
    first_deploy(fleet)
    new_release(fleet)
    new = fleet.build("web1")
    env = {**fleet.lab.env, "NIXTASKS_YES": "", "NIXTASKS_REASON": ""}
    with Terminal([sys.executable, "-m", "invoke", "blue-green", "--to", "blue"], cwd=fleet.path, env=env,
                  cols=400) as term:
        term.wait_for("Boot the new system on blue (web1) and reboot it?", timeout=300)
        term.send("y")
        term.wait_for("Switch traffic to blue?", timeout=300)
        term.send("n")
        code, screen = term.wait_exit(), term.scrollback()
    assert code == 1, screen
    assert "nothing was changed" not in screen
    assert ("error: traffic was not switched to blue (declined); blue (web1) runs and boots the new system, the other "
            "group the old. To switch traffic, run on the deployer: echo blue web1 > traffic.txt") in screen
    assert "traffic was NOT switched to blue (declined)" in screen  # web1's row
    assert state(fleet, "web1") == (new, new, new) and release(fleet, "web1") == "1.1"
    assert not (fleet.path / "traffic.txt").exists()
    # one record for web1's blue-green, here and on the host: its reboot's ok waited for the answer
    mine = [r for r in records(fleet) if r["host"] == "web1" and r["action"] == "blue-green"
            and r["outcome"] != "started"]
    assert [(r["outcome"], r["after_path"]) for r in mine] == [("declined", new)]
    assert "runs and boots the new system (generation 2)" in str(mine[0]["message"])
    assert on_host(fleet, "web1", 0, "blue-green") == [("blue-green", "declined")]
    assert lock_left(fleet, "web1") == ""


# --- emergency ----------------------------------------------------------------------------------


def test_emergency_whose_test_fails_on_one_host_puts_the_others_back_with_yes(fleet):
    first_deploy(fleet)
    before = {h: state(fleet, h) for h in ("web1", "web2")}
    since = len(records(fleet))
    new_release(fleet, web2={"fail_activation": True})
    proc = fleet.invoke("emergency", "--host", "web1,web2", "--yes", "--reason", "CVE fix", "--json")
    assert proc.returncode == 1, proc.stderr
    assert "Go back to the booted system on web1 now" in proc.stderr
    rows = {h["host"]: h for h in json.loads(proc.stdout)["hosts"]}
    assert {h: r["outcome"] for h, r in rows.items()} == {"web1": "not started", "web2": "rolled back"}
    assert rows["web1"]["message"] == ("not switched: web2 failed the test activation; back on the booted system "
                                       "(nixos-system-web1-1.0, generation 1), as before the emergency")
    for host in ("web1", "web2"):
        assert state(fleet, host) == before[host] and len(set(before[host])) == 1, host
        assert rows[host]["system_after"] == before[host][0]
        assert lock_left(fleet, host) == ""
    assert release(fleet, "web1") == release(fleet, "web2") == "1.0"
    assert outcomes_of(fleet, since, "emergency") == {
        "web1": [("emergency-test", "ok"), ("emergency-switch", "not started"), ("emergency-back", "ok")],
        "web2": [("emergency-test", "rolled back")]}
    assert on_host(fleet, "web1", 0, "emergency") == [("emergency-test", "ok"), ("emergency-switch", "not started"),
                                                      ("emergency-back", "ok")]


def test_emergency_whose_test_fails_on_one_host_says_the_others_run_the_tested_system(fleet):
    """At a terminal, no to going back: web1 runs the tested system and boots the old one, and its
    row and both journals say so, with how to go back; its next boot goes back."""
    first_deploy(fleet)
    old = fleet.lab.current_system("web1")
    new_release(fleet, web2={"fail_activation": True})
    new = fleet.build("web1")
    env = {**fleet.lab.env, "NIXTASKS_YES": "", "NIXTASKS_REASON": ""}
    with Terminal([sys.executable, "-m", "invoke", "emergency", "--host", "web1,web2", "--reason", "CVE fix"],
                  cwd=fleet.path, env=env, cols=400) as term:
        term.wait_for("EMERGENCY: test-activate web1, web2", timeout=300)
        term.send(DOWN + ENTER)  # No / Yes, all 2 hosts / Choose hosts...
        term.wait_for("Go back to the booted system on web1 now", timeout=300)
        term.send("n")
        code, screen = term.wait_exit(), term.scrollback()
    assert code == 1, screen
    assert "passed the test activation and its checks. Switch" not in screen
    said = ("not switched: web2 failed the test activation: it runs the test-activated system nixos-system-web1-1.1 "
            "and boots the old one (generation 1, nixos-system-web1-1.0): its next boot goes back")
    assert said in screen
    assert state(fleet, "web1") == (new, old, old)
    assert len(set(state(fleet, "web2"))) == 1 and release(fleet, "web2") == "1.0"
    switch = [r for r in records(fleet) if r["action"] == "emergency-switch"]
    assert [(r["host"], r["outcome"], r["after_path"]) for r in switch] == [("web1", "not started", new)]
    assert str(switch[0]["message"]).startswith(said)
    assert on_host(fleet, "web1", 0, "emergency") == [("emergency-test", "ok"), ("emergency-switch", "not started")]
    # What the row says to do to go back does that.
    proc = fleet.invoke("rollback", "--host", "web1", "--generation", "1", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert state(fleet, "web1") == (old, old, old)
