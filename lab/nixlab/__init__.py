"""labctl: a lab of simulated NixOS hosts on one Debian machine.

Each host is a systemd-nspawn container booting real systemd as PID 1, on an
overlay over a shared Debian base image (Debian 12 with Nix 2.8, or Debian 13 with
Nix 2.26: `up --suite trixie`, and db1 by default), in its own network namespace on the
lab bridge, with its own /nix store and nix-daemon, a key-only sshd, root and a
`deploy` user with passwordless sudo. Only the NixOS system closure itself is
simulated (see examples/fleet).

A host booted with `up --deployer` is a deployer instead (Debian 13, Python 3.13, Nix 2.26):
nixtasks' dependencies installed from wheels prepared on this machine, and the lab's ssh
material and deployer-side Nix config bound in, so that nixtasks runs there against the others.

A host named `cache` serves a signed Nix binary cache with nginx (PUT from the deployers only);
`up --cache HOST...` makes hosts substitute from it; a host named `builder` takes remote builds.

Subcommands: up, down, reset, status, exec, reboot, stop, start, measure, env, seed, image, wheels.
Run as root.
Everything the lab makes is named in nixlab.config, so `down` can remove exactly that:
network namespaces `lab-<host>`, the bridge `lab-br0`, veths `labv<N>`, cgroups
`nixtasks-lab/<host>`, and the state directory (with NIXTASKS_LAB_ID=N: `labN-<host>`,
`lab-brN`, `labNv<M>`, `nixtasks-labN`, /var/lib/nixtasks-labN and the subnet 10.250.N.0/24).
`up --ipv6 HOST...` gives hosts an IPv6 address too, fd00:250:N::<10+index> beside 10.250.N.<10+index>
(fd00:250:N::1 on the bridge, this machine's side), also to hosts already up.
`up --rtt MS --rate MBIT` gives the deployer's link to the lab a round-trip time (ssh through a
user-space relay) and an uplink rate (tbf on the bridge), kept until changed; `measure` times them.

The modules, by job: config (the lab's id and every name, path and address that follows from
it), proc (running commands, processes), registry (the lab's state file), image (the base
images), net (bridge, veths, addresses), sshcfg (keys, ssh config, the deployer's environment), link (--rtt and
--rate), relay (the latency relay, a ProxyCommand), measure (`labctl measure`),
deployer (Debian 13 deployer hosts), roles (the `cache` and `builder` hosts, and `up --cache`),
inside (reaching into a running host), hosts (boot, supervise, stop), commands (the
subcommands), cli (the command line). Stdlib only: lab/labctl runs it from a checkout, before
anything is installed.
"""
