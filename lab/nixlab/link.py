"""The deployer's link to the lab (`up --rtt MS --rate MBIT`), kept in the state file.

The round-trip time is added in user space (this kernel has no `netem`): the ssh config sends
every connection through the relay (relay.py, a ProxyCommand) that holds each chunk for MS/2 in
each direction. The rate caps the deployer's uplink with `tbf` on the bridge, this machine's
side, which every packet from the deployer to a host leaves by (the relay's too). 0 takes either
away; `up` without them keeps what the lab has, and a new lab has neither.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from nixlab import config
from nixlab.net import link_exists
from nixlab.proc import UsageError, pid_is, read_pid, run
from nixlab.registry import Link, Registry


def parse_amount(flag: str, value: str | None, limit: float, unit: str) -> float | None:
    """The number given to --rtt or --rate (None if not given); 0 means none."""
    if value is None:
        return None
    try:
        amount = float(value)
    except ValueError:
        amount = -1.0
    if not 0 <= amount <= limit:  # also refuses nan
        raise UsageError(f"{flag} {value}: give {unit} from 0 to {limit:g} (0 takes it away)")
    return amount


def parse_link(rtt: str | None, rate: str | None) -> Link:
    """The link settings given to `up`, checked before anything changes."""
    given: Link = {}
    rtt_ms = parse_amount("--rtt", rtt, config.MAX_RTT_MS, "milliseconds")
    rate_mbit = parse_amount("--rate", rate, config.MAX_RATE_MBIT, "Mbit/s")
    if rtt_ms is not None:
        given["rtt_ms"] = rtt_ms
    if rate_mbit is not None:
        given["rate_mbit"] = rate_mbit
    return given


def update_link(reg: Registry, given: Link) -> bool:
    """Put the given settings in the registry (0 removes one); True if anything changed."""
    before = dict(reg.get("link", {}))
    link: Link = {**reg.get("link", {}), **given}
    link = {k: v for k, v in link.items() if v}  # type: ignore[assignment]
    if link:
        reg["link"] = link
    else:
        reg.pop("link", None)
    return before != dict(link)


def number(value: float) -> str:
    return f"{value:g}"


def proxy_command(reg: Registry) -> str | None:
    """The ssh config's ProxyCommand when the lab has a round-trip time."""
    rtt = reg.get("link", {}).get("rtt_ms")
    if not rtt:
        return None
    # Debian's python3, which deployer hosts (`up --deployer`) have at the same path too.
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    words = [python, "-I", "-S", str(config.RELAY), "--rtt", number(rtt), "--stats", str(config.RELAY_DIR),
             "--allow", f"{config.SUBNET}.0/24", "--allow", f"{config.IPV6_PREFIX}/64"]
    return " ".join(shlex.quote(w) for w in words) + " %n %h %p"


def apply_rate(reg: Registry) -> None:
    """tbf on the bridge at the lab's rate, or no qdisc of ours there."""
    if not link_exists(config.BRIDGE):
        return
    rate = reg.get("link", {}).get("rate_mbit")
    if not rate:
        run("tc", "qdisc", "del", "dev", config.BRIDGE, "root", check=False, quiet=True)
        return
    # A burst of at least 64 KiB: locally sent TCP leaves as segments of up to 64 KiB (GSO).
    burst = max(64 * 1024, int(rate * 1e6 / 8 * 0.004))
    run("tc", "qdisc", "replace", "dev", config.BRIDGE, "root", "tbf", "rate", f"{number(rate)}mbit",
        "burst", str(burst), "latency", "50ms")


def describe(reg: Registry) -> str | None:
    """One line for `status`: what the lab adds to the deployer's link."""
    link = reg.get("link", {})
    parts = []
    if link.get("rtt_ms"):
        parts.append(f"round trip +{number(link['rtt_ms'])} ms on every ssh connection (through {config.RELAY})")
    if link.get("rate_mbit"):
        parts.append(f"deployer uplink capped at {number(link['rate_mbit'])} Mbit/s (tbf on {config.BRIDGE})")
    return "link: " + "; ".join(parts) if parts else None


def link_env_lines(reg: Registry) -> list[str]:
    link = reg.get("link", {})
    lines = []
    if link.get("rtt_ms"):
        lines += [f"export NIXTASKS_LAB_RTT_MS={number(link['rtt_ms'])}",
                  f"export NIXTASKS_LAB_RELAY_STATS={shlex.quote(str(config.RELAY_STATS))}"]
    if link.get("rate_mbit"):
        lines.append(f"export NIXTASKS_LAB_RATE_MBIT={number(link['rate_mbit'])}")
    return lines


def relay_pids() -> list[int]:
    """The relays running now, from their PID files, each checked by its command line."""
    pids_dir = config.RELAY_DIR / "pids"
    found = [read_pid(p) for p in pids_dir.iterdir()] if pids_dir.is_dir() else []
    return [pid for pid in found if pid is not None and pid_is(pid, str(config.RELAY))]


def kill_relays() -> None:
    """Every relay still running (its ssh client gone or stopped), ended by PID: asked first (it
    writes its counts), then killed."""
    pids = relay_pids()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 2
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if pid_is(pid, str(config.RELAY))]
            time.sleep(0.05)


def install_relay() -> None:
    """The relay beside the ssh config, where deployer hosts see it too."""
    config.RELAY.parent.mkdir(parents=True, exist_ok=True)
    config.RELAY.write_bytes(Path(config.RELAY_SOURCE).read_bytes())
