"""The connectivity watchdog: armed on the host before activation, it puts the previous
generation back unless the deployer confirms over a fresh ssh connection in time. A host
whose new network or sshd is broken cannot confirm, and reverts by itself."""

from __future__ import annotations

import time

from ..host import commands
from ..host.facts import Facts, read_facts
from ..host.runner import Runner
from ..models import Action, Host, Policy

# After the deadline, how long the host gets to revert and answer again.
REVERT_GRACE = 60.0
POLL_INTERVAL = 2.0


def wanted(host: Host, action: Action, before: Facts, policy: Policy) -> bool:
    """Only where the running system changes on a remote host with systemd, and only if
    there is a system to go back to."""
    return (policy.watchdog and action.changes_running_system and not host.is_local and before.systemd
            and bool(before.running))


def arm(host: Host, action: Action, before: Facts, policy: Policy, runner: Runner) -> None:
    runner.run(commands.arm_watchdog(policy.confirm_timeout, before.generation, before.boot_path,
                                     before.running, action), host.target, label=host.name)


class Confirmation:
    CONFIRMED = "confirmed"
    UNREACHABLE = "unreachable"  # no new connection: the watchdog will revert
    FIRED = "fired"  # the watchdog already took its turn


def confirm(host: Host, runner: Runner) -> str:
    result = runner.run(commands.confirm_watchdog(), host.target, check=False, fresh=True)
    if result.ok or runner.dry_run:
        return Confirmation.CONFIRMED
    return Confirmation.UNREACHABLE if result.exit_code == 255 else Confirmation.FIRED


def await_revert(host: Host, before: Facts, policy: Policy, runner: Runner) -> tuple[bool, Facts]:
    """Wait for the host to answer again after the watchdog's deadline. (True, facts) when it
    reverted by itself to what it ran before; (False, facts) otherwise."""
    deadline = time.monotonic() + policy.confirm_timeout + REVERT_GRACE
    facts = Facts(reachable=False, error="not asked yet")
    while time.monotonic() < deadline:
        facts = read_facts(host, runner, fresh=True)
        if facts.reachable and facts.reverted:
            return facts.running == before.running, facts
        time.sleep(POLL_INTERVAL)
    return False, facts
