"""`labctl measure HOST`: what the lab's link does, measured and set against what --rtt and --rate
predict. It prints; it asserts nothing (timings are never asserted in tests)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from nixlab import config
from nixlab.link import number
from nixlab.proc import LabError, UsageError, run
from nixlab.registry import known_hosts, load_registry, validate_hosts


def lab_env() -> dict[str, str]:
    return {**os.environ, "NIX_CONF_DIR": str(config.NIX_CONF_DIR), "NIX_SSHOPTS": f"-F {config.SSH_CONFIG}"}


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return time.monotonic() - started


def relay_records(start: int) -> tuple[list[dict[str, object]], int]:
    """The relay's records written since byte `start` of its stats file, and where they end."""
    try:
        with open(config.RELAY_STATS, "rb") as stats:
            stats.seek(start)
            data = stats.read()
    except FileNotFoundError:
        return [], start
    return [json.loads(line) for line in data.splitlines() if line.strip()], start + len(data)


def stats_end() -> int:
    return config.RELAY_STATS.stat().st_size if config.RELAY_STATS.exists() else 0


def measure_ssh(host: str, runs: int, rtt: float, env: dict[str, str]) -> float:
    """A fresh `ssh HOST true`, direct and through the relay; returns the relayed median."""
    fresh = ["ssh", "-F", str(config.SSH_CONFIG), "-o", "BatchMode=yes", "-o", "ControlPath=none"]
    direct = statistics.median(timed([*fresh, "-o", "ProxyCommand=none", host, "true"], env) for _ in range(runs))
    if not rtt:
        print(f"ssh {host} true, fresh connection: {direct:.3f} s (no round-trip time added)")
        return direct
    start = stats_end()
    relayed = statistics.median(timed([*fresh, host, "true"], env) for _ in range(runs))
    records, _ = relay_records(start)
    trips = statistics.median(int(r["round_trips"]) for r in records) if records else 0  # type: ignore[call-overload]
    predicted = direct + (trips + 1) * rtt / 1000
    print(f"ssh {host} true, fresh connection: {relayed:.3f} s through the relay, {direct:.3f} s without; "
          f"predicted {predicted:.3f} s ({direct:.3f} s + {trips:g} round trips and the TCP handshake "
          f"at {number(rtt)} ms)")
    return relayed


def measure_copy(host: str, size_mib: int, rate: float, connect: float, env: dict[str, str]) -> None:
    """`nix copy` of a store path of `size_mib` MiB of random bytes (new each time), then removed."""
    with tempfile.TemporaryDirectory(prefix="labctl-measure-") as tmp:
        blob = Path(tmp) / "blob"
        blob.write_bytes(os.urandom(size_mib * 1024 * 1024))
        path = run("nix", "store", "add-path", "--name", "labctl-measure", str(blob), env=env,
                   capture_output=True).stdout.strip()
    start = stats_end()
    try:
        seconds = timed(["nix", "copy", "--to", f"ssh://{host}", path], env)
    finally:
        subprocess.run(["ssh", "-F", str(config.SSH_CONFIG), host, "nix-store", "--delete", path], env=env,
                       capture_output=True, timeout=60)
        subprocess.run(["nix-store", "--delete", path], env=env, capture_output=True, timeout=60)
    bits = size_mib * 1024 * 1024 * 8
    line = f"nix copy of {size_mib} MiB to {host}: {seconds:.3f} s, {bits / seconds / 1e6:.1f} Mbit/s end to end"
    if rate:
        wire = bits / (rate * 1e6)
        line += (f"; predicted at least {connect + wire:.3f} s ({wire:.3f} s for the bytes at {number(rate)} Mbit/s "
                 f"+ {connect:.3f} s for a fresh connection)")
    else:
        line += " (no rate cap)"
    records = relay_records(start)[0][:1]  # the copy's own connection (the clean-up's come after)
    if records:
        line += (f"; the relay saw {records[0]['round_trips']} turns on it (nix's protocol, TCP's slow start: "
                 "each a round trip)")
    print(line)


def cmd_measure(args: argparse.Namespace) -> int:
    reg = load_registry()
    host = known_hosts(reg, validate_hosts([args.host]))[0]
    if args.runs < 1 or args.size_mib < 1:
        raise UsageError(f"--runs {args.runs} --size-mib {args.size_mib}: give at least 1 for each")
    link = reg.get("link", {})
    env = lab_env()
    connect = measure_ssh(host, args.runs, link.get("rtt_ms", 0), env)
    measure_copy(host, args.size_mib, link.get("rate_mbit", 0), connect, env)
    return 0
