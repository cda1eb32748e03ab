"""Health checks: an HTTP request from the deployer, or a unit or command on the host, each
tried up to `retries` times, `interval` apart, every try bounded by `timeout`."""

from __future__ import annotations

import threading
import time

from ..errors import CommandFailed, NixtasksError
from ..host import commands
from ..host.runner import Runner
from ..models import LOCAL, Check, Host


def ssh_address(host: Host, runner: Runner) -> str:
    """The address ssh connects to (its config may map the name), for {address} in URLs: an
    IPv6 literal in brackets (`[fd00::11]`, a zone id as `%25`), as a URL must have it."""
    if host.target.is_local:
        return "localhost"
    address = runner.ssh_settings(host.target).get("hostname") or host.target.address or host.name
    return f"[{address.replace('%', '%25')}]" if ":" in address else address


def url_of(check: Check, host: Host, address: str) -> str:
    """An http check's URL as it is requested: {host} and {address} filled in."""
    return check.spec.replace("{host}", host.name).replace("{address}", address)


def label(check: Check, host: Host, address: str) -> str:
    """How a check reads in a report: `check http <the URL requested>`, `check unit nginx.service`."""
    return f"check {check.kind} {url_of(check, host, address) if check.kind == 'http' else check.spec}"


def run_check(check: Check, host: Host, address: str, runner: Runner,
              stop: threading.Event | None = None) -> tuple[bool, str]:
    """Try up to `retries` times, `interval` apart; each try bounded by `timeout`. A set
    `stop` ends the tries (the result no longer matters)."""
    detail = ""
    for attempt in range(1, check.retries + 1):
        ok, detail = try_check(check, host, address, runner)
        if ok:
            return True, f"ok{f' (try {attempt})' if attempt > 1 else ''}"
        if attempt < check.retries:
            if stop is None:
                time.sleep(check.interval)
            elif stop.wait(check.interval):
                return False, f"{detail} (stopped after {attempt} tries)"
    return False, f"{detail} (after {check.retries} tries)"


def try_check(check: Check, host: Host, address: str, runner: Runner) -> tuple[bool, str]:
    if check.kind == "http":
        url = url_of(check, host, address)
        if not url.startswith(("http://", "https://")):
            raise NixtasksError(f"{host.name}: check URL {url!r} does not start with http(s)://")
        result = runner.run(commands.http_get(url, check.timeout), LOCAL, check=False)
        body, _, code = result.stdout.rpartition("\n")
        # The URL is in the check's label: not repeated here.
        if not result.ok:
            return False, result.stderr.strip() or f"curl exit {result.exit_code}"
        if code != str(check.status):
            return False, f"answered {code}, expected {check.status}"
        if check.contains and check.contains not in body:
            return False, f"answered {code} without {check.contains!r}"
        return True, "ok"
    cmd = commands.unit_active(check.spec) if check.kind == "unit" else commands.host_command(check.spec)
    try:
        result = runner.run(cmd, host.target, check=False, timeout=check.timeout)
    except CommandFailed as exc:
        return False, str(exc)
    if result.ok:
        return True, "ok"
    out = (result.stdout.strip() or result.stderr.strip()).splitlines()
    return False, f"exit {result.exit_code}{': ' + out[-1] if out else ''}"
