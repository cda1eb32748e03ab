"""The deploy lock across a reboot (blue-green), and what emergency says and does after a no at
its second question. The hosts' real state is asserted: what runs (/run/current-system), what
boots (the system profile), the lock unit and its on-disk hold, and the journals."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.screen import Terminal

from .conftest import Fleet, start_invoke
from .test_recipes import boot_id, first_deploy, new_release, records, release

HOLD = "/var/lib/nixtasks/lock-hold"
HOST_JOURNAL = "/var/lib/nixtasks/journal.jsonl"


def host_records(fleet: Fleet, host: str) -> list[dict[str, object]]:
    out = fleet.lab.exec(host, "cat", HOST_JOURNAL, check=False).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def lock_left(fleet: Fleet, host: str) -> str:
    """The lock unit's line and the hold, as the host has them ("" when there is neither)."""
    unit = fleet.lab.exec(host, "systemctl", "list-units", "--all", "--plain", "--no-legend", "--full",
                          "nixtasks-lock.service").stdout.strip()
    hold = fleet.lab.exec(host, "cat", HOLD, check=False).stdout.strip()
    return (unit + " " + hold).strip()


def wait_for_line(lines: list[str], text: str, proc: subprocess.Popen[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in lines):
        assert proc.poll() is None, f"exited {proc.returncode} before {text!r}:\n{''.join(lines)}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout:g} s:\n{''.join(lines)}"
        time.sleep(0.05)


def slow_check(fleet: Fleet) -> None:
    """web1's checks take 25 s: the checks after the reboot, under the lock, are a sure window for
    a deploy started as they begin (it takes a few seconds to build and get to the lock; a busy
    machine may make that many more)."""
    toml = fleet.path / "nixtasks.toml"
    toml.write_text(toml.read_text().replace('canary = true\n', 'canary = true\n'
                                             'checks = [{ command = "sleep 25", timeout = 60 }]\n', 1))
    fleet.git("commit", "-qam", "web1's checks take a while")


def test_a_second_deploy_during_blue_greens_reboot_is_refused_as_locked(fleet):
    """A second `invoke switch --host web1 --yes`, started when `[web1] reboot` appears (and again
    whenever it ended, until blue-green is done), never gets web1: the lock is held from the
    boot activation through the checks after the reboot."""
    first_deploy(fleet)
    slow_check(fleet)
    new_release(fleet)
    new = fleet.build("web1")
    booted = boot_id(fleet, "web1")
    before = len(records(fleet))
    before_on_host = len(host_records(fleet, "web1"))
    green, lines = start_invoke(fleet.path, fleet.lab.env, "blue-green", "--to", "blue", "--yes")
    wait_for_line(lines, "[web1] reboot", green)
    new_release(fleet, "1.2")  # the second deployer's release: blue-green built 1.1 already
    attempts: list[subprocess.CompletedProcess[str]] = []
    # Until the checks after the reboot have begun (the boot runs none, so the first "[web1] checks"
    # is theirs): after them blue-green lets go, and a deploy then is welcome.
    while green.poll() is None and len(attempts) < 30:
        checking = any("[web1] checks" in line for line in lines)
        attempts.append(fleet.invoke("switch", "--host", "web1", "--yes"))
        if checking:
            break
    assert green.wait(timeout=300) == 0, "".join(lines)
    text = "".join(lines)
    assert "traffic switched to blue" in text and (fleet.path / "traffic.txt").read_text().split() == ["blue", "web1"]
    for attempt in attempts:
        assert attempt.returncode != 0 and "[web1] activation" not in attempt.stderr, attempt.stderr
    refused = [a for a in attempts if "locked by another deploy (who=" in a.stderr]
    assert refused, "\n---\n".join(a.stderr for a in attempts)
    assert all("action=blue-green" in a.stderr for a in refused)
    # web1 runs and boots what blue-green deployed, after a real reboot; no lock or hold is left.
    assert boot_id(fleet, "web1") != booted
    assert fleet.lab.current_system("web1") == new == fleet.lab.profile("web1")
    assert release(fleet, "web1") == "1.1"
    assert lock_left(fleet, "web1") == ""
    # The journals: blue-green's boot and reboot went out ok; the second deployer only ever was refused.
    mine = [(r["host"], r["action"], r["outcome"]) for r in records(fleet)[before:] if r["outcome"] != "started"]
    assert ("web1", "blue-green", "ok") in mine
    assert all(outcome != "ok" for host, action, outcome in mine if action == "switch"), mine
    assert ("web1", "switch", "locked") in mine
    on_host = [(r["action"], r["outcome"]) for r in host_records(fleet, "web1")[before_on_host:]]
    assert ("switch", "ok") not in on_host and ("blue-green", "ok") in on_host, on_host


def test_a_hold_refuses_others_expires_by_itself_and_unlock_clears_it(fleet):
    """The hold alone (as a deployer that died mid-reboot leaves it): another deploy is refused
    with the holder named; `invoke unlock` shows and clears it; an expired hold refuses nothing."""
    first_deploy(fleet)
    new_release(fleet)
    owner = "who=gone@deployer,action=blue-green,pid=4242,since=2026-01-01T00:00:00Z"
    fleet.lab.exec("web1", "sh", "-c", f'echo "$(( $(date +%s) + 600 )) {owner}" > {HOLD}')
    proc = fleet.invoke("switch", "--host", "web1", "--yes")
    assert proc.returncode == 1, proc.stderr
    assert f"locked by another deploy ({owner}" in proc.stderr and "invoke unlock --host web1" in proc.stderr
    assert release(fleet, "web1") == "1.0"
    assert fleet.lab.exec("web1", "systemctl", "list-units", "--all", "--plain", "--no-legend",
                          "nixtasks-lock.service").stdout.strip() == ""  # the refused take left no unit
    proc = fleet.invoke("unlock", "--host", "web1", "--yes")
    assert proc.returncode == 0 and f"web1: locked by {owner}" in proc.stderr, proc.stderr
    assert lock_left(fleet, "web1") == ""
    fleet.lab.exec("web1", "sh", "-c", f'echo "$(( $(date +%s) - 1 )) {owner}" > {HOLD}')  # expired
    assert "web1: not locked" in fleet.invoke("unlock", "--host", "web1", "--yes").stderr
    proc = fleet.invoke("switch", "--host", "web1", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert release(fleet, "web1") == "1.1"


def test_blue_green_as_deploy_with_only_the_sudoers_snippet(fleet):
    """web2 (green) reached as `deploy`, whose sudo allows only `invoke sudoers`' snippet: the
    hold is written, renewed, and let go through sudo as well."""
    first_deploy(fleet)
    snippet = fleet.invoke("sudoers", "--user", "deploy").stdout
    fleet.lab.exec("web2", "sh", "-c", f"cat > /etc/sudoers.d/deploy <<'EOF'\n{snippet}EOF\n"
                   "chmod 0440 /etc/sudoers.d/deploy")
    assert fleet.lab.ssh("deploy@web2", "sudo -n id", check=False).returncode != 0  # nothing else is allowed
    new_release(fleet)
    proc = fleet.invoke("blue-green", "--to", "green", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr, proc.stderr
    assert fleet.lab.current_system("web2") == fleet.build("web2") == fleet.lab.profile("web2")
    assert lock_left(fleet, "web2") == ""


# --- emergency: no at the switch question ------------------------------------------------------


def emergency_at_terminal(fleet: Fleet) -> Terminal:
    env = {**fleet.lab.env, "NIXTASKS_YES": "", "NIXTASKS_REASON": ""}
    return Terminal([sys.executable, "-m", "invoke", "emergency", "--host", "web1", "--reason", "CVE fix"],
                    cwd=fleet.path, env=env, cols=400)


SWITCH_QUESTION = "passed the test activation and its checks. Switch (make it the boot entry)?"
BACK_QUESTION = "Go back to the booted system"


def decline_the_switch(fleet, go_back: str) -> tuple[int, str]:
    """emergency at a terminal: yes to the test activation, no to the switch, then `go_back` to
    the offer to go back to the booted system. The exit code and what the screen showed."""
    with emergency_at_terminal(fleet) as term:
        term.wait_for("EMERGENCY: test-activate web1", timeout=300)
        term.send("y")
        term.wait_for(SWITCH_QUESTION, timeout=300)
        term.send("n")
        term.wait_for(BACK_QUESTION, timeout=60)
        term.send(go_back)
        return term.wait_exit(), term.scrollback()


def test_emergency_no_at_the_switch_says_what_runs_and_leaves_it_on_request(fleet):
    first_deploy(fleet)
    old = fleet.lab.current_system("web1")
    new_release(fleet)
    new = fleet.build("web1")
    code, screen = decline_the_switch(fleet, go_back="n")
    assert code == 1, screen
    assert "declined; nothing changed" not in screen
    assert "runs the test-activated system" in screen and "boots the old one" in screen
    assert "invoke rollback --host web1" in screen or "invoke test --host web1" in screen
    assert fleet.lab.current_system("web1") == new and fleet.lab.profile("web1") == old
    outcomes = [(r["action"], r["outcome"]) for r in records(fleet) if str(r["action"]).startswith("emergency")
                and r["outcome"] != "started"]
    assert outcomes == [("emergency-test", "ok"), ("emergency-switch", "declined")], outcomes
    assert lock_left(fleet, "web1") == ""
    # What the report says to do to go back later does that.
    proc = fleet.invoke("rollback", "--host", "web1", "--generation", "1", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert fleet.lab.current_system("web1") == old == fleet.lab.profile("web1")


def test_emergency_no_at_the_switch_then_back_to_the_booted_system(fleet):
    first_deploy(fleet)
    old = fleet.lab.current_system("web1")
    new_release(fleet)
    code, screen = decline_the_switch(fleet, go_back="y")
    assert code == 3, screen
    assert "back on the booted system" in screen, screen
    assert fleet.lab.current_system("web1") == old == fleet.lab.profile("web1")
    assert release(fleet, "web1") == "1.0"
    assert lock_left(fleet, "web1") == ""
    outcomes = [(r["action"], r["outcome"]) for r in records(fleet) if str(r["action"]).startswith("emergency")
                and r["outcome"] != "started"]
    assert outcomes == [("emergency-test", "ok"), ("emergency-switch", "declined"), ("emergency-back", "ok")]
    on_host = [(r["action"], r["outcome"]) for r in host_records(fleet, "web1") if r["outcome"] != "started"]
    assert ("emergency-back", "ok") in on_host, on_host


def test_emergency_with_yes_switches_and_asks_nothing_more(fleet):
    """--yes answers both questions: the switch follows the test activation; no back question."""
    first_deploy(fleet)
    new_release(fleet)
    proc = fleet.invoke("emergency", "--host", "web1", "--yes", "--reason", "CVE fix")
    assert proc.returncode == 0, proc.stderr
    assert BACK_QUESTION not in proc.stderr
    assert fleet.lab.current_system("web1") == fleet.lab.profile("web1") == fleet.build("web1")
