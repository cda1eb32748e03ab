"""Running commands, and finding the lab's processes by PID."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any


class LabError(Exception):
    """What went wrong, said in one line: labctl prints `error: ...` and exits 1."""


class UsageError(LabError):
    """Bad input on the command line, found before anything changes: labctl exits 2."""


def log(msg: str) -> None:
    print(f"labctl: {msg}", file=sys.stderr, flush=True)


def run(*argv: str, check: bool = True, quiet: bool = False, **kw: Any) -> subprocess.CompletedProcess[str]:
    kw.setdefault("text", True)
    if quiet:
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
    proc: subprocess.CompletedProcess[str] = subprocess.run(argv, **kw)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} exited {proc.returncode}")
    return proc


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def pid_is(pid: int | None, needle: str) -> bool:
    """True when pid is alive and its command line contains needle (guards PID reuse)."""
    if pid is None:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return needle in cmdline
