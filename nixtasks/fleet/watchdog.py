"""The connectivity watchdog: armed on the host before activation, it activates the system
that ran before again unless the deployer confirms over a fresh ssh connection in time. A
host whose new network or sshd is broken cannot confirm, and reverts by itself. Nothing it
guards touched the profile or the boot entry: a host restarted before it fired (the watchdog
lives in /run) boots what it booted before."""

from __future__ import annotations

import time

from ..host import commands
from ..host.facts import Facts, read_facts
from ..host.runner import Runner
from ..models import Action, Command, Host, Policy

# After the deadline, how long the host gets to revert and answer again.
REVERT_GRACE = 60.0
POLL_INTERVAL = 2.0


def wanted(host: Host, action: Action, before: Facts, policy: Policy) -> bool:
    """Only where the running system changes on a remote host with systemd, and only if
    there is a system to go back to."""
    return (policy.watchdog and action.changes_running_system and not host.is_local and before.systemd
            and bool(before.running))


def arm_command(host: Host, action: Action, before: Facts, policy: Policy, system: str, record: str = "") -> Command:
    """Arms the watchdog to put back what `before` saw unless the activation of `system` is
    confirmed in time; `record` goes to the host's journal as it is armed."""
    return commands.arm_watchdog(policy.confirm_timeout, before.generation, before.boot_path, before.running, action,
                                 host=host.name, system=system, record=record)


class Confirmation:
    CONFIRMED = "confirmed"
    UNREACHABLE = "unreachable"  # no new connection: the watchdog will revert
    FIRED = "fired"  # the watchdog already took its turn


def confirm(host: Host, runner: Runner, limit: float) -> str:
    """Confirm over a new connection; while an activation still runs on the host (its ssh
    session died, the unit did not), wait for it to end first, for at most `limit` seconds
    (the policy's activation_timeout: the watchdog itself waits for it as long as it takes)."""
    deadline = time.monotonic() + limit
    while True:
        result = runner.run(commands.confirm_watchdog(), host.target, check=False, fresh=True)
        if result.ok or runner.dry_run:
            return Confirmation.CONFIRMED
        if result.exit_code == commands.CONFIRM_BUSY and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)
            continue
        return Confirmation.FIRED if result.exit_code not in (255, commands.CONFIRM_BUSY) else Confirmation.UNREACHABLE


def await_revert(host: Host, before: Facts, policy: Policy, runner: Runner) -> tuple[str, Facts]:
    """Wait for the host to answer again after the watchdog's deadline. Returns "" when it
    reverted by itself to what it ran and booted before, else what is wrong; and its facts.
    A host that answers with neither the watchdog's record nor its units (both in /run)
    and runs what it ran before was restarted meanwhile (`restarted`)."""
    deadline = time.monotonic() + policy.confirm_timeout + REVERT_GRACE
    facts = Facts(reachable=False, error="not asked yet")
    while time.monotonic() < deadline:
        facts = read_facts(host, runner, fresh=True)
        if facts.reachable and facts.reverted:
            return reverted_wrong(before, facts), facts
        if facts.reachable and restarted(before, facts):
            return "; ".join(booted_wrong(before, facts)), facts
        time.sleep(POLL_INTERVAL)
    if facts.reachable:
        return f"the watchdog did not revert it (it runs {facts.running or 'nothing'})", facts
    return (f"the host still does not answer {policy.confirm_timeout + REVERT_GRACE:g} s after its activation: "
            f"{facts.error}"), facts


def restarted(before: Facts, now: Facts) -> bool:
    """The host lost /run since the activation (no watchdog pending, none reverted), and runs
    the system it ran before: it was restarted (power, a reboot) and booted its boot entry."""
    return not now.reverted and not now.watchdog_pending and now.running == before.running


def reverted_wrong(before: Facts, after: Facts) -> str:
    """What the watchdog's revert did not put back ("" for nothing): its exit status, the
    running system, the boot generation."""
    status = after.reverted.split()[-1] if after.reverted.split() else "?"
    return "; ".join(([] if status == "0" else [f"its revert failed (exit {status})"]) + booted_wrong(before, after))


def booted_wrong(before: Facts, after: Facts) -> list[str]:
    """Where the host differs from what it ran and booted before: the running system, the
    boot generation."""
    wrong = []
    if after.running != before.running:
        wrong.append(f"it runs {after.running or 'nothing'}, not {before.running}")
    if before.generation is not None and after.generation != before.generation:
        wrong.append(f"it boots generation {after.generation}, not {before.generation}")
    return wrong
