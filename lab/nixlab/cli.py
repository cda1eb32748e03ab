"""labctl's command line: the subcommands, their flags and help, and the exit codes (1 for a
LabError, printed as one `error:` line; 130 for Ctrl-C)."""

from __future__ import annotations

import argparse
import sys

import nixlab
from nixlab import commands, config, roles
from nixlab.deployer import DEPLOYER_PYTHON
from nixlab.hosts import supervise
from nixlab.measure import cmd_measure
from nixlab.proc import LabError, UsageError


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labctl", description=(nixlab.__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="boot hosts (default: web1 web2 db1)")
    up.add_argument("hosts", nargs="*")
    up.add_argument("--bind-ro", action="append", default=[], metavar="PATH",
                    help="bind PATH read-only into every host, at the same place")
    up.add_argument("--store-size", metavar="SIZE",
                    help="give the new hosts a /nix/store of this size (e.g. 2M), to fill it up in tests")
    up.add_argument("--sudo-password", metavar="PASSWORD",
                    help="the new hosts' deploy user needs this password for sudo (instead of NOPASSWD)")
    up.add_argument("--deployer", action="store_true",
                    help="the new hosts are deployers (Debian 13, Python 3.13, Nix 2.26): nixtasks' dependencies "
                    "installed from wheels downloaded once here, the lab's ssh material and Nix config bound in")
    up.add_argument("--suite", choices=config.SUITES,
                    help="the Debian release of the new hosts (default: trixie for "
                    f"{', '.join(config.DEFAULT_HOST_SUITES)}, else {config.DEFAULT_SUITE})")
    up.add_argument("--ipv6", action="store_true",
                    help=f"give the HOSTs (booted now or already up) an IPv6 address too, {config.IPV6_PREFIX}"
                    f"<10+index> (as their IPv4 address ends), with {config.IPV6_GATEWAY} on the bridge; ssh knows "
                    "their host key under it, `env` exports NIXTASKS_LAB_IPV6, `status` shows it")
    up.add_argument("--rtt", metavar="MS",
                    help="add this round-trip time between the deployer and every host (ssh through the lab's "
                    "relay); 0 takes it away; kept by the lab until changed")
    up.add_argument("--rate", metavar="MBIT",
                    help="cap the deployer's uplink to the lab at MBIT Mbit/s (tbf on the bridge); 0 takes it away")
    roles.add_arguments(up)
    up.set_defaults(func=commands.cmd_up)
    # The subcommands that take host names: (name, whether at least one is needed, what it does, runner).
    for name, needed, what, func in (
            ("down", False, "power everything off and remove all the lab made (or only HOSTs)", commands.cmd_down),
            ("reset", False, "give hosts a fresh writable layer and boot them again", commands.cmd_reset),
            ("status", False, "addresses (IPv4, IPv6), systemd state, sshd and current system of each host",
             commands.cmd_status),
            ("reboot", True, "reboot hosts for real; they boot their boot profile", commands.cmd_reboot),
            ("stop", True, "power hosts off, keeping their disk (a pulled plug)", commands.cmd_stop),
            ("start", True, "boot stopped hosts again: they boot their boot profile", commands.cmd_start)):
        on_hosts = sub.add_parser(name, help=what)
        on_hosts.add_argument("hosts", nargs="+" if needed else "*")
        on_hosts.set_defaults(func=func)
    ex = sub.add_parser("exec", help="run a command inside a host, without ssh")
    ex.add_argument("host")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    ex.set_defaults(func=commands.cmd_exec)
    measure = sub.add_parser("measure", help="time a fresh `ssh HOST true` and a `nix copy` of a known size, "
                             "against what the lab's --rtt and --rate predict")
    measure.add_argument("host")
    measure.add_argument("--runs", type=int, default=3)
    measure.add_argument("--size-mib", type=int, default=4)
    measure.set_defaults(func=cmd_measure)
    sub.add_parser("env", help="print the export lines a deployer needs").set_defaults(func=commands.cmd_env)
    sub.add_parser("seed", help="add the example fleet's path: input to this machine's store (Nix 2.8)"
                   ).set_defaults(func=commands.cmd_seed)
    image = sub.add_parser("image", help="build a base image if missing and print its path")
    image.add_argument("--suite", choices=config.SUITES, default=config.DEFAULT_SUITE,
                       help="the Debian release (default: %(default)s)")
    image.set_defaults(func=commands.cmd_image)
    sub.add_parser("wheels", help=f"download the deployer hosts' wheels for Python {DEPLOYER_PYTHON} if missing "
                   "and print their directory").set_defaults(func=commands.cmd_wheels)
    sv = sub.add_parser("_supervise")
    sv.add_argument("host")
    sv.set_defaults(func=lambda a: supervise(a.host))
    return parser


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "cmd", None) and args.cmd[0] == "--":
        args.cmd = args.cmd[1:]
    try:
        code: int = args.func(args)
        return code
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except KeyboardInterrupt:
        return 130

