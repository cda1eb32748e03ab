"""The lab's state file (hosts.json in the state directory): its hosts with their indexes (the
last part of their addresses) and what each was booted with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Required, TypedDict

from nixlab import config
from nixlab.proc import LabError


class Link(TypedDict, total=False):
    rtt_ms: float  # round-trip time added to every ssh connection (the relay)
    rate_mbit: float  # the deployer's uplink to the lab (tbf on the bridge)


class Registry(TypedDict, total=False):
    hosts: Required[dict[str, int]]  # host -> index
    bind_ro: list[str]  # bound read-only into every host
    images: dict[str, str]  # host -> its base image directory
    store_size: dict[str, str]  # host -> the size of its /nix/store tmpfs (`up --store-size`)
    sudo_password: dict[str, str]  # host -> its deploy user's sudo password (`up --sudo-password`)
    deployers: dict[str, str]  # deployer host -> its wheels directory (`up --deployer`)
    ipv6: list[str]  # the hosts with an IPv6 address (`up --ipv6`)
    stopped: list[str]  # the hosts powered off on purpose (`stop`), their disk kept
    link: Link  # the deployer's link to the lab (`up --rtt --rate`); absent: none added
    cache_clients: dict[str, str]  # host -> "trusted" or "untrusted": its substituter is the cache (`up --cache`)


def registry_path() -> Path:
    return config.STATE / "hosts.json"


def load_registry() -> Registry:
    try:
        reg: Registry = json.loads(registry_path().read_text())
    except FileNotFoundError:
        return {"hosts": {}, "bind_ro": []}
    return reg


def save_registry(reg: Registry) -> None:
    config.STATE.mkdir(parents=True, exist_ok=True)
    tmp = registry_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(reg, indent=2, sort_keys=True))
    tmp.rename(registry_path())


def host_dir(host: str) -> Path:
    return config.STATE / "hosts" / host


def address(reg: Registry, host: str) -> str:
    return config.address(reg["hosts"][host])


def address6(reg: Registry, host: str) -> str | None:
    """The host's IPv6 address (the same digits as its IPv4 address's last part), if it has one."""
    return config.address6(reg["hosts"][host]) if host in reg.get("ipv6", []) else None


def image_suite(reg: Registry, host: str) -> str:
    """The Debian suite of a host's base image (from the image's name, base-SUITE-HASH)."""
    name = Path(reg.get("images", {}).get(host, "")).name
    return next((suite for suite in config.SUITES if name.startswith(f"base-{suite}-")), "?")


def validate_hosts(hosts: list[str]) -> list[str]:
    for host in hosts:
        if not config.HOST_NAME.match(host):
            raise LabError(f"bad host name {host!r}: use lower-case letters, digits and '-', starting with a letter")
    return list(dict.fromkeys(hosts))


def known_hosts(reg: Registry, hosts: list[str]) -> list[str]:
    unknown = [h for h in hosts if h not in reg["hosts"]]
    if unknown:
        raise LabError(f"not in the lab: {' '.join(unknown)} (labctl up {' '.join(unknown)})")
    return hosts or sorted(reg["hosts"], key=reg["hosts"].__getitem__)
