"""What a deployer needs to reach the lab: the ssh key, the hosts' keys, an ssh config, the
deployer-side Nix config, and the environment that `labctl env` prints."""

from __future__ import annotations

import os
import shlex
import shutil

from nixlab import config, roles
from nixlab.link import install_relay, link_env_lines, proxy_command
from nixlab.proc import run
from nixlab.registry import Registry, address, address6, host_dir, load_registry


def ensure_keys(reg: Registry) -> None:
    sdir = config.SSH_DIR
    sdir.mkdir(parents=True, exist_ok=True)
    os.chmod(sdir, 0o700)
    if not (sdir / "id_ed25519").exists():
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nixtasks-lab", "-f", str(sdir / "id_ed25519"))
    for host in reg["hosts"]:
        key = host_dir(host) / "ssh_host_ed25519_key"
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True)
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{host}", "-f", str(key))
    write_ssh_config(reg)


def write_ssh_config(reg: Registry) -> None:
    """The hosts' names and keys, and with a round-trip time (`up --rtt`) the relay for each."""
    sdir = config.SSH_DIR
    proxy = proxy_command(reg)
    if proxy:
        install_relay()
    known, lines = [], []
    for host in sorted(reg["hosts"]):
        pub = (host_dir(host) / "ssh_host_ed25519_key.pub").read_text().split()
        names = ",".join(filter(None, (host, address(reg, host), address6(reg, host))))
        known.append(f"{names} {pub[0]} {pub[1]}")
        lines.append(f"Host {host}\n  HostName {address(reg, host)}\n")
    (sdir / "known_hosts").write_text("\n".join(known) + "\n")
    lines.append(
        "Host *\n"
        "  User root\n"
        f"  IdentityFile {sdir / 'id_ed25519'}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {sdir / 'known_hosts'}\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n"
        "  PasswordAuthentication no\n"
        "  KbdInteractiveAuthentication no\n"
        "  ConnectTimeout 5\n"
        "  ServerAliveInterval 5\n"
        "  ServerAliveCountMax 3\n"
        + (f"  ProxyCommand {proxy}\n" if proxy else "")
    )
    config.SSH_CONFIG.write_text("\n".join(lines))


def write_deployer_nix_conf() -> None:
    """Deployer-side Nix for the lab (NIX_CONF_DIR): single-user as root, offline. The lab's
    binary cache starts empty at the same URL in every lab (roles.py): what Nix remembers of
    an earlier one's contents (narinfo-cache-*-ttl) must not stand in for asking it."""
    config.NIX_CONF_DIR.mkdir(parents=True, exist_ok=True)
    (config.NIX_CONF_DIR / "nix.conf").write_text(
        "build-users-group =\nsandbox = false\nexperimental-features = nix-command flakes\n"
        "flake-registry =\nsubstituters =\nnarinfo-cache-positive-ttl = 0\nnarinfo-cache-negative-ttl = 0\n"
    )


def seed_example_inputs() -> str | None:
    """Put the example fleet's `path:./site` input into the deployer's store.

    Nix 2.8 cannot fetch a locked relative path input again (it says "cannot fetch
    input ... because it uses a relative path"); it only finds it when the store
    already has it, under the name the path fetcher gives it.
    """
    site = config.REPO / "examples" / "fleet" / "site"
    if not site.is_dir() or shutil.which("nix") is None:
        return None
    env = dict(os.environ, NIX_CONF_DIR=str(config.NIX_CONF_DIR))
    proc = run("nix", "--extra-experimental-features", "nix-command", "store", "add-path", "--name", "source",
               str(site), env=env, capture_output=True)
    return proc.stdout.strip()


def env_lines() -> list[str]:
    reg = load_registry()
    # The hosts that have an IPv6 address (`up --ipv6`), as HOST=ADDRESS words.
    ipv6 = " ".join(f"{h}={address6(reg, h)}" for h in sorted(reg.get("ipv6", [])) if h in reg["hosts"])
    return [
        f"export NIX_CONF_DIR={config.NIX_CONF_DIR}",
        f"export NIX_SSHOPTS='-F {config.SSH_CONFIG}'",
        f"export NIXTASKS_LAB_SSH_CONFIG={config.SSH_CONFIG}",
        *([f"export NIXTASKS_LAB_IPV6={shlex.quote(ipv6)}"] if ipv6 else []),
        *link_env_lines(reg),
        *roles.env_lines(reg),
    ]


def deployer_env_lines() -> list[str]:
    """A deployer host's environment: its nixtasks finds the lab as this machine's does."""
    return [*env_lines(), f"export NIXTASKS_LAB_ID={config.LAB_ID}",
            f"export NIXTASKS_LAB_DIR={shlex.quote(str(config.STATE))}"]
