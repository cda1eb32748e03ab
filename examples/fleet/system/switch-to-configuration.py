#!/usr/bin/python3
"""switch-to-configuration for the nixtasks example fleet.

The lab hosts are Debian containers with a real systemd, not NixOS, so this
stands in for NixOS's switch-to-configuration: same actions, same kind of
progress lines (on stderr, like the real one) and the same exit codes.

  switch        set the boot entry, then activate (like `test`)
  boot          only set the boot entry; change nothing running
  test          activate: install this system's units, daemon-reload, stop
                removed units, restart changed ones, start new ones, point
                /run/current-system here
  dry-activate  print what `test` would stop, restart and start

Exit codes: 0 ok, 1 usage, 2 an activation snippet failed, 4 units failed.

Units are installed as symlinks /etc/systemd/system/<unit> (and
<target>.wants/<unit>) pointing into this store path; any such symlink that
points into /nix/store is "managed", which is how a later activation (even
after a reboot, when /run/current-system is gone) knows which units it must
stop and remove. The profile /nix/var/nix/profiles/system is the deployer's
business and is never touched here.
"""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ACTIONS = ("switch", "boot", "test", "dry-activate")
USAGE = """\
Usage: {prog} [switch|boot|test|dry-activate]

switch:       make the configuration the boot default and activate now
boot:         make the configuration the boot default
test:         activate the configuration, but don't make it the boot default
dry-activate: show what would be done if this configuration were activated
"""

TOPLEVEL = Path(__file__).resolve().parent.parent
UNIT_DIR = Path("/etc/systemd/system")
STORE_DIR = "/nix/store/"
LOCK_FILE = Path("/run/nixos/switch-to-configuration.lock")
CURRENT_SYSTEM = Path("/run/current-system")
GC_ROOTS = Path("/nix/var/nix/gcroots")
BOOT_ENTRY = Path("/boot/nixtasks-lab/default")
LAB_LINK = "lab0"
# Routes on the lab link are dropped by the kernel when it goes down; keep
# the non-kernel ones here (tmpfs, like the link state) to restore them.
SAVED_ROUTES = Path("/run/nixtasks-lab/lab0.routes")

EXIT_USAGE, EXIT_ACTIVATION, EXIT_UNITS = 1, 2, 4


def log(msg: str) -> None:
    """Progress goes to stderr like the real stc; a dead ssh session must not
    abort an activation half way, so write errors are ignored."""
    try:
        print(msg, file=sys.stderr, flush=True)
    except OSError:
        pass


def run(*cmd: str, check: bool = False, capture: bool = False,
        quiet: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.DEVNULL if quiet else None)


