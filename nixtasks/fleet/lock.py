"""One deploy or rollback at a time per host, across deployers: a transient systemd unit on
the host is the lock (systemd starts one unit of a name, atomically), and its
RuntimeMaxSec lets the lock of a deployer that died expire by itself. A deploy that reboots
a host keeps it across the reboot with a hold on the host's disk (see `keep`)."""

from __future__ import annotations

import contextlib
import functools
import getpass
import os
import re
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..host import commands
from ..host.facts import Facts, facts_command, parse_facts, read_facts
from ..host.runner import Result, Runner
from ..models import Command, Host

UNSAFE = re.compile(r"[^A-Za-z0-9@._:+-]")
HELD_BY_ANOTHER = "locked by another deploy"


def by_another(refused: str | None) -> bool:
    """Whether a refusal of `take` is another deploy's lock (not ssh or sudo failing)."""
    return bool(refused) and str(refused).startswith(HELD_BY_ANOTHER)


@functools.cache
def owner(action: str) -> str:
    """Who holds the lock, readable by the next deployer: `who=...,action=...,pid=...,since=...`.
    The same text for every take of one run's `action` (`since`: its first), so that a hold
    admits the deploy that wrote it, after the host's reboot, and no other."""
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    since = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    fields = {"who": who, "action": action, "pid": str(os.getpid()), "since": since}
    return ",".join(f"{k}={UNSAFE.sub('_', v)}" for k, v in fields.items())


def ours(held_by: str) -> bool:
    """Whether a lock's owner text is this very process's: taken in an earlier step of this run
    (a blue-green's boot, an emergency's test) whose release was lost with its connection."""
    fields = dict(part.partition("=")[::2] for part in held_by.split(","))
    mine = dict(part.partition("=")[::2] for part in owner("").split(","))
    return (fields.get("who"), fields.get("pid")) == (mine["who"], mine["pid"])


def holder(host: Host, runner: Runner) -> str:
    """The lock's owner text (of a hold across a reboot, or of the unit), or "" when the host is
    not locked."""
    result = runner.run(commands.lock_holder(), host.target, check=False)
    return commands.parse_lock_holder(result.stdout)


def take(host: Host, action: str, ttl: float, runner: Runner) -> tuple[str | None, str]:
    """Take the host's lock: (None, our owner text) when taken; otherwise (why not, "")."""
    refused, mine, _facts = take_and_read(host, action, ttl, runner, read=False)
    return refused, mine


# --- across a reboot --------------------------------------------------------------------------


def keep(host: Host, action: str, ttl: float, runner: Runner) -> str | None:
    """The host kept for this run's `action` across reboots until `let_go`: the lock taken, a
    hold written on the host's disk for `ttl` seconds, the unit released (the hold admits this
    run's own takes, and no other deploy's). None when kept, else why not."""
    refused, mine = take(host, action, ttl, runner)
    if refused:
        return refused
    results = runner.run_all([commands.hold_lock(mine, ttl), commands.release_lock(mine)], host.target,
                             check=False, label=host.name)
    if results[0].ok:
        if not results[-1].ok or len(results) < 2:
            runner.echo(f"warning: {host.name}: could not release the deploy lock after writing its hold; it "
                        f"expires by itself after {ttl:g} s")
        return None
    release_or_warn(host, runner, mine, ttl)
    return f"cannot keep the lock across the reboot: {last_line(results[0])}"


def renew_hold(host: Host, action: str, ttl: float, runner: Runner) -> str | None:
    """Under the lock (admitted by our hold), the hold renewed for `ttl` seconds: the reboot
    that follows ends the unit, not the hold. None when held, else why not."""
    refused, mine = take(host, action, ttl, runner)
    if refused:
        return refused
    result = runner.run(commands.hold_lock(mine, ttl), host.target, check=False, label=host.name)
    if result.ok:
        return None
    release_or_warn(host, runner, mine, ttl)
    return f"cannot keep the lock across the reboot: {last_line(result)}"


def retake(host: Host, action: str, ttl: float, runner: Runner, tries: int = 10) -> str | None:
    """After the reboot, the lock taken again as the owner of the hold. A refusal by another
    deploy may be one whose take found our hold and is stopping its unit: tried again, once a
    second, `tries` times. None when taken, else why not."""
    refused, _mine = take(host, action, ttl, runner)
    for _ in range(tries - 1):
        if not by_another(refused):
            break
        time.sleep(1)
        refused, _mine = take(host, action, ttl, runner)
    return refused


def last_line(result: Result) -> str:
    """What a failed command said last, for a one-line refusal (its exit code if it said nothing)."""
    return (result.stderr.strip().splitlines() or [f"exit {result.exit_code}"])[-1]


def let_go(host: Host, action: str, ttl: float, runner: Runner) -> bool:
    """The hold removed and the lock released, each only if still this run's `action`'s; a
    warning when the host could not be told (both expire by themselves)."""
    mine = owner(action)
    results = runner.run_all([commands.release_hold(mine), commands.release_lock(mine)], host.target,
                             check=False, label=host.name, keep_going=True)
    if len(results) == 2 and all(r.ok for r in results):
        return True
    runner.echo(f"warning: {host.name}: could not release the deploy lock or its hold across the reboot; they "
                f"expire by themselves after {ttl:g} s, or: invoke unlock --host {host.name}")
    return False


