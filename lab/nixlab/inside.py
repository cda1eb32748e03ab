"""Reaching into a running host: its supervisor and systemd, a command run inside it (nsenter,
no ssh, so it works with the host's network cut), and what it answers."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from nixlab.proc import LabError, pid_is, read_pid
from nixlab.registry import host_dir

SYSTEM_PATH = "/run/current-system/sw/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def supervisor_alive(host: str) -> bool:
    return pid_is(read_pid(host_dir(host) / "supervisor.pid"), f"_supervise {host}")


def container_init(host: str) -> int:
    """PID (in our namespace) of the host's systemd: the nspawn process's child."""
    nspawn = read_pid(host_dir(host) / "nspawn.pid")
    if not pid_is(nspawn, "systemd-nspawn"):
        raise LabError(f"{host} is not running (labctl up {host})")
    # A process that ends while we look is gone before its file is opened (FileNotFoundError)
    # or after (ProcessLookupError on the read).
    try:
        tasks = list(Path(f"/proc/{nspawn}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise LabError(f"{host} is not running (labctl up {host})") from exc
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):  # the task ended meanwhile
            continue
        for child in children:
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    return int(child)
            except (FileNotFoundError, ProcessLookupError):  # a child that exited while we looked
                continue
    raise LabError(f"{host} has no running systemd yet")


def exec_in(host: str, cmd: list[str], capture: bool = False, timeout: float | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    pid1 = container_init(host)
    argv = ["nsenter", "-t", str(pid1), "-a", "--", "env", "-i", f"PATH={SYSTEM_PATH}", "LANG=C.UTF-8",
            "TERM=" + os.environ.get("TERM", "dumb"), "HOME=/root", *cmd]
    return subprocess.run(argv, text=True, capture_output=capture, timeout=timeout, input=input)


def system_state(host: str) -> str:
    try:
        proc = exec_in(host, ["systemctl", "is-system-running"], capture=True, timeout=10)
    except (LabError, subprocess.TimeoutExpired):
        return "down"
    return proc.stdout.strip() or "unknown"


def sshd_answers(addr: str) -> bool:
    try:
        with socket.create_connection((addr, 22), timeout=2) as sock:
            sock.settimeout(2)
            if not sock.recv(64).startswith(b"SSH-"):
                return False
            # Say who we are before closing: else sshd logs an error-level line per probe.
            sock.sendall(b"SSH-2.0-labctl-probe\r\n")
            return True
    except OSError:
        return False


def console_tail(host: str, lines: int = 15) -> str:
    try:
        text = (host_dir(host) / "console.log").read_text(errors="replace")
    except FileNotFoundError:
        return "(no console log)"
    return "\n".join(text.splitlines()[-lines:])
