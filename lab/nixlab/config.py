"""The lab's identity: its id, and every name, path and address that follows from it.

The one place they are worked out, so that everything agrees on which lab it talks to: labctl
and the lab tests (tests/lab/conftest.py) import them from here; the shell scripts (the demo,
examples/make-repo, benchmarks/status-fleet) and the benchmarks ask `labctl env`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from pathlib import Path

LAB_DIR = Path(__file__).resolve().parents[1]  # lab/: labctl, image/ and this package
LABCTL = LAB_DIR / "labctl"
REPO = LAB_DIR.parent
# NIXTASKS_LAB_ID=N (1-9) gives a second lab beside the default one (0), with names and a
# subnet of its own, so that two developers or test runs on one machine do not collide.
LAB_ID = os.environ.get("NIXTASKS_LAB_ID", "0")
if not re.fullmatch(r"[0-9]", LAB_ID):
    sys.exit(f"labctl: NIXTASKS_LAB_ID must be one digit, 0 to 9, not {LAB_ID!r}")
SUFFIX = "" if LAB_ID == "0" else LAB_ID
NAME = "nixtasks-lab"
STATES = Path("/var/lib")  # where every lab's state directory is, unless NIXTASKS_LAB_DIR says
STATE = Path(os.environ.get("NIXTASKS_LAB_DIR", STATES / f"{NAME}{SUFFIX}"))
CACHE = Path(os.environ.get("NIXTASKS_LAB_CACHE", f"/var/cache/{NAME}"))
NETNS_PREFIX = f"lab{SUFFIX}-"
BRIDGE = f"lab-br{LAB_ID}"
VETH_PREFIX = f"lab{SUFFIX}v"
SUBNET = f"10.250.{LAB_ID}"
GATEWAY = f"{SUBNET}.1"
# A ULA /64 of the lab's own; hosts get it with `up --ipv6`. In its shortest form (lab 0's is
# fd00:250::), as ip, ssh and servers print an address: one spelling everywhere.
IPV6_PREFIX = str(ipaddress.IPv6Address(f"fd00:250:{LAB_ID}::"))
IPV6_GATEWAY = f"{IPV6_PREFIX}1"
CGROUP = f"{NAME}{SUFFIX}"
CGROUP_ROOTS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
SSH_DIR = STATE / "ssh"
SSH_CONFIG = SSH_DIR / "config"
NIX_CONF_DIR = STATE / "nix"  # the deployer-side Nix config (NIX_CONF_DIR)
# `up --rtt`: ssh goes through the latency relay (a copy in the ssh directory, which deployer
# hosts see too), whose connection counts and PID files are kept here.
RELAY_SOURCE = LAB_DIR / "nixlab" / "relay.py"
RELAY = SSH_DIR / "relay.py"
RELAY_DIR = STATE / "relay"
RELAY_STATS = RELAY_DIR / "stats.jsonl"
MAX_RTT_MS = 10_000
MAX_RATE_MBIT = 100_000

DEFAULT_HOSTS = ("web1", "web2", "db1")
# Two base images: Debian 12 (Nix 2.8, as this deployer) and Debian 13 (Nix 2.26, as the hosts
# users deploy to). The default lab is a mixed fleet: the hosts named here run Debian 13.
SUITES = ("bookworm", "trixie")
DEFAULT_SUITE = "bookworm"
DEFAULT_HOST_SUITES = {"db1": "trixie"}
MAX_HOSTS = 200
HOST_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
BOOT_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0


def address(index: int) -> str:
    """The IPv4 address of the host with this index in the registry."""
    return f"{SUBNET}.{10 + index}"


def address6(index: int) -> str:
    """The IPv6 address of the host with this index (`up --ipv6`): the same last digits."""
    return f"{IPV6_PREFIX}{10 + index}"


def netns(host: str) -> str:
    return NETNS_PREFIX + host


def veth(index: int) -> str:
    return f"{VETH_PREFIX}{index}"
