"""One deploy or rollback at a time per host, across deployers: a transient systemd unit on
the host is the lock (systemd starts one unit of a name, atomically), and its
RuntimeMaxSec lets the lock of a deployer that died expire by itself."""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import socket
from collections.abc import Iterator
from datetime import datetime, timezone

from ..host import commands
from ..host.runner import Runner
from ..models import Host

UNSAFE = re.compile(r"[^A-Za-z0-9@._:+-]")


def owner(action: str) -> str:
    """Who holds the lock, readable by the next deployer: `who=...,action=...,pid=...,since=...`."""
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    since = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    fields = {"who": who, "action": action, "pid": str(os.getpid()), "since": since}
    return ",".join(f"{k}={UNSAFE.sub('_', v)}" for k, v in fields.items())


def holder(host: Host, runner: Runner) -> str:
    """The lock's owner text, or "" when the host is not locked."""
    result = runner.run(commands.lock_holder(), host.target, check=False)
    values = dict(line.partition("=")[::2] for line in result.stdout.splitlines())
    description = values.get("Description", "")
    if values.get("ActiveState") not in ("active", "activating") or not description.startswith("nixtasks-lock:"):
        return ""
    return description.removeprefix("nixtasks-lock:")


def take(host: Host, action: str, ttl: float, runner: Runner) -> tuple[str | None, str]:
    """Take the host's lock: (None, our owner text) when taken; otherwise (why not, "")."""
    mine = owner(action)
    result = runner.run(commands.take_lock(mine, ttl), host.target, check=False, label=host.name)
    if result.ok:
        return None, mine
    if result.exit_code == 255 and not host.is_local:
        lost = runner.failure(commands.take_lock("", ttl), host.target, host.name, result)
        return f"cannot take the lock: {lost}", ""
    held_by = holder(host, runner)
    if held_by:
        return f"locked by another deploy ({held_by})", ""
    detail = (result.stderr.strip().splitlines() or [f"exit {result.exit_code}"])[-1]
    return f"cannot take the lock: {detail}", ""


def release(host: Host, runner: Runner, mine: str | None = None) -> bool:
    """Release the lock; with `mine`, only if it is still ours (it may have expired and been
    taken by another deploy)."""
    return runner.run(commands.release_lock(mine), host.target, check=False, label=host.name).ok


@contextlib.contextmanager
def held(host: Host, action: str, ttl: float, runner: Runner, *, systemd: bool = True) -> Iterator[str | None]:
    """The host's lock for the length of the block: yields None when it is held, else why not.
    Released at the end, also after an exception, and only if it is still ours. A host
    without systemd has no lock unit: nothing is taken."""
    if not systemd:
        yield None
        return
    refused, mine = take(host, action, ttl, runner)
    try:
        yield refused
    finally:
        if not refused and not release(host, runner, mine):
            runner.echo(f"warning: {host.name}: could not release the deploy lock; it expires by itself after "
                        f"{ttl:g} s, or: invoke unlock --host {host.name}")
