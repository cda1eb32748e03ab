"""Timeouts end to end: a host whose packets are dropped (not refused) is reported unreachable
within seconds, a connection that goes silent during an activation is noticed (and the
host's watchdog reverts it), and a host that goes silent in the middle of a slow copy, or a
copy that outlasts its limit, stops the deploy before anything is activated."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from .conftest import copying, start_invoke
from .test_fleet import wait_for

# A dead connection is noticed after 6 s of silence. (Keep-alives wait behind what is queued
# on a saturated link: the slow link's queue is kept far shorter than that.)
QUICK = "ssh_connect_timeout = 3\nssh_alive_interval = 2\nssh_alive_count = 3\n"


@pytest.fixture
def quiet(fleet) -> Iterator[object]:
    """The fleet with short ssh limits in its inventory; every host speaks at full speed again
    afterwards."""
    toml = fleet.path / "nixtasks.toml"
    toml.write_text(toml.read_text().replace("[defaults]\n", "[defaults]\n" + QUICK, 1))
    fleet.git("commit", "-qam", "short ssh limits")
    try:
        yield fleet
    finally:
        for host in ("web1", "web2", "db1"):
            fleet.lab.silence(host, on=False)
            fleet.lab.slow_link(host, None)


def start(fleet, *args: str) -> tuple[subprocess.Popen[str], list[str]]:
    return start_invoke(fleet.path, fleet.lab.env, *args)


def errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def test_a_host_whose_packets_are_dropped_is_unreachable_within_seconds(fleet):
    """The inventory's defaults: ssh gives up connecting after 10 s (not minutes of TCP retries)."""
    fleet.lab.silence("web2")
    try:
        started = time.monotonic()
        made = fleet.make("host/web2/switch", "YES=1")
        assert made.returncode != 0 and "error: web2: cannot reach the host" in made.stderr, made.stderr
        assert time.monotonic() - started < 30
        started = time.monotonic()
        proc = fleet.invoke("switch", "--host", "web1,web2", "--yes")
        took = time.monotonic() - started
        assert proc.returncode == 1, proc.stderr
        found = errors(proc.stderr)
        assert len(found) == 1 and found[0].startswith("error: web2: cannot reach the host"), proc.stderr
        assert "timed out" in found[0] and "--skip-unreachable" in found[0]
        assert took < 30, f"{took:.0f} s"
        assert fleet.lab.current_system("web1") == ""  # nothing changed anywhere
        proc = fleet.invoke("switch", "--host", "web1,web2", "--yes", "--skip-unreachable")
        # The others went out, the report says so, but the selection is not done: never exit 0.
        assert proc.returncode == 1, proc.stderr
        assert "web2  skipped" in proc.stderr and "web1  ok" in proc.stderr
        assert errors(proc.stderr) == ["error: skipped as unreachable (--skip-unreachable): web2; nothing was "
                                       "changed there; deploy it once reachable"], proc.stderr
        assert fleet.lab.current_system("web1") == fleet.build("web1")
    finally:
        fleet.lab.silence("web2", on=False)


def test_a_connection_that_goes_silent_during_the_activation_is_noticed(quiet):
    fleet = quiet
    assert fleet.invoke("switch", "--host", "web1", "--yes").returncode == 0
    good = fleet.lab.current_system("web1")
    fleet.set_knobs("web1", release="1.1", activation_seconds=6)
    proc, lines = start(fleet, "switch", "--host", "web1", "--yes", "--confirm-timeout", "5")
    wait_for(lines, "activation: sleeping")
    fleet.lab.silence("web1")
    silent = time.monotonic()
    try:
        wait_for(lines, "no confirmation over a new connection", timeout=30)
        noticed = time.monotonic() - silent
    finally:
        fleet.lab.silence("web1", on=False)
    assert proc.wait(timeout=180) == 1, "".join(lines)
    text = "".join(lines)
    assert noticed < 20, f"noticed after {noticed:.0f} s:\n{text}"
    assert "switch failed (exit 255): the ssh connection was lost" in text, text
    assert "web1  reverted by the watchdog" in text, text
    assert fleet.lab.current_system("web1") == good == fleet.lab.profile("web1")


def test_a_host_that_goes_silent_in_the_middle_of_a_copy(quiet):
    fleet = quiet
    fleet.set_knobs("web1", payload_kib=192)  # about 30 s over a 50 kbit/s link
    fleet.lab.slow_link("web1", "50kbit")
    started = time.monotonic()
    proc = fleet.invoke("switch", "--host", "web1", "--yes", "--copy-timeout", "3")
    took = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    found = errors(proc.stderr)
    assert len(found) == 1, proc.stderr
    assert found[0].startswith("error: web1: `nix copy` failed with exit code 124: timed out after 3 s "
                               "(its limit: copy_timeout"), found[0]
    assert took < 30, f"{took:.0f} s"
    assert fleet.lab.current_system("web1") == ""
    fleet.lab.slow_link("web1", "50kbit")  # a fresh queue, without what the killed copy left in it
    # The same copy without a short limit; the host goes silent half way.
    proc, lines = start(fleet, "switch", "--host", "web1", "--yes")
    deadline = time.monotonic() + 60
    while not copying(proc.pid):
        assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
        time.sleep(0.2)
    time.sleep(3)  # a few KiB of 192 are through
    assert proc.poll() is None, "".join(lines)
    fleet.lab.silence("web1")
    silent = time.monotonic()
    code = proc.wait(timeout=60)
    noticed = time.monotonic() - silent
    text = "".join(lines)
    assert code == 1, text
    assert noticed < 20, f"noticed after {noticed:.0f} s:\n{text}"
    found = errors(text)
    assert len(found) == 1 and found[0].startswith("error: web1: `nix copy` failed"), text
    fleet.lab.silence("web1", on=False)
    assert fleet.lab.current_system("web1") == "" and fleet.lab.profile("web1") == ""


def test_an_activation_that_outlasts_its_limit_is_rolled_back(quiet):
    fleet = quiet
    assert fleet.invoke("switch", "--host", "web1", "--yes").returncode == 0
    good = fleet.lab.current_system("web1")
    fleet.set_knobs("web1", release="1.1", activation_seconds=8)
    proc = fleet.invoke("switch", "--host", "web1", "--yes", "--activation-timeout", "3")
    assert proc.returncode == 1, proc.stderr
    found = errors(proc.stderr)
    assert len(found) == 1 and found[0].startswith("error: web1: rolled back: switch failed (exit 124): timed out "
                                                   "after 3 s (its limit: activation_timeout"), proc.stderr
    assert fleet.lab.current_system("web1") == good == fleet.lab.profile("web1")
    assert fleet.lab.health("web1")[0] == 200
