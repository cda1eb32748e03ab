"""The lab's network: the bridge (this machine's side, the gateway), and for each host a network
namespace joined to the bridge by a veth, with its IPv4 address and, with `up --ipv6`, its IPv6."""

from __future__ import annotations

import re

from nixlab import config
from nixlab.proc import run
from nixlab.registry import Registry, address, address6


def link_exists(name: str) -> bool:
    return run("ip", "link", "show", name, check=False, quiet=True).returncode == 0


def netns_list() -> list[str]:
    out = run("ip", "netns", "list", capture_output=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(config.NETNS_PREFIX)]


def ensure_bridge() -> None:
    if link_exists(config.BRIDGE):
        return
    run("ip", "link", "add", config.BRIDGE, "type", "bridge")
    run("ip", "addr", "add", f"{config.GATEWAY}/24", "dev", config.BRIDGE)
    run("ip", "link", "set", config.BRIDGE, "up")


def ensure_ipv6(reg: Registry, host: str) -> None:
    """The host's IPv6 address in its namespace, and the bridge's (without duplicate address
    detection: usable at once). Kept by `reset`, gone with `down`."""
    addr = address6(reg, host)
    if addr is None:
        return
    for where, mine in ((["-n", config.netns(host)], f"{addr}/64"), ([], f"{config.IPV6_GATEWAY}/64")):
        dev = "lab0" if where else config.BRIDGE
        # `replace`, not a look and `add`: ip prints the address in its shortest form
        # (fd00:250:0::11 is fd00:250::11), so a look for the form given misses it.
        run("ip", *where, "addr", "replace", mine, "dev", dev, "nodad")


def ensure_netns(reg: Registry, host: str) -> None:
    ns = config.netns(host)
    if ns in netns_list():
        ensure_ipv6(reg, host)
        return
    veth = config.veth(reg["hosts"][host])
    if link_exists(veth):
        run("ip", "link", "del", veth)
    run("ip", "netns", "add", ns)
    run("ip", "link", "add", veth, "type", "veth", "peer", "name", "lab0", "netns", ns)
    run("ip", "link", "set", veth, "master", config.BRIDGE, "up")
    run("ip", "-n", ns, "addr", "add", f"{address(reg, host)}/24", "dev", "lab0")
    run("ip", "-n", ns, "link", "set", "lo", "up")
    run("ip", "-n", ns, "link", "set", "lab0", "up")
    ensure_ipv6(reg, host)


def bring_link_up(reg: Registry, host: str) -> None:
    """The host's side of its link up again (a bad network change may have taken it down), with
    its IPv6 address, which a link that went down lost."""
    run("ip", "-n", config.netns(host), "link", "set", "lab0", "up")
    ensure_ipv6(reg, host)


def remove_host_network(reg: Registry, host: str) -> None:
    run("ip", "netns", "del", config.netns(host), check=False, quiet=True)
    run("ip", "link", "del", config.veth(reg["hosts"][host]), check=False, quiet=True)


def remove_network() -> None:
    """Every namespace, veth and the bridge of this lab, whether or not its state file survived."""
    for ns in netns_list():
        run("ip", "netns", "del", ns, check=False)
    out = run("ip", "-o", "link", "show", capture_output=True).stdout
    for name in re.findall(rf"^\d+: ({config.VETH_PREFIX}\d+)[@:]", out, flags=re.M):
        run("ip", "link", "del", name, check=False, quiet=True)  # may have gone with its namespace
    if link_exists(config.BRIDGE):
        run("ip", "link", "del", config.BRIDGE)
