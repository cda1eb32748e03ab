"""Is a host healthy after its activation, and does it stay so (a canary's soak)? The
inventory's checks (as `verify` runs them), and no unit failing that did not fail before."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from ..actions.checks import label, run_check, ssh_address
from ..host.facts import Facts, read_facts
from ..host.runner import Runner
from ..models import Host


def new_failed_units(before: Facts, after: Facts) -> list[str]:
    return sorted(set(after.failed_units) - set(before.failed_units))


def problems(host: Host, before: Facts, runner: Runner) -> list[str]:
    """Every problem found, first the failing checks; empty when the host is healthy."""
    return examine(host, before, runner)[0]


def examine(host: Host, before: Facts, runner: Runner,
            stop: threading.Event | None = None) -> tuple[list[str], Facts]:
    """The problems, and the host's facts as read after the checks. A set `stop` ends them
    early: their result is no longer wanted."""
    found: list[str] = []
    address = ssh_address(host, runner) if any(c.kind == "http" for c in host.checks) else ""
    for check in host.checks:
        if stop is not None and stop.is_set():
            break
        ok, detail = run_check(check, host, address, runner, stop)
        if not ok:
            found.append(f"{label(check, host, address)}: {detail}")
    if stop is not None and stop.is_set():
        return [*found, "the checks were stopped"], Facts(reachable=False, error="not read: the checks stopped")
    after = read_facts(host, runner)  # after the checks: a unit may fail while they retry
    if not after.reachable:
        found.append(f"the host stopped answering during its checks: {after.error}")
    else:
        failed = new_failed_units(before, after)
        if failed:
            found.append(f"units failed that did not fail before: {', '.join(failed)}")
    return found, after


def soak(hosts: Sequence[tuple[Host, Facts]], seconds: float, runner: Runner, echo: Callable[[str], None],
         interval: float = 5.0, stop: threading.Event | None = None) -> dict[str, str]:
    """Keep checking hosts for `seconds` (or until `stop` is set): {host: its first problem};
    empty when they stayed healthy."""
    deadline = time.monotonic() + seconds
    while not (stop and stop.is_set()):
        found: dict[str, str] = {}
        for host, before in hosts:
            problem = problems(host, before, runner)
            if problem:
                found[host.name] = problem[0]
        left = deadline - time.monotonic()
        if found or left <= 0:
            return found
        echo(f"soak: {', '.join(h.name for h, _ in hosts)} healthy; {left:.0f} s to go")
        if stop:
            stop.wait(min(interval, left))
        else:
            time.sleep(min(interval, left))
    return {}
