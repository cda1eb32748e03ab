"""A host's state, read in one round trip and parsed by a pure function: what runs, what
boots and its generation, systemd, failed units, free space, who holds the deploy lock,
whether the watchdog reverted the last activation, which machine it is, and (asked for by the
first read of a deploy) whether sudo there wants a password that nixtasks was not given."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..models import SYSTEM_PROFILE, Command, Host
from . import commands
from .generations import generation_of_profile_link
from .runner import SUDO_WANTS_PASSWORD, Runner
from .space import available_bytes

# sudo -n with a command nixtasks runs as root that changes nothing (as the password probe
# does): with `sudo-probe` as the script's argument, whether sudo wants a password for it.
SUDO_PROBE = shlex.join(commands.on_host(commands.list_generations()))
SUDO_PROBE_ARGS = ("nixtasks-facts", "sudo-probe")

# Constant text: nothing from the user goes into it.
FACTS_SCRIPT = f"""
running=$(readlink -e /run/current-system 2>/dev/null)
printf 'running\\t%s\\n' "$running"
printf 'profile\\t%s\\n' "$(readlink {SYSTEM_PROFILE} 2>/dev/null)"
printf 'profile-path\\t%s\\n' "$(readlink -e {SYSTEM_PROFILE} 2>/dev/null)"
if [ -n "$running" ]; then
  for link in {SYSTEM_PROFILE}-*-link; do
    # -ef: the same directory (the shell's own test, no process per generation)
    if [ "$link" -ef "$running" ]; then printf 'running-link\\t%s\\n' "$link"; fi
  done
fi
printf 'version\\t%s\\n' "$(cat /run/current-system/nixos-version 2>/dev/null)"
printf 'revision\\t%s\\n' "$(/run/current-system/sw/bin/nixos-version --configuration-revision 2>/dev/null || \\
  cat /run/current-system/configuration-revision 2>/dev/null)"
if [ -d /run/systemd/system ]; then
  printf 'systemd\\tyes\\n'
  printf 'state\\t%s\\n' "$(systemctl is-system-running 2>/dev/null)"
  {commands.UNITS_SH}
  printf 'lock\\t%s\\n' "$(listed {commands.LOCK_UNIT})"
  read -r t o 2>/dev/null <{commands.LOCK_HOLD} && [ "$t" -gt "$(date +%s)" ] 2>/dev/null &&
    printf 'hold\\t%s %s\\n' "$t" "$o"
  if busy {commands.WATCHDOG_UNIT}.timer {commands.WATCHDOG_UNIT}.service; then
    printf 'watchdog\\tpending\\n'
  fi
  systemctl --failed --plain --no-legend --no-pager 2>/dev/null | while read -r unit rest; do
    printf 'failed\\t%s\\n' "$unit"
  done
fi
printf 'reverted\\t%s\\n' "$(cat {commands.WATCHDOG_REVERTED} 2>/dev/null)"
printf 'store-df\\t%s\\n' "$(df -Pk /nix/store 2>/dev/null | tail -n 1)"
printf 'machine-id\\t%s\\n' "$(cat /etc/machine-id 2>/dev/null)"
if [ "$1" = sudo-probe ]; then
  case "$({SUDO_PROBE} 2>&1 >/dev/null </dev/null)" in
    *"{SUDO_WANTS_PASSWORD}"*) printf 'sudo\\tpassword\\n' ;;
  esac
fi
"""
LOCK_PREFIX = "nixtasks-lock:"


@dataclass(frozen=True)
class Facts:
    reachable: bool
    running: str = ""  # /run/current-system, "" when nothing was activated
    generation: int | None = None  # the profile's generation: what boots next
    running_generation: int | None = None  # the generation whose system runs; None: none does (a `test`)
    boot_path: str = ""  # the profile's system
    version: str = ""
    revision: str = ""
    state: str = ""  # systemctl is-system-running
    failed_units: tuple[str, ...] = ()
    systemd: bool = False
    lock_holder: str = ""  # "who=...,action=...": a deploy holds the host (its hold across a reboot first)
    reverted: str = ""  # "<epoch> <exit>": the watchdog reverted the last activation
    watchdog_pending: bool = False  # an earlier deploy's watchdog was never confirmed and may still revert
    store_free: int | None = None  # bytes free where /nix/store lives
    sudo_wants_password: bool = False  # sudo -n refused nixtasks' commands: a password is required
    error: str = ""  # why the host could not be read
    machine_id: str = ""  # /etc/machine-id: which machine this is, whatever the inventory calls it


def parse_facts(text: str) -> Facts:
    values: dict[str, str] = {}
    failed: list[str] = []
    running_links: list[int] = []
    for line in text.splitlines():
        key, _, value = line.partition("\t")
        if key == "failed" and value:
            failed.append(value)
        elif key == "running-link":
            running_links += [n for n in [generation_of_profile_link(value)] if n is not None]
        else:
            values[key] = value
    state, lock = commands.parse_unit_line(values.get("lock", ""))
    lock = lock if state in ("active", "activating") else ""
    generation = generation_of_profile_link(values.get("profile", ""))
    return Facts(reachable=True, running=values.get("running", ""), generation=generation,
                 running_generation=running_generation(generation, running_links),
                 boot_path=values.get("profile-path", ""), version=values.get("version", ""),
                 revision=values.get("revision", ""), state=values.get("state", ""), failed_units=tuple(failed),
                 systemd=values.get("systemd") == "yes",
                 lock_holder=(commands.held_until(values.get("hold", ""))
                              or (lock.removeprefix(LOCK_PREFIX) if lock.startswith(LOCK_PREFIX) else "")),
                 reverted=values.get("reverted", ""), watchdog_pending=values.get("watchdog") == "pending",
                 sudo_wants_password=values.get("sudo") == "password",
                 store_free=available_bytes("header\n" + values["store-df"]) if values.get("store-df") else None,
                 machine_id=values.get("machine-id", "").strip())


def running_generation(boot: int | None, matching: list[int]) -> int | None:
    """Of the generations whose system is the running one, the boot generation if it is one
    of them (a system deployed twice has two), else the newest."""
    return boot if boot in matching else max(matching, default=None)


def facts_command(*, sudo_probe: bool = False) -> Command:
    return Command(("sh", "-c", FACTS_SCRIPT, *(SUDO_PROBE_ARGS if sudo_probe else ())))


def read_facts(host: Host, runner: Runner, *, fresh: bool = False, sudo_probe: bool = False) -> Facts:
    """`fresh`: over a new ssh connection, not the multiplexed one (it may be dead).
    `sudo_probe`: also see whether sudo there wants a password nixtasks does not have (a deploy's
    first read, so that it stops before anything changes, not at the lock)."""
    probe = sudo_probe and host.target.sudo and not runner.has_sudo_password(host.target)
    cmd = facts_command(sudo_probe=probe)
    result = runner.run(cmd, host.target, check=False, fresh=fresh)
    if not result.ok:
        return Facts(reachable=False, error=str(runner.failure(cmd, host.target, host.name, result)))
    return parse_facts(result.stdout)
