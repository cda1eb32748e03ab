"""The subcommands: each takes the parsed command line and returns labctl's exit code."""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import time
from pathlib import Path

from nixlab import config, roles
from nixlab.deployer import DEPLOYER_SUITE, ensure_wheels
from nixlab.hosts import (
    boot_all,
    kill_cgroup,
    lab_is_up,
    raise_inotify_limit,
    seed_upper,
    start_host,
    stop_host,
    wait_ready,
)
from nixlab.image import ensure_image
from nixlab.inside import exec_in, sshd_answers, supervisor_alive, system_state
from nixlab.link import apply_rate, describe, kill_relays, parse_link, update_link
from nixlab.net import (
    bring_link_up,
    ensure_bridge,
    ensure_ipv6,
    ensure_netns,
    netns_list,
    remove_host_network,
    remove_network,
)
from nixlab.proc import LabError, log, read_pid
from nixlab.registry import (
    address,
    address6,
    host_dir,
    image_suite,
    known_hosts,
    load_registry,
    save_registry,
    validate_hosts,
)
from nixlab.sshcfg import ensure_keys, env_lines, seed_example_inputs, write_deployer_nix_conf, write_ssh_config


def cmd_up(args: argparse.Namespace) -> int:
    link = parse_link(args.rtt, args.rate)
    if os.geteuid() != 0:
        raise LabError("the lab needs root (systemd-nspawn, network namespaces, mounts)")
    # `up --rtt/--rate` alone changes a running lab's link without booting the default hosts.
    keep = bool(link) and bool(load_registry()["hosts"])
    hosts = validate_hosts(args.hosts or ([] if keep else list(config.DEFAULT_HOSTS)))
    if args.deployer and args.suite not in (None, DEPLOYER_SUITE):
        raise LabError(f"--deployer: a deployer host runs Debian 13 ({DEPLOYER_SUITE}); the Debian 12 deployer "
                       "is this machine")
    reg = load_registry()
    stale = not lab_is_up(reg) if reg["hosts"] else bool(netns_list() or config.STATE.exists())
    if stale:
        log("cleaning up what an earlier lab left behind")
        teardown()
        reg = load_registry()
    bind_ro = sorted(set(reg.get("bind_ro", [])) | {str(Path(p).resolve()) for p in args.bind_ro})
    raise_inotify_limit(len(set(reg["hosts"]) | set(hosts)))
    running = [h for h in hosts if h in reg["hosts"] and supervisor_alive(h)]
    if running and bind_ro != reg.get("bind_ro", []):
        raise LabError("--bind-ro changes need a fresh lab: run `labctl down` first")
    reg["bind_ro"] = bind_ro
    new = [h for h in hosts if h not in running]
    if args.store_size:
        if not re.fullmatch(r"[1-9][0-9]*[KMG]", args.store_size):
            raise LabError(f"--store-size {args.store_size!r}: expected a size like 2M")
        reg.setdefault("store_size", {}).update({h: args.store_size for h in new})
    if args.sudo_password:
        if not re.fullmatch(r"[!-~]{1,64}", args.sudo_password) or ":" in args.sudo_password:
            raise LabError("--sudo-password: 1 to 64 printable characters, no spaces or ':'")
        reg.setdefault("sudo_password", {}).update({h: args.sudo_password for h in new})
    if args.deployer and new:
        wheels = str(ensure_wheels())
        reg.setdefault("deployers", {}).update({h: wheels for h in new})
    if args.ipv6:
        reg["ipv6"] = sorted(set(reg.get("ipv6", [])) | set(hosts))
    reconfigure = roles.take_flags(args, reg, hosts, new)
    reg["stopped"] = [h for h in reg.get("stopped", []) if h not in new]  # `up` gives them a fresh layer
    if update_link(reg, link) and not new:  # for the hosts up now; new ones get it below
        save_registry(reg)
        write_ssh_config(reg)
        apply_rate(reg)
        log(describe(reg) or "link: nothing added")
    if running:
        log(f"already up: {' '.join(running)}")
        if args.ipv6:
            save_registry(reg)
            write_ssh_config(reg)
            for host in running:
                ensure_ipv6(reg, host)
            log(f"IPv6: {' '.join(f'{h} {address6(reg, h)}' for h in running)}")
    if not new:
        save_registry(reg)
        roles.configure_running(reg, reconfigure)
        return 0
    images = reg.setdefault("images", {})
    for host in new:
        if host not in images or not Path(images[host]).is_dir():
            suite = args.suite or (DEPLOYER_SUITE if host in reg.get("deployers", {}) else None)
            images[host] = str(ensure_image(suite or config.DEFAULT_HOST_SUITES.get(host, config.DEFAULT_SUITE)))
    used = set(reg["hosts"].values())
    for host in new:
        if host not in reg["hosts"]:
            index = next(i for i in range(1, config.MAX_HOSTS + 1) if i not in used)
            reg["hosts"][host] = index
            used.add(index)
    if len(reg["hosts"]) > config.MAX_HOSTS:
        raise LabError(f"at most {config.MAX_HOSTS} hosts")
    save_registry(reg)
    ensure_keys(reg)
    if roles.CACHE_HOST in reg["hosts"]:
        roles.ensure_keys()
    write_deployer_nix_conf()
    seed_example_inputs()
    ensure_bridge()
    apply_rate(reg)
    started = time.monotonic()
    for host in new:
        ensure_netns(reg, host)
        seed_upper(reg, host)
        start_host(reg, host)
    boot_all(reg, new)
    roles.allow_new_deployers(reg, new)
    roles.configure_running(reg, reconfigure)
    log(f"{len(new)} host(s) up in {time.monotonic() - started:.1f} s: {' '.join(new)}")
    if reg.get("link"):
        log(describe(reg) or "")
    print("\n".join(env_lines()))
    return 0