def systemctl(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    return run("systemctl", *args, capture=capture)


def syslog(priority: str, msg: str) -> None:
    """Record the switch in the journal, as the real stc does."""
    try:
        run("logger", "-t", "nixos", "-p", f"user.{priority}", msg)
    except OSError:
        pass


def atomic_symlink(target: str, link: Path) -> None:
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


# --- unit trees --------------------------------------------------------------
# A tree maps a path relative to /etc/systemd/system ("x.service",
# "multi-user.target.wants/x.service") to the store path it links to.

def new_tree() -> dict[str, str]:
    root = TOPLEVEL / "etc" / "systemd" / "system"
    tree = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():  # follows the .wants links inside the store path
            tree[str(path.relative_to(root))] = str(path)
    return tree


def is_managed(target: str) -> bool:
    return target.startswith(STORE_DIR) and "/etc/systemd/system/" in target


def installed_tree() -> dict[str, str]:
    """The managed symlinks currently in /etc/systemd/system (one level of
    subdirectories: *.wants, *.requires)."""
    tree = {}
    if not UNIT_DIR.is_dir():
        return tree
    for path in sorted(UNIT_DIR.glob("*")) + sorted(UNIT_DIR.glob("*/*")):
        if path.is_symlink() and is_managed(os.readlink(path)):
            tree[str(path.relative_to(UNIT_DIR))] = os.readlink(path)
    return tree


def unit_names(tree: dict[str, str]) -> set[str]:
    return {rel for rel in tree if "/" not in rel}


def wanted_by(tree: dict[str, str], unit: str) -> set[str]:
    return {rel.split("/")[0] for rel in tree if "/" in rel and rel.endswith("/" + unit)}


def read_unit(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:  # the old store path may have been garbage-collected
        return None


# --- systemd state -----------------------------------------------------------

def unit_states(units) -> dict[str, tuple[str, str]]:
    """unit -> (ActiveState, SubState); unknown units count as inactive."""
    units = sorted(units)
    states = {u: ("inactive", "dead") for u in units}
    if not units:
        return states
    out = systemctl("show", "--property=Id,ActiveState,SubState", "--", *units,
                    capture=True).stdout
    for block in out.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if props.get("Id") in states:
            states[props["Id"]] = (props.get("ActiveState", "inactive"),
                                   props.get("SubState", "dead"))
    return states


def is_running(state: tuple[str, str]) -> bool:
    return state[0] in ("active", "activating", "reloading", "deactivating")


def has_failed(state: tuple[str, str]) -> bool:
    # A unit with Restart= that failed to start sits in auto-restart, not failed.
    return state[0] == "failed" or state[1] == "auto-restart"


def system_is_booting() -> bool:
    """While booting (the lab runs `stc test` from a boot-time unit), waiting
    for start jobs could deadlock against that unit's own ordering."""
    state = systemctl("is-system-running", capture=True).stdout.strip()
    return state in ("initializing", "starting")


# --- the plan ----------------------------------------------------------------

class Plan:
    """What an activation does to units: computed from the installed managed
    links (the previous system, even after a reboot) and this system's."""

    def __init__(self) -> None:
        self.old = installed_tree()
        self.new = new_tree()
        old_units, new_units = unit_names(self.old), unit_names(self.new)
        self.units = old_units | new_units
        self.states = unit_states(self.units)
        self.removed = sorted(old_units - new_units)
        self.added = sorted(new_units - old_units)
        self.changed = sorted(u for u in old_units & new_units if self._changed(u))
        self.wanted = sorted(u for u in new_units if wanted_by(self.new, u))

    def _changed(self, unit: str) -> bool:
        return (read_unit(self.old[unit]) != read_unit(self.new[unit])
                or wanted_by(self.old, unit) != wanted_by(self.new, unit))

    def to_stop(self) -> list[str]:
        return [u for u in self.removed if is_running(self.states[u])]

    def to_restart(self) -> list[str]:
        return [u for u in self.changed
                if is_running(self.states[u]) or u in self.wanted]

    def to_start(self) -> list[str]:
        """New units wanted by a target, and wanted units that are not running
        (fresh host, after a reboot, or after an earlier failure)."""
        restart = set(self.to_restart())
        return [u for u in self.wanted
                if u not in restart and not is_running(self.states[u])]


# --- activation snippets -----------------------------------------------------
# Like NixOS's activation script: each snippet runs even if an earlier one
# failed, a failure is reported as "Activation script snippet ... failed" and
# makes the whole switch exit 2, and /run/current-system is set regardless.

def snippet_units(plan: Plan) -> None:
    """Install this system's unit links and remove the stale managed ones."""
    for rel in sorted(set(plan.old) - set(plan.new)):
        (UNIT_DIR / rel).unlink(missing_ok=True)
        if "/" in rel:
            try:
                (UNIT_DIR / rel).parent.rmdir()  # only if now empty
            except OSError:
                pass
    for rel, target in sorted(plan.new.items()):
        link = UNIT_DIR / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() and not link.is_symlink():
            raise RuntimeError(f"refusing to replace unmanaged file {link}")
        if not (link.is_symlink() and os.readlink(link) == target):
            atomic_symlink(target, link)


def link_is_up() -> bool | None:
    """Administrative state of the lab link (IFF_UP); None if there is none.
    Asks ip(8), not /sys/class/net: in a container /sys may show another
    network namespace."""
    proc = run("ip", "-j", "link", "show", "dev", LAB_LINK, capture=True, quiet=True)
    if proc.returncode != 0:
        return None
    return "UP" in json.loads(proc.stdout)[0].get("flags", [])


def snippet_network(config: dict) -> None:
    """break_network: the lab link goes down (cutting the host off); without
    the knob it is brought (back) up, so a good activation restores it.
    Only a change of state touches the link (that needs CAP_NET_ADMIN)."""
    up = link_is_up()
    if up is None:
        log(f"activation: no network link {LAB_LINK}, leaving the network alone")
    elif config.get("break_network") and up:
        routes = run("ip", "-4", "route", "show", "dev", LAB_LINK, capture=True).stdout
        keep = [r for r in routes.splitlines() if r.strip() and "proto kernel" not in r]
        if keep:
            SAVED_ROUTES.parent.mkdir(parents=True, exist_ok=True)
            SAVED_ROUTES.write_text("\n".join(keep) + "\n")
        log(f"activation: setting link {LAB_LINK} down (break_network)")
        run("ip", "link", "set", LAB_LINK, "down", check=True)
    elif not config.get("break_network") and not up:
        log(f"activation: setting link {LAB_LINK} up")
        run("ip", "link", "set", LAB_LINK, "up", check=True)
        if SAVED_ROUTES.exists():
            for route in SAVED_ROUTES.read_text().splitlines():
                run("ip", "route", "replace", *route.split(), "dev", LAB_LINK)
            SAVED_ROUTES.unlink()


def snippet_slow(config: dict) -> None:
    seconds = int(config.get("activation_seconds", 0))
    if seconds > 0:
        log(f"activation: sleeping {seconds}s (activation_seconds)")
        time.sleep(seconds)


def snippet_fail(config: dict) -> None:
    if config.get("fail_activation"):
        raise RuntimeError("simulated failure (fail_activation)")


def activate(plan: Plan, config: dict) -> int:
    """Run the snippets, then set /run/current-system; returns 0 or 2."""
    res = 0
    snippets = [("units", lambda: snippet_units(plan)),
                ("nixtasks-network", lambda: snippet_network(config)),
                ("nixtasks-slow", lambda: snippet_slow(config)),
                ("nixtasks-fail", lambda: snippet_fail(config))]
    for name, snippet in snippets:
        try:
            snippet()
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
            log(f"{name}: {exc}")
            log(f"Activation script snippet '{name}' failed (1)")
            res = EXIT_ACTIVATION
    atomic_symlink(str(TOPLEVEL), CURRENT_SYSTEM)
    # As NixOS's activation script does: what runs is a garbage-collector root.
    GC_ROOTS.mkdir(parents=True, exist_ok=True)
    atomic_symlink(str(CURRENT_SYSTEM), GC_ROOTS / "current-system")
    return res


# --- actions -----------------------------------------------------------------

def install_boot_entry() -> None:
    BOOT_ENTRY.parent.mkdir(parents=True, exist_ok=True)
    atomic_symlink(str(TOPLEVEL), BOOT_ENTRY)
    log(f"updating boot entry {BOOT_ENTRY} -> {TOPLEVEL}")


def say_units(verb: str, units: list[str]) -> None:
    if units:
        log(f"{verb} the following units: {', '.join(units)}")


def dry_activate(plan: Plan, config: dict) -> int:
    say_units("would stop", plan.to_stop())
    log("would activate the configuration...")
    up, want_up = link_is_up(), not config.get("break_network")
    if up is not None and up != want_up:
        log(f"would set link {LAB_LINK} {'up' if want_up else 'down'}")
    say_units("would restart", plan.to_restart())
    say_units("would start", plan.to_start())
    return 0


def switch(plan: Plan, config: dict) -> int:
    # Forget earlier failures of our units, so "failed" below means this run.
    failed_before = [u for u, s in plan.states.items() if s[0] == "failed"]
    if failed_before:
        systemctl("reset-failed", "--", *failed_before)
        plan.states = unit_states(plan.units)

    stop, restart, start = plan.to_stop(), plan.to_restart(), plan.to_start()
    # Removed units are stopped while their unit files are still installed.
    say_units("stopping", stop)
    if stop:
        systemctl("stop", "--", *stop)

    log("activating the configuration...")
    res = activate(plan, config)

    systemctl("daemon-reload")
    booting = system_is_booting()
    wait = ["--no-block"] if booting else []
    say_units("restarting", restart)
    if restart:
        systemctl("restart", *wait, "--", *restart)
    say_units("starting", start)
    if start:
        systemctl("start", *wait, "--", *start)
    if booting:
        # As on NixOS, units failing at boot are systemd's to report
        # (systemctl --failed), not a failure of the activation.
        return res

    states = unit_states(unit_names(plan.new))
    failed = sorted(u for u, s in states.items() if has_failed(s))
    if failed:
        log(f"warning: the following units failed: {', '.join(failed)}")
        for unit in failed:
            log("")
            subprocess.run(["systemctl", "status", "--no-pager", "--full", unit],
                           check=False, stdout=sys.stderr, env={**os.environ, "COLUMNS": "1000"})
        res = EXIT_UNITS
    new_started = [u for u in plan.added if is_running(states.get(u, ("", "")))]
    if new_started:
        log(f"the following new units were started: {', '.join(new_started)}")
    return res


def take_lock():
    """Two activations must never interleave: hold an fcntl lock till exit."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    return fd


def main(argv: list[str]) -> int:
    # Runs from systemd-run with a scrubbed environment as well as from a shell.
    os.environ["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    # A cut network (break_network) may kill the deployer's ssh session; the
    # activation must still run to the end.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    action = argv[1] if len(argv) == 2 else None
    if action not in ACTIONS:
        sys.stderr.write(USAGE.format(prog=argv[0]))
        return EXIT_USAGE

    lock = take_lock()  # noqa: F841 (held until the process exits)
    config = json.loads((TOPLEVEL / "nixtasks.json").read_text())

    if action in ("switch", "boot"):
        if config.get("fail_boot_entry"):  # as NixOS's stc when installing the boot loader fails
            log("Failed to install bootloader (fail_boot_entry)")
            return 1
        install_boot_entry()
    if action == "boot":
        return 0

    plan = Plan()
    if action == "dry-activate":
        return dry_activate(plan, config)

    syslog("notice", f"switching to system configuration {TOPLEVEL}")
    res = switch(plan, config)
    if res == 0:
        syslog("notice", f"finished switching to system configuration {TOPLEVEL}")
    else:
        syslog("err", f"switching to system configuration {TOPLEVEL} failed (status {res})")
    return res


if __name__ == "__main__":
    sys.exit(main(sys.argv))
