"""16 hosts come up and go down, and nothing is left; a crashed lab is cleaned up. Each test
brings the session's lab back as it found it, so these may run in any order."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from .conftest import LAB_ID, STATE, SUFFIX, bring_up, labctl

EXTRA = [f"h{i:02d}" for i in range(1, 14)]  # with web1, web2 and db1: 16 hosts


def lab_of(proc: Path) -> str:
    """The lab a labctl process belongs to (other labs may run on this machine meanwhile)."""
    try:
        environ = (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return ""
    ids = [e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"NIXTASKS_LAB_ID=")]
    return ids[0] if ids else "0"


def lab_leftovers() -> list[str]:
    left = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left += [f"netns {n}" for n in re.findall(rf"^(lab{SUFFIX}-\S+)", netns, flags=re.M)]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    left += [f"link {n}" for n in re.findall(rf"^\d+: (lab-br{LAB_ID}|lab{SUFFIX}v\d+)[@:]", links, flags=re.M)]
    left += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/nixtasks-lab{SUFFIX}")]
    if STATE.exists():
        left.append(f"directory {STATE}")
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if ("labctl _supervise" in cmdline and lab_of(proc) == LAB_ID) or (
                "systemd-nspawn" in cmdline and f"{STATE}/" in cmdline):
            left.append(f"process {proc.name}: {cmdline[:80]}")
    return left


@pytest.fixture
def restored(lab):
    """The session's lab, brought back up as the other tests need it after the test."""
    try:
        yield lab
    finally:
        bring_up(lab.workspace)


def test_up_again_says_so_and_up_after_a_crash_cleans_up_first(restored):
    again = labctl("up")
    assert "already up: web1 web2 db1" in again.stderr
    # Kill every host's supervisor by PID, as a crash would: its containers live on, orphaned.
    for host in ("web1", "web2", "db1"):
        pid = int((STATE / "hosts" / host / "supervisor.pid").read_text())
        os.kill(pid, signal.SIGKILL)
    proc = labctl("up")
    assert "cleaning up what an earlier lab left behind" in proc.stderr
    rows = [line.split() for line in labctl("status").stdout.splitlines()[1:]]
    assert [(r[0], r[2], r[3]) for r in rows] == [(h, "running", "yes") for h in ("web1", "web2", "db1")]


def test_sixteen_hosts_come_up_and_the_lab_goes_down_without_a_trace(restored):
    labctl("up", *EXTRA)
    status = labctl("status").stdout
    rows = [line.split() for line in status.splitlines()[1:]]
    assert len(rows) == 16
    assert all(row[2] == "running" and row[3] == "yes" for row in rows), status
    labctl("down")
    assert lab_leftovers() == []