def teardown() -> None:
    """Remove everything the lab made, whether or not its state file survived."""
    reg = load_registry()
    hosts = set(reg["hosts"])
    if (config.STATE / "hosts").is_dir():
        hosts |= {p.name for p in (config.STATE / "hosts").iterdir()}
    kill_relays()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        list(pool.map(stop_host, sorted(hosts)))
    kill_cgroup(None)
    remove_network()
    if config.STATE.exists():
        # Overlays live in the supervisors' private mount namespaces; nothing is mounted here.
        shutil.rmtree(config.STATE)


def remove_hosts(hosts: list[str]) -> None:
    """Take some hosts out of a running lab, leaving nothing of them behind."""
    reg = load_registry()
    hosts = known_hosts(reg, hosts)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        list(pool.map(stop_host, hosts))
    for host in hosts:
        remove_host_network(reg, host)
        shutil.rmtree(host_dir(host), ignore_errors=True)
        del reg["hosts"][host]
        reg.get("store_size", {}).pop(host, None)
        reg.get("sudo_password", {}).pop(host, None)
        reg.get("images", {}).pop(host, None)
        reg.get("deployers", {}).pop(host, None)
        reg.get("cache_clients", {}).pop(host, None)
        if host in reg.get("ipv6", []):
            reg["ipv6"].remove(host)
        if host in reg.get("stopped", []):
            reg["stopped"].remove(host)
    save_registry(reg)
    write_ssh_config(reg)


def cmd_down(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if args.hosts:
        remove_hosts(validate_hosts(args.hosts))
        log(f"removed {' '.join(args.hosts)} in {time.monotonic() - started:.1f} s")
        return 0
    teardown()
    log(f"lab down in {time.monotonic() - started:.1f} s")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    """Put hosts back to a freshly booted state: a new writable layer, same keys and address."""
    reg = load_registry()
    hosts = known_hosts(reg, validate_hosts(args.hosts))
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        list(pool.map(stop_host, hosts))
    for host in hosts:
        bring_link_up(reg, host)
        seed_upper(reg, host)
        start_host(reg, host)
    boot_all(reg, hosts)
    reg["stopped"] = [h for h in reg.get("stopped", []) if h not in hosts]
    save_registry(reg)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    reg = load_registry()
    if not reg["hosts"]:
        print("the lab is down (make lab-up)")
        return 0
    hosts = known_hosts(reg, validate_hosts(args.hosts))

    def row(host: str) -> list[str]:
        state = system_state(host)
        current = nix = "-"
        if state != "down":
            proc = exec_in(host, ["readlink", "/run/current-system"], capture=True, timeout=10)
            current = proc.stdout.strip() or "(none)"
            # "nix (Nix) 2.26.3": the last word
            nix = (exec_in(host, ["nix", "--version"], capture=True, timeout=10).stdout.split() or ["?"])[-1]
        answers = "yes" if sshd_answers(address(reg, host)) else "no"
        return [host, address(reg, host), state, answers, nix, image_suite(reg, host), address6(reg, host) or "-",
                current]

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        rows = list(pool.map(row, hosts))
    rows.insert(0, ["HOST", "ADDRESS", "SYSTEMD", "SSH", "NIX", "DEBIAN", "IPV6", "CURRENT SYSTEM"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    if reg.get("link"):
        print(describe(reg))
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    reg = load_registry()
    known_hosts(reg, validate_hosts([args.host]))
    if not args.cmd:
        raise LabError("usage: labctl exec HOST -- CMD...")
    return exec_in(args.host, args.cmd).returncode


def cmd_reboot(args: argparse.Namespace) -> int:
    reg = load_registry()
    hosts = known_hosts(reg, validate_hosts(args.hosts))
    for host in hosts:
        before = read_pid(host_dir(host) / "nspawn.pid")
        exec_in(host, ["systemctl", "reboot"])
        deadline = time.monotonic() + config.BOOT_TIMEOUT
        while read_pid(host_dir(host) / "nspawn.pid") == before:
            if time.monotonic() > deadline or not supervisor_alive(host):
                raise LabError(f"{host} did not reboot; see {host_dir(host) / 'console.log'}")
            time.sleep(0.05)
        wait_ready(reg, host)
        log(f"{host} rebooted")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Power hosts off as a pulled plug would, keeping their disk (`start` boots them again)."""
    reg = load_registry()
    hosts = known_hosts(reg, validate_hosts(args.hosts))
    reg["stopped"] = sorted(set(reg.get("stopped", [])) | set(hosts))
    save_registry(reg)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        list(pool.map(stop_host, hosts))
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    """Boot stopped hosts on the disk they had: they boot their boot profile."""
    reg = load_registry()
    hosts = [h for h in known_hosts(reg, validate_hosts(args.hosts)) if not supervisor_alive(h)]
    for host in hosts:
        ensure_netns(reg, host)
        # Its link as new hardware has it: up (an activation that cut it off set it down in the namespace).
        bring_link_up(reg, host)
        ensure_ipv6(reg, host)
        start_host(reg, host)
    boot_all(reg, hosts)
    reg = load_registry()
    reg["stopped"] = sorted(set(reg.get("stopped", [])) - set(hosts))
    save_registry(reg)
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    print("\n".join(env_lines()))
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    path = seed_example_inputs()
    if path is None:
        raise LabError("no examples/fleet/site beside the lab, or no nix on this machine")
    print(path)
    return 0


def cmd_wheels(args: argparse.Namespace) -> int:
    print(ensure_wheels())
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    print(ensure_image(args.suite))
    return 0
