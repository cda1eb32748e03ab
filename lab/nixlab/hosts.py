"""A host's life: a fresh writable layer, a supervisor that keeps it booted (and boots it again
after `systemctl reboot`), the wait for it to be ready, and its power-off."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from nixlab import config, roles
from nixlab.deployer import deployer_binds, install_deployer_wheels, write_profile
from nixlab.inside import console_tail, exec_in, sshd_answers, supervisor_alive, system_state
from nixlab.proc import LabError, log, pid_is, read_pid, run
from nixlab.registry import Registry, address, host_dir, load_registry

INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")


class StoppedWhileBooting(LabError):
    pass


def seed_upper(reg: Registry, host: str) -> None:
    """A fresh writable layer: the host's own machine-id, host key and authorized keys."""
    hdir = host_dir(host)
    for name in ("upper", "work"):
        if (hdir / name).exists():
            shutil.rmtree(hdir / name)
        (hdir / name).mkdir(parents=True)
    upper = hdir / "upper"
    (upper / "etc/ssh").mkdir(parents=True)
    (upper / "etc/machine-id").write_text(secrets.token_hex(16) + "\n")
    # As on NixOS: the host's own name resolves, and so do the other lab hosts.
    peers = "".join(f"{address(reg, h)} {h}\n" for h in sorted(reg["hosts"]) if h != host)
    (upper / "etc/hosts").write_text(f"127.0.0.1 localhost\n::1 localhost\n127.0.0.2 {host}\n{peers}")
    for suffix, mode in (("", 0o600), (".pub", 0o644)):
        dst = upper / f"etc/ssh/ssh_host_ed25519_key{suffix}"
        shutil.copy(hdir / f"ssh_host_ed25519_key{suffix}", dst)
        os.chmod(dst, mode)
    pub = (config.SSH_DIR / "id_ed25519.pub").read_text()
    base = Path(reg["images"][host])
    deploy_ids = next(
        line.split(":")[2:4] for line in (base / "etc/passwd").read_text().splitlines() if line.startswith("deploy:")
    )
    for home, uid, gid in (("root", 0, 0), ("home/deploy", int(deploy_ids[0]), int(deploy_ids[1]))):
        sshd = upper / home / ".ssh"
        sshd.mkdir(parents=True)
        (sshd / "authorized_keys").write_text(pub)
        for path in (sshd, sshd / "authorized_keys"):
            os.chown(path, uid, gid)
        os.chmod(sshd, 0o700)
        os.chmod(sshd / "authorized_keys", 0o600)
        # The layer's copies of the parent directories must keep the image's owners.
        parent = upper / home
        image_parent = base / home
        st = image_parent.stat()
        os.chown(parent, st.st_uid, st.st_gid)
        os.chmod(parent, st.st_mode & 0o7777)
    write_profile(reg, host, upper)
    roles.seed_layer(reg, host, upper, base)


def cgroup_paths(host: str | None = None) -> list[Path]:
    return [root / config.CGROUP / host if host else root / config.CGROUP for root in config.CGROUP_ROOTS]


def start_host(reg: Registry, host: str) -> None:
    hdir = host_dir(host)
    (hdir / "root").mkdir(exist_ok=True)
    for path in cgroup_paths(host):
        path.mkdir(parents=True, exist_ok=True)
    with open(hdir / "console.log", "ab") as console:
        # labctl itself: stop_host and the tests know a supervisor by its command line, `labctl _supervise HOST`.
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--",
             sys.executable, str(config.LABCTL), "_supervise", host],
            stdin=subprocess.DEVNULL, stdout=console, stderr=console, start_new_session=True,
        )
    (hdir / "supervisor.pid").write_text(f"{proc.pid}\n")


def supervise(host: str) -> int:
    """Runs in a private mount namespace: keeps one host booted until told to stop.

    nspawn exits 133 when the host reboots; then it is started again on the
    same disk state, as a machine comes back after `systemctl reboot`.
    """
    reg = load_registry()
    hdir = host_dir(host)
    for path in cgroup_paths(host):
        (path / "cgroup.procs").write_text(f"{os.getpid()}\n")
    # The machine's /run is a disk filesystem that nspawn refuses to clean up.
    Path("/run/systemd/nspawn").mkdir(parents=True, exist_ok=True)
    run("mount", "-t", "tmpfs", "tmpfs", "/run/systemd/nspawn")
    run("mount", "-t", "overlay", "overlay", "-o",
        f"lowerdir={reg['images'][host]},upperdir={hdir / 'upper'},workdir={hdir / 'work'}", str(hdir / "root"))
    argv = [
        "systemd-nspawn", "--quiet", "-D", str(hdir / "root"), "-M", host, f"--hostname={host}",
        "--register=no", "--keep-unit", "--console=read-only", "--link-journal=no",
        # A bad network change (the break_network knob) must be able to cut the host off.
        "--capability=CAP_NET_ADMIN",
        f"--network-namespace-path=/run/netns/{config.netns(host)}", "-b",
    ]
    for bind in reg.get("bind_ro", []) + deployer_binds(reg, host):
        argv.insert(-1, f"--bind-ro={bind}")
    store_size = reg.get("store_size", {}).get(host)
    if store_size:  # a small store, to test what happens when a host's disk is nearly full
        argv.insert(-1, f"--tmpfs=/nix/store:mode=1775,size={store_size}")
    env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child and child.poll() is None:
            child.send_signal(signal.SIGTERM)  # nspawn asks the host's systemd to power off

    signal.signal(signal.SIGTERM, on_term)
    while True:
        child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
        (hdir / "nspawn.pid").write_text(f"{child.pid}\n")
        while True:
            try:
                code = child.wait()
                break
            except InterruptedError:
                continue
        print(f"labctl: {host}: systemd-nspawn exited {code}", flush=True)
        if stopping or code != 133:
            return code