def take_and_read(host: Host, action: str, ttl: float, runner: Runner, *,
                  read: bool = True) -> tuple[str | None, str, Facts | None]:
    """Take the lock and, in the same round trip, read the host's facts as they are under it."""
    taken = take_read_and_run(host, action, ttl, runner, read=read)
    return taken.refused, taken.mine, taken.facts


@dataclass(frozen=True)
class Taken:
    """A take's answer: why the lock was not taken (None: it is held), its owner text, the host
    as read under it, and the results of the commands that followed in the same round trip
    (empty when none ran: not taken, not read, or a lock this run held already)."""

    refused: str | None
    mine: str
    facts: Facts | None
    then: list[Result] = field(default_factory=list)


def take_read_and_run(host: Host, action: str, ttl: float, runner: Runner, then: Sequence[Command] = (), *,
                      read: bool = True, quiet: int = 0, **run: Any) -> Taken:
    """Take the lock, read the host's facts under it (`read`), then run `then`, all in one round
    trip that ends at the first that fails; `run` goes to `run_all` (`stream`: the output of
    `then` from its `quiet`-th command on is shown; `after_quiet`: called once those before
    have passed). `then` runs only under a lock taken by this very take."""
    mine = owner(action)
    lead = [commands.take_lock(mine, ttl)] + ([facts_command()] if read else [])
    cmds = [*lead, *then]
    results = runner.run_all(cmds, host.target, check=False, label=host.name, quiet=len(lead) + quiet, **run)
    result = results[0]
    if result.ok:
        if not read:
            return Taken(None, mine, None, results[len(lead):])
        if len(results) >= 2 and results[1].ok:
            return Taken(None, mine, parse_facts(results[1].stdout), results[len(lead):])
        lost = runner.failure(cmds[1], host.target, host.name, results[-1])
        return Taken(None, mine, Facts(reachable=False, error=str(lost)))
    if result.exit_code == 255 and not host.is_local:
        lost = runner.failure(commands.take_lock("", ttl), host.target, host.name, result)
        return Taken(f"cannot take the lock: {lost}", "", None)
    if result.exit_code == commands.LOCK_HELD:  # another deploy's hold, which its take names
        held_by = commands.held_until(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "")
    else:
        held_by = holder(host, runner)
    if held_by and ours(held_by):  # no other deployer: this run holds it still, and goes on under it
        # the owner text alone, as the unit and the hold have it (a hold is named with its expiry)
        return Taken(None, held_by.partition(";")[0], read_facts(host, runner) if read else None)
    if held_by:
        return Taken(f"{HELD_BY_ANOTHER} ({held_by})", "", None)
    detail = last_line(result)
    return Taken(f"cannot take the lock: {detail}", "", None)


def release(host: Host, runner: Runner, mine: str | None = None) -> bool:
    """Release the lock; with `mine`, only if it is still ours (it may have expired and been
    taken by another deploy)."""
    return runner.run(commands.release_lock(mine), host.target, check=False, label=host.name).ok


def release_or_warn(host: Host, runner: Runner, mine: str, ttl: float,
                    before: Sequence[Command] = ()) -> list[Result]:
    """Release our lock, after `before` (the journal's record) in the same round trip; each
    runs whatever the others do. Returns the results of `before`."""
    results = runner.run_all([*before, commands.release_lock(mine)], host.target, check=False, label=host.name,
                             keep_going=True)
    if len(results) <= len(before) or not results[len(before)].ok:
        runner.echo(f"warning: {host.name}: could not release the deploy lock; it expires by itself after "
                    f"{ttl:g} s, or: invoke unlock --host {host.name}")
    return results[:len(before)]


class Lease:
    """A host's lock for the length of a `held` block: why it was not taken (`refused`; None
    when it is held, or when the host has no lock unit to take), the host as read under it
    (`facts`, when asked for), and its release, which carries the block's last commands (a
    journal record) in the same round trip and gives back their results."""

    def __init__(self, host: Host, runner: Runner, ttl: float, refused: str | None, mine: str,
                 facts: Facts | None = None, *, taken: bool = True) -> None:
        self.host, self.runner, self.ttl = host, runner, ttl
        self.refused, self.facts = refused, facts
        self._mine, self._held = mine, taken and refused is None

    def settle(self, taken: Taken) -> None:
        """What a take in one of the block's own round trips said: a lease made before that
        round trip (so that however it ends, the lock is released if it is ours)."""
        self.refused, self.facts, self._mine = taken.refused, taken.facts, taken.mine
        self._held = taken.refused is None

    def release(self, before: Sequence[Command] = ()) -> list[Result]:
        """`before` run on the host, then the lock released (if this block holds it), in one
        round trip; each runs whatever the others do. Returns the results of `before`."""
        if not self._held:
            return self.runner.run_all(before, self.host.target, check=False) if before else []
        self._held = False
        return release_or_warn(self.host, self.runner, self._mine, self.ttl, before)


@contextlib.contextmanager
def held(host: Host, action: str, ttl: float, runner: Runner, *, systemd: bool = True,
         read: bool = False) -> Iterator[Lease]:
    """The host's lock for the length of the block, with (`read`) the host's facts read under
    it in the same round trip. Released at the end (unless the block released it with its last
    commands), also after an exception, and only if it is still ours. A host without systemd
    has no lock unit: nothing is taken."""
    if not systemd:
        yield Lease(host, runner, ttl, None, "", taken=False)
        return
    refused, mine, facts = take_and_read(host, action, ttl, runner, read=read)
    lease = Lease(host, runner, ttl, refused, mine, facts)
    try:
        yield lease
    finally:
        lease.release()