def wait_ready(reg: Registry, host: str, timeout: float = config.BOOT_TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    state = "down"
    while time.monotonic() < deadline:
        if not supervisor_alive(host):
            raise StoppedWhileBooting(f"{host} stopped while booting; the end of its console:\n{console_tail(host)}")
        state = system_state(host)
        if state in ("running", "degraded") and sshd_answers(address(reg, host)):
            if state == "degraded":
                failed = exec_in(host, ["systemctl", "--failed", "--plain", "--no-legend"], capture=True)
                log(f"{host} is degraded; failed units: {failed.stdout.strip()}")
            return state
        time.sleep(0.1)
    raise LabError(f"{host} did not finish booting within {timeout:.0f} s (state: {state}); "
                   f"see {host_dir(host) / 'console.log'}")


def boot_all(reg: Registry, hosts: list[str]) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        for future in [pool.submit(boot_with_one_retry, reg, h) for h in hosts]:
            future.result()
    for host in hosts:
        require_sudo_password(reg, host)
        install_deployer_wheels(reg, host)
    if roles.CACHE_HOST in hosts:
        roles.check_cache_serves(reg)


def require_sudo_password(reg: Registry, host: str) -> None:
    """`up --sudo-password PW`: the host's deploy user needs that password for sudo, as on
    many real fleets (the writable layer keeps it across reboots; reset sets it again)."""
    password = reg.get("sudo_password", {}).get(host)
    if not password:
        return
    proc = exec_in(host, ["sh", "-c", "chpasswd && echo 'deploy ALL=(ALL:ALL) ALL' > /etc/sudoers.d/deploy && "
                          "chmod 0440 /etc/sudoers.d/deploy"], capture=True, timeout=30, input=f"deploy:{password}\n")
    if proc.returncode != 0:
        raise LabError(f"{host}: could not give deploy a sudo password: {proc.stderr.strip()}")


def boot_with_one_retry(reg: Registry, host: str, attempts: int = 3) -> str:
    """A container that dies while booting is started again (at most `attempts` boots in all),
    after a pause that lets the old one's image lock go; each failure is logged."""
    for attempt in range(1, attempts + 1):
        try:
            return wait_ready(reg, host)
        except StoppedWhileBooting as exc:
            if attempt == attempts:
                raise
            log(f"{exc}\nlabctl: starting {host} once more")
        stop_host(host)
        time.sleep(2.0 * attempt)  # nspawn refuses a tree that the last one still holds ("busy")
        start_host(reg, host)
    raise AssertionError("unreachable")


def stop_host(host: str) -> None:
    """Power the host off; kill by PID whatever does not exit within the bound."""
    pid = read_pid(host_dir(host) / "supervisor.pid")
    if pid is not None and pid_is(pid, f"_supervise {host}"):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + config.STOP_TIMEOUT
        while time.monotonic() < deadline and pid_is(pid, f"_supervise {host}"):
            time.sleep(0.05)
    kill_cgroup(host)


def cgroup_pids(path: Path) -> set[int]:
    pids: set[int] = set()
    if not path.is_dir():
        return pids
    for procs in path.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in procs.read_text().split())
    return pids


def kill_cgroup(host: str | None) -> None:
    """SIGKILL, by PID, every process left in the host's (or the lab's) cgroups, then remove them."""
    for _ in range(50):
        pids = set().union(*(cgroup_pids(p) for p in cgroup_paths(host)))
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for root in cgroup_paths(host):
        if root.is_dir():
            for sub in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                root.rmdir()


def lab_is_up(reg: Registry) -> bool:
    """Every host runs, or was powered off on purpose (`stop`): then the lab is not stale."""
    stopped = set(reg.get("stopped", []))
    return bool(reg["hosts"]) and all(supervisor_alive(h) or h in stopped for h in reg["hosts"])


def raise_inotify_limit(hosts: int) -> None:
    """Each host's systemd takes several inotify instances, all counted for root: Debian's
    default of 128 stops at about 20 hosts ("Too many open files"). Raised, never lowered."""
    wanted = 256 + 16 * hosts
    try:
        current = int(INOTIFY_INSTANCES.read_text())
        if current < wanted:
            INOTIFY_INSTANCES.write_text(f"{wanted}\n")
            log(f"fs.inotify.max_user_instances {current} -> {wanted} (for {hosts} hosts)")
    except (OSError, ValueError) as exc:
        log(f"warning: cannot raise fs.inotify.max_user_instances ({exc}); many hosts may fail to boot")
