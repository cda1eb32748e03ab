"""Pure builders of `Command` values (argv tuples), and the one function that wraps a
command for ssh + sudo. Nothing here runs anything."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from datetime import datetime, timezone

from ..models import SYSTEM_PROFILE, Action, Command, Secret, Target

NIX_FEATURES = ("--extra-experimental-features", "nix-command flakes")
# On the host, commands get a clean environment: the operator's variables must not leak
# into activation. The PATH is NixOS's, with the usual FHS directories after it.
REMOTE_PATH = ("/run/wrappers/bin:/run/current-system/sw/bin:/nix/var/nix/profiles/default/bin:"
               "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
ACTIVATION_UNIT = "nixtasks-switch-to-configuration"
ACTIVATION_DONE = "/run/nixtasks/activation-done"
HOST_JOURNAL = "/var/lib/nixtasks/journal.jsonl"  # the host's own deploy journal, one JSON record a line


def nix_eval_systems(flake: str, configs: Sequence[str], *, show_trace: bool = False,
                     nix_options: Sequence[str] = ()) -> Command:
    """One evaluation for many systems: {config: {drv, out}} as JSON (an attribute set
    with `outPath` would print as that string).

    Results are keyed by configuration name; `nix build --json` lists its results in
    an order of its own, which once swapped two hosts' systems."""
    names = " ".join(json.dumps(c) for c in configs)  # names are validated: letters, digits, . _ -
    apply = ("cs: builtins.listToAttrs (map (n: { name = n; value = { "
             "drv = cs.${n}.config.system.build.toplevel.drvPath; "
             "out = cs.${n}.config.system.build.toplevel.outPath; }; }) [ " + names + " ])")
    trace = ("--show-trace",) if show_trace else ()
    # Reading a flake must never change the repository (a missing lock file stays missing).
    return Command(("nix", *NIX_FEATURES, "eval", "--json", "--no-write-lock-file", *trace, *nix_options,
                    f"{flake}#nixosConfigurations", "--apply", apply))


def nix_show_config() -> Command:
    """Every setting this machine's Nix knows, with its value, as JSON."""
    return Command(("nix", *NIX_FEATURES, "show-config", "--json"))


def nix_eval_config_names(flake: str, nix_options: Sequence[str] = ()) -> Command:
    return Command(("nix", *NIX_FEATURES, "eval", "--json", "--no-write-lock-file", *nix_options,
                    f"{flake}#nixosConfigurations", "--apply", "builtins.attrNames"))


def store_url(target: Target) -> str:
    """A host's store for `nix copy`: Nix 2.8 and 2.26 both take an IPv6 literal in brackets
    (`ssh://root@[fd00::11]`) and hand ssh `root@fd00::11`."""
    return f"ssh://{target.url_authority}"


def nix_copy(path: str, *, to: Target | None = None, source: Target | None = None) -> Command:
    """`nix copy` between this machine and hosts (ssh options come from NIX_SSHOPTS)."""
    argv = ["nix", *NIX_FEATURES, "copy"]
    if source is not None and not source.is_local:
        argv += ["--from", store_url(source)]
    if to is not None and not to.is_local:
        argv += ["--to", store_url(to)]
    return Command((*argv, "--", path), changes=True)


# A binary cache's answers are cached by Nix (an hour for a path it lacked): a path pushed a
# minute ago must not be taken for missing, nor one a wiped cache lost for present.
CACHE_FRESH = ("--option", "narinfo-cache-negative-ttl", "0", "--option", "narinfo-cache-positive-ttl", "0")


def sign_paths(paths: Sequence[str], key: Secret) -> Command:
    """Sign the closures of `paths` in this machine's store with the cache's secret key. The key
    goes in on standard input: neither it nor its file's name is on a command line."""
    return Command(("nix", *NIX_FEATURES, "store", "sign", "--key-file", "/dev/stdin", "--recursive", "--", *paths),
                   stdin=key, changes=True)


def store_path_info(store: str, paths: Sequence[str]) -> Command:
    """What a store (a binary cache's URL) has of `paths`: those it lacks are listed as invalid."""
    return Command(("nix", *NIX_FEATURES, "path-info", "--json", *CACHE_FRESH, "--store", store, "--", *paths))


def push_to_cache(store: str, paths: Sequence[str]) -> Command:
    """Copy the closures of `paths` to a binary cache; Nix sends only what it lacks."""
    return Command(("nix", *NIX_FEATURES, "copy", *CACHE_FRESH, "--to", store, "--", *paths), changes=True)


def fetch_from_cache(url: str, path: str) -> Command:
    """Run on a host: realise `path` from the cache at `url` (as an extra substituter, beside its
    own); the host's own trusted-public-keys and require-sigs decide what it accepts."""
    return Command(("nix-store", "--realise", "--option", "extra-substituters", url,
                    "--option", "narinfo-cache-negative-ttl", "0", "--", path), sudo=True, changes=True)


def nix_copy_derivations(drvs: Sequence[str], *, to: Target) -> Command:
    """Copy derivations (not their outputs) to a build host."""
    return Command(("nix", *NIX_FEATURES, "copy", "--derivation", "--to", store_url(to), "--",
                    *drvs))


def realise(drvs: Sequence[str], *, dry_run: bool = False, nix_options: Sequence[str] = (),
            add_root: str | None = None, keep_going: bool = False) -> Command:
    """Build derivations by path: no evaluation, and stable across Nix versions. `add_root`
    keeps the results from the garbage collector while the deploy needs them (an indirect
    root, gone with its directory)."""
    flags = ("--dry-run",) if dry_run else ("--add-root", add_root, "--indirect") if add_root else ()
    going = ("--keep-going",) if keep_going else ()
    return Command(("nix-store", "--realise", *flags, *going, *nix_options, "--", *drvs))


def add_result_link(path: str, link: str) -> Command:
    """`link` -> `path` (already built), as a garbage-collector root, like the `result` that
    `nix build` and `nixos-rebuild build` leave (an indirect root: gone with the link)."""
    return Command(("nix-store", "--realise", "--add-root", link, "--indirect", "--", path))


def make_private_dir(path: str) -> Command:
    """A new directory only its owner can enter; fails if `path` exists (a name in /tmp that
    someone made first is not ours)."""
    return Command(("mkdir", "-m", "700", "--", path))


def remove_tree(path: str) -> Command:
    return Command(("rm", "-rf", "--", path))


def path_is_valid(path: str) -> Command:
    return Command(("nix-store", "--check-validity", "--", path))


def is_nixos_system(path: str) -> Command:
    return Command(("test", "-f", f"{path}/nixos-version"))


def current_system() -> Command:
    """What the host runs now, resolved; read as the ssh user (no sudo)."""
    return Command(("readlink", "-e", "/run/current-system"))


def diff_closures(old: str, new: str, *, substitute: bool = True) -> Command:
    """`substitute=False`: diff only what this store has (diff-closures realises its arguments,
    which would otherwise ask, or download from, every binary cache)."""
    offline = () if substitute else ("--option", "substitute", "false")
    return Command(("nix", "--extra-experimental-features", "nix-command", "store", "diff-closures", *offline,
                    old, new))


def set_profile(path: str) -> Command:
    return Command(("nix-env", "-p", SYSTEM_PROFILE, "--set", path), sudo=True, changes=True)


def switch_to_configuration(path: str, action: Action, *, systemd: bool) -> Command:
    """Activation. Through systemd-run where the host has systemd, as nixos-rebuild does,
    so that a dropped ssh connection cannot kill it half way; the fixed unit name also
    keeps two activations on one host from running at once."""
    argv: tuple[str, ...] = (f"{path}/bin/switch-to-configuration", action.value)
    if systemd:
        # When it ended, for the watchdog, which gives the confirmation its time from then on
        # ("-": if that cannot be written, the activation has still not failed).
        done = f"--property=ExecStopPost=-/bin/sh -c 'mkdir -p {WATCHDOG_DIR} && : > {ACTIVATION_DONE}'"
        argv = ("systemd-run", "-E", "LOCALE_ARCHIVE", "-E", "NIXOS_INSTALL_BOOTLOADER", "--collect",
                "--no-ask-password", "--pipe", "--quiet", "--wait", "--service-type=exec",
                f"--unit={ACTIVATION_UNIT}", done, *argv)
    # Even dry-activate runs on the host: --dry-run prints it instead.
    return Command(argv, sudo=True, changes=True)


NOW_RUNNING = "now running "
NOW_RUNNING_SCRIPT = f'echo "{NOW_RUNNING}$(readlink -e /run/current-system)"'


def now_running() -> Command:
    """After an activation, in its round trip: "now running <system>" (also shown as the
    host's output line); read as the ssh user."""
    return Command(("sh", "-c", NOW_RUNNING_SCRIPT))


def git_revision(repo: str) -> Command:
    return Command(("git", "-C", repo, "rev-parse", "--verify", "-q", "HEAD"))


def git_is_work_tree(repo: str) -> Command:
    return Command(("git", "-C", repo, "rev-parse", "--is-inside-work-tree"))


def git_status(repo: str) -> Command:
    return Command(("git", "-C", repo, "status", "--porcelain", "--untracked-files=all", "--", "."))



# --- running on a host ---------------------------------------------------------------------


# sudo never waits on a prompt nobody sees: without a password it must not ask at all (-n);
# with one, it reads it as the first line of standard input (the command gets the rest), and
# -k makes it read that line every time: a credential cached from an earlier command would
# otherwise leave the password line to the command itself.
SUDO = ("sudo", "-n")
SUDO_WITH_PASSWORD = ("sudo", "--reset-timestamp", "--stdin", "--prompt=")


def on_host(cmd: Command, sudo: bool | None = None, *, password: bool = False) -> tuple[str, ...]:
    """What to run on the host itself: sudo (never waiting for a password; with `password`, it
    reads one from standard input), then a clean env. The words after sudo's own options are
    the same either way, so the sudoers snippet matches both."""
    use_sudo = cmd.sudo if sudo is None else sudo
    prefix = (SUDO_WITH_PASSWORD if password else SUDO) if use_sudo else ()
    return (*prefix, "env", "-i", f"PATH={REMOTE_PATH}", *cmd.argv)


def ssh_argv(cmd: Command, target: Target, ssh_options: Sequence[str], *, password: bool = False) -> tuple[str, ...]:
    """`ssh <opts> host -- <each argument quoted on its own>`: the remote shell sees every
    argument as one word, so no host name, path or reason can ever run a command."""
    wants_sudo = cmd.sudo and target.sudo
    remote = on_host(cmd, sudo=wants_sudo, password=password and wants_sudo)
    # One argument: ssh joins its command words with spaces anyway, and so `--verbose` shows the
    # remote command line quoted once, as it can be pasted into a shell.
    return ("ssh", *ssh_options, target.ssh_destination, "--", shlex.join(remote))


def ssh_batch_argv(cmds: Sequence[Command], target: Target, ssh_options: Sequence[str],
                   marker: str, *, keep_going: bool = False) -> tuple[str, ...]:
    """Several commands in one ssh session, in `sh -c` (one quoted argument with newlines, as
    sh, bash, zsh and fish login shells pass it on; csh-like shells do not take it): each
    as its own quoted argv (with sudo where it needs it, so sudoers matches it alone), its
    exit status printed after `marker`, and the first failure ends the batch (unless
    `keep_going`: then every command runs). At most one
    command has standard input (the batch's); the others read /dev/null, so none can eat it."""
    if sum(1 for c in cmds if c.stdin) > 1:
        raise ValueError("at most one command of a batch reads standard input")
    steps = []
    for i, cmd in enumerate(cmds):
        remote = " ".join(shlex.quote(a) for a in on_host(cmd, sudo=cmd.sudo and target.sudo))
        if not cmd.stdin:
            remote += " </dev/null"
        status = f"printf '%s{i} %d\\n' {shlex.quote(marker)} \"$s\""
        steps.append(f'{remote}; s=$?; {status}' + ('' if keep_going else '; [ "$s" = 0 ] || exit "$s"'))
    return ("ssh", *ssh_options, target.ssh_destination, "--", shlex.join(("sh", "-c", "\n".join(steps))))


def without_run_sockets(options: Sequence[str]) -> list[str]:
    """ssh options less the run's connection sharing (ControlMaster, a ControlPath in the run's
    own directory, ControlPersist): that socket is gone when the run is, and ssh refuses a
    ControlPath it cannot make, so a pasted command would fail on it."""
    kept: list[str] = []
    skip = False
    for i, word in enumerate(options):
        if skip:
            skip = False
            continue
        value = options[i + 1] if word == "-o" and i + 1 < len(options) else ""
        if value.startswith(("ControlMaster=", "ControlPersist=")) or (
                value.startswith("ControlPath=") and value != "ControlPath=none"):
            skip = True
            continue
        kept.append(word)
    return kept


def shown(argv: Sequence[str], ssh_options: Sequence[str] = ()) -> str:
    """A command as `--verbose` prints it: a shell line that runs it as nixtasks did, only over
    a connection of its own (see `without_run_sockets`). Nix reaches hosts with the options in
    NIX_SSHOPTS, so a command that names an ssh:// store shows them too."""
    words = without_run_sockets(argv) if argv[0] == "ssh" else list(argv)
    line = shlex.join(words)
    if argv[0].startswith("nix") and ssh_options and any(a.startswith("ssh://") for a in argv):
        line = f"NIX_SSHOPTS={shlex.quote(' '.join(without_run_sockets(ssh_options)))} {line}"
    return line


def local_argv(cmd: Command, target: Target, *, password: bool = False) -> tuple[str, ...]:
    """On this machine: commands that need root get sudo -n and the same clean env."""
    return on_host(cmd, sudo=target.sudo, password=password and target.sudo) if cmd.sudo else cmd.argv


def without_repeats(options: Sequence[str]) -> tuple[str, ...]:
    """ssh options with an option given again with the same value dropped (NIX_SSHOPTS often
    repeats the inventory's `-F CONFIG`): the same connection, and one `-F` in `--verbose`."""
    seen: set[tuple[str, str]] = set()
    kept: list[str] = []
    i = 0
    while i < len(options):
        flag = options[i]
        takes_value = len(flag) == 2 and flag[0] == "-" and flag[1] in "BbcDEeFIiJLlmOopQRSWw" and i + 1 < len(options)
        if not takes_value:  # -v -v means more than -v
            kept.append(flag)
            i += 1
            continue
        pair = (flag, options[i + 1])
        if pair not in seen:
            seen.add(pair)
            kept += pair
        i += 2
    return tuple(kept)


def ssh_options(control_dir: str | None, extra: Sequence[str] = (), config: str | None = None, *,
                connect_timeout: int = 0, alive_interval: int = 0, alive_count: int = 0) -> tuple[str, ...]:
    """Options for every ssh connection. Host key checking is left as the user has it.

    The connect timeout and keep-alives (0: leave them to ssh and its config) come after the
    user's own options, since ssh takes the first value it is given: NIX_SSHOPTS and the
    inventory's ssh_options still win."""
    opts: list[str] = []
    if config:
        opts += ["-F", config]
    opts += ["-o", "BatchMode=yes"]
    if control_dir:
        opts += ["-o", "ControlMaster=auto", "-o", f"ControlPath={control_dir}/%C", "-o", "ControlPersist=60"]
    limits = []
    if connect_timeout:
        limits += ["-o", f"ConnectTimeout={connect_timeout}"]
    if alive_interval:
        limits += ["-o", f"ServerAliveInterval={alive_interval}"]
        if alive_count:
            limits += ["-o", f"ServerAliveCountMax={alive_count}"]
    return without_repeats((*opts, *extra, *limits))


# Answers of the sudo password probe: the password works, or the host never needed one.
PASSWORD_OK = "nixtasks-sudo-password-ok"
PASSWORD_NOT_NEEDED = "nixtasks-sudo-no-password-needed"


def sudo_password_probe() -> Command:
    """Run as the ssh user, with the password as the first line of standard input: does sudo
    accept it for a command nixtasks runs as root (listing generations changes nothing)? A
    host that lets the user run it without a password says so instead: nothing must then be
    sent to its sudo, which would leave the password line to the command."""
    listing = list_generations()
    without = shlex.join(on_host(listing))
    with_password = shlex.join(on_host(listing, password=True))
    script = (f"if {without} >/dev/null 2>&1; then echo {PASSWORD_NOT_NEEDED}; exit 0; fi; "
              f"{with_password} >/dev/null && echo {PASSWORD_OK}")
    return Command(("sh", "-c", script))


FAST_KEX = "curve25519-sha256"
COSTLY_KEX = ("sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com")


def fast_kex_first(resolved: str) -> tuple[str, ...]:
    """For a short connection that carries no secret (the watchdog's confirmation, the reads
    that wait for a host to answer again): the key exchanges the user's ssh config allows
    (`ssh -G`'s kexalgorithms), with curve25519-sha256 moved ahead of a leading sntrup761
    hybrid, OpenSSH 9.0-9.8's default, which costs about 0.1 s of CPU on each side for a
    protection of recorded traffic that such a connection does not need. () (the config's
    order) for anything else: an mlkem hybrid first (cheap), or an order of the user's own."""
    for line in resolved.splitlines():
        key, _, value = line.partition(" ")
        if key.lower() == "kexalgorithms":
            allowed = value.strip().split(",")
            if allowed[0] in COSTLY_KEX and FAST_KEX in allowed:
                return ("-o", "KexAlgorithms=" + ",".join([FAST_KEX, *(a for a in allowed if a != FAST_KEX)]))
            return ()
    return ()


def close_master(target: Target, options: Sequence[str]) -> tuple[str, ...]:
    return ("ssh", *options, "-O", "exit", target.ssh_destination)


# --- generations, journal, inspection -------------------------------------------------------


def list_generations() -> Command:
    """Needs root even to read: the profile's lock file is root's."""
    return Command(("nix-env", "-p", SYSTEM_PROFILE, "--list-generations"), sudo=True)


def generation_details() -> Command:
    from .generations import DETAILS_SCRIPT

    return Command(("sh", "-c", DETAILS_SCRIPT))


def switch_generation(number: int) -> Command:
    return Command(("nix-env", "-p", SYSTEM_PROFILE, "--switch-generation", str(number)), sudo=True, changes=True)


def delete_generations(numbers: Sequence[int]) -> Command:
    return Command(("nix-env", "-p", SYSTEM_PROFILE, "--delete-generations", *(str(n) for n in numbers)),
                   sudo=True, changes=True)


def collect_garbage() -> Command:
    return Command(("nix-store", "--gc"), sudo=True, changes=True)


GC_HOLD = "/nix/var/nix/gcroots/nixtasks-gc-hold"


def hold_gc_root(path: str, number: int | str) -> Command:
    """A root for `path` while gc collects (NixOS roots what runs and boots itself; a host that
    does not, or whose link was removed, would lose it)."""
    return Command(("nix-store", "--realise", "--add-root", f"{GC_HOLD}-{number}", "--indirect", "--", path),
                   sudo=True, changes=True)


def release_gc_roots(count: int) -> Command:
    return Command(("rm", "-f", "--", *(f"{GC_HOLD}-{n}" for n in range(count))), sudo=True, changes=True)


def refresh_unit_map() -> Command:
    """Before a switch's boot entry, whose `systemd-run` takes the name of the activation unit
    that lived through the activation's daemon-reload: a touched unit directory makes systemd
    rebuild its map of unit names, so that the name loads without a "Failed to open
    /run/systemd/transient/..." notice (see UNITS_SH). `-c`: a host without systemd has none."""
    return Command(("touch", "-c", "/run/systemd/system"), sudo=True, changes=True)


def journal_dir(path: str) -> Command:
    return Command(("mkdir", "-p", path.rsplit("/", 1)[0]), sudo=True, changes=True)


def journal_append(path: str, line: str) -> Command:
    """The record goes in on standard input: no shell ever parses it, and sudoers can allow
    exactly this command. dd, not `tee -a`: tee also prints it, into the deploy's output."""
    return Command(("dd", f"of={path}", "oflag=append", "conv=notrunc", "status=none"), sudo=True, changes=True,
                   stdin=line + "\n")


def read_file(path: str) -> Command:
    return Command(("cat", "--", path))


def free_space(path: str) -> Command:
    return Command(("df", "-Pk", "--", path))


def closure_info(*paths: str) -> Command:
    """Every path of the closures with its NAR size."""
    return Command(("nix", *NIX_FEATURES, "path-info", "--json", "-r", "--", *paths))


def boot_files(system: str) -> Command:
    """The kernel and initrd a boot loader copies to /boot (a system without them prints nothing)."""
    return Command(("readlink", "-e", f"{system}/kernel", f"{system}/initrd"))


def missing_paths(paths: Sequence[str]) -> Command:
    """Run on the target: which of these store paths it does not have. The paths go in on
    standard input: a big closure would not fit in one remote command line."""
    return Command(("xargs", "-r", "nix-store", "--check-validity", "--print-invalid", "--"),
                   stdin="".join(f"{p}\n" for p in paths))


def failed_units() -> Command:
    return Command(("systemctl", "--failed", "--plain", "--no-legend", "--no-pager"))


def error_journal(lines: int = 10) -> Command:
    return Command(("journalctl", "-p", "err", "-b", "-n", str(lines), "--no-pager", "-q"))


def unit_active(unit: str) -> Command:
    return Command(("systemctl", "is-active", "--", unit))


def host_command(command: str) -> Command:
    """A check command from the inventory, run by the host's shell (the operator wrote it)."""
    return Command(("sh", "-c", command))


def http_get(url: str, timeout: float) -> Command:
    """From the deployer. The URL is validated to start with http(s)://, never with '-'."""
    # -g: brackets are an IPv6 address ([fd00::11]) and braces the URL's own, never curl's globs.
    return Command(("curl", "-g", "-sS", "--max-time", f"{timeout:g}", "-o", "-", "-w", "\n%{http_code}", url))


def ssh_resolve(destination: str, options: Sequence[str]) -> Command:
    """`ssh -G` (run here): the address ssh would connect to, after the ssh config's HostName."""
    return Command(("ssh", "-G", *options, destination))


def git_toplevel(repo: str) -> Command:
    return Command(("git", "-C", repo, "rev-parse", "--show-toplevel"))


# --- locks and the connectivity watchdog (fleet deploys) ----------------------------------

LOCK_UNIT = "nixtasks-lock.service"
WATCHDOG_UNIT = "nixtasks-watchdog"
WATCHDOG_DIR = "/run/nixtasks"  # tmpfs: a reboot forgets an armed watchdog, as it forgets the timer
WATCHDOG_ARMED = f"{WATCHDOG_DIR}/watchdog-armed"
WATCHDOG_REVERTED = f"{WATCHDOG_DIR}/watchdog-reverted"

# Our transient units (lock, watchdog, activation) exist while switch-to-configuration runs
# `systemctl daemon-reload`. systemd before 258 then keeps their /run/systemd/transient files in
# its map of unit names after the units are gone, and every later load of such a name (a
# `systemctl show`, `is-active` or `stop` of it, a new unit of that name) logs "Failed to open
# /run/systemd/transient/<unit>: No such file or directory" (systemd issue #35190). So nixtasks
# looks at its units with `list-units`, which lists loaded units and loads nothing; stops only
# units that are loaded, without waiting through systemctl (whose wait loads the unit again);
# and touches a unit directory once its units are gone, which makes systemd rebuild the map
# the next time it loads a unit. These shell functions are constant text.
# Short names (listed, busy, stop_listed): the confirmation's whole script must stay within
# what sudo matches of a command line (about 1000 characters). `busy` is true when the unit
# runs, and when systemctl cannot say (during a daemon-reexec, say): never read as "done".
LISTED_SH = 'listed(){ systemctl list-units --all --plain --no-legend --full -- "$@" 2>/dev/null;};'
RUNNING_SH = ('busy(){ o=$(listed "$@")||return 0;echo "$o"|{ while read -r u l a s;do '
              'case $a in active|activating|reloading|deactivating)exit 0;;esac;done;exit 1;};};')
STOP_SH = ('stop_listed(){ u=$(listed "$@"|while read -r n s;do echo "$n";done);'
           '[ -z "$u" ]||systemctl stop --no-block $u;i=0;'
           'while [ -n "$(listed "$@")" ]&&[ $i -lt 200 ];do sleep 0.05;i=$((i+1));done;'
           'touch /run/systemd/system 2>/dev/null||:;};')
UNITS_SH = LISTED_SH + RUNNING_SH + STOP_SH


# A reboot ends the lock unit with everything else in /run. A deploy that reboots a host
# (blue-green) first writes a hold on the host's disk, while it holds the unit: "<expiry epoch>
# <owner>", renamed into place. Taking the lock honours another owner's hold until it expires
# (the policy's lock_timeout, like the unit's RuntimeMaxSec), so that the same deploy, and only
# it, takes the lock again after the reboot. The checks come after systemd-run: whoever got the
# unit sees a hold written before the unit was free (exit LOCK_HELD, and the unit stopped again).
LOCK_HOLD = "/var/lib/nixtasks/lock-hold"
LOCK_HELD = 75
MY_UNIT_SH = f'mine(){{ listed {LOCK_UNIT}|{{ read -r u l a s o;[ "$o" = "nixtasks-lock:$1" ];}};}};'
TAKE_SCRIPT = (f"systemd-run --unit={LOCK_UNIT} --quiet --collect --property=RuntimeMaxSec=$2 "
               f'"--description=nixtasks-lock:$1" sleep infinity||exit;read -r t o 2>/dev/null <{LOCK_HOLD}||exit 0;'
               f'[ "$t" -gt "$(date +%s)" ] 2>/dev/null&&[ "$o" != "$1" ]||exit 0;echo "$t $o">&2;'
               f"systemctl stop --no-block {LOCK_UNIT};exit {LOCK_HELD}")
# Only by the unit's owner, who is the only one that can write: written to a file beside it, then renamed.
HOLD_SCRIPT = (LISTED_SH + MY_UNIT_SH + f'mine "$1"||exit 3;mkdir -p {LOCK_HOLD.rsplit("/", 1)[0]}&&'
               f'echo "$(($(date +%s)+$2)) $1">{LOCK_HOLD}.new&&mv -f {LOCK_HOLD}.new {LOCK_HOLD}')
UNHOLD_SCRIPT = f'read -r t o 2>/dev/null <{LOCK_HOLD}||exit 0;[ "$o" != "$1" ]||rm -f {LOCK_HOLD}'
HOLDER_SCRIPT = (f"systemctl list-units --all --plain --no-legend --full -- {LOCK_UNIT};"
                 f'read -r t o 2>/dev/null <{LOCK_HOLD}&&[ "$t" -gt "$(date +%s)" ]&&echo "hold $t $o";:')


# Under the lock, in the activation's own round trip (the lock's take and the facts before
# it, the watchdog and the activation after it): the host still runs `$1` and boots generation
# `$2` ("-": none), as the plan saw, and no earlier deploy's watchdog is pending; else exit
# CHANGED, which ends the round trip before anything changed (the facts read just before say
# what differs). It only reads: no sudo. Constant text.
CHANGED = 76
UNCHANGED_SCRIPT = (LISTED_SH + RUNNING_SH +
                    f'[ "$(readlink -e /run/current-system 2>/dev/null)" = "$1" ]||exit {CHANGED};'
                    f'l=$(readlink {SYSTEM_PROFILE} 2>/dev/null);g=${{l##*system-}};g=${{g%-link}};'
                    f'case $g in ""|*[!0-9]*)g=-;;esac;[ "$g" = "$2" ]||exit {CHANGED};'
                    f'! busy {WATCHDOG_UNIT}.timer {WATCHDOG_UNIT}.service||exit {CHANGED}')


def unchanged_since(running: str, generation: int | None) -> Command:
    """Exit 0 when the host runs `running` (a store path, "" for none) and boots `generation`
    (None: no profile) with no watchdog pending, else CHANGED."""
    return Command(("sh", "-c", UNCHANGED_SCRIPT, "nixtasks-unchanged", running,
                    "-" if generation is None else str(generation)))


def take_lock(owner: str, ttl: float) -> Command:
    """A transient unit is the lock: systemd refuses a second unit of the same name, atomically,
    and RuntimeMaxSec ends it when a dead deployer never releases it. Another owner's unexpired
    hold refuses it too (exit LOCK_HELD). `owner` is `who=...,action=...,pid=...,since=...`
    (letters, digits and `@._:=,+-` only)."""
    return Command(("sh", "-c", TAKE_SCRIPT, "nixtasks-lock", owner, str(int(ttl))), sudo=True, changes=True)


def hold_lock(owner: str, ttl: float) -> Command:
    """The hold that outlives a reboot, for `ttl` seconds from now; only by the unit's owner."""
    return Command(("sh", "-c", HOLD_SCRIPT, "nixtasks-hold", owner, str(int(ttl))), sudo=True, changes=True)


def release_hold(owner: str) -> Command:
    """Remove the hold if it is `owner`'s (an expired one may have been replaced by another's)."""
    return Command(("sh", "-c", UNHOLD_SCRIPT, "nixtasks-unhold", owner), sudo=True, changes=True)


# Not ours (any more) or gone (a reboot): nothing to release.
RELEASE_SCRIPT = (LISTED_SH + STOP_SH + MY_UNIT_SH + f'mine "$1"||exit 0;stop_listed {LOCK_UNIT}')
UNLOCK_SCRIPT = LISTED_SH + STOP_SH + f"rm -f {LOCK_HOLD}&&stop_listed {LOCK_UNIT}"


def release_lock(owner: str | None = None) -> Command:
    """Stop the lock unit; with `owner`, only if it is still that owner's (a lock that
    expired and was taken by another deploy is theirs). Without, also remove any hold
    (`invoke unlock`)."""
    if owner is None:
        return Command(("sh", "-c", UNLOCK_SCRIPT), sudo=True, changes=True)
    return Command(("sh", "-c", RELEASE_SCRIPT, "nixtasks-unlock", owner), sudo=True, changes=True)


def lock_holder() -> Command:
    """The lock unit's `list-units` line ("" when there is none): unit, load, active, sub,
    description; then `hold <expiry> <owner>` for a hold that has not expired."""
    return Command(("sh", "-c", HOLDER_SCRIPT))


def held_until(hold: str) -> str:
    """A hold's "<expiry epoch> <owner>" -> "<owner>; kept across a reboot until <time> UTC"
    ("" for anything else)."""
    expiry, _, holder = hold.strip().partition(" ")
    if not expiry.isdigit() or not holder:
        return ""
    until = datetime.fromtimestamp(int(expiry), timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return f"{holder}; kept across a reboot until {until} UTC"


def parse_lock_holder(text: str) -> str:
    """`lock_holder`'s answer -> the owner text of an unexpired hold, else of an active lock
    unit ("" when neither): a hold names the deploy that reboots the host, also while a refused
    taker's unit is on its way out."""
    lines = text.splitlines()
    for line in lines:
        if line.startswith("hold ") and held_until(line.removeprefix("hold ")):
            return held_until(line.removeprefix("hold "))
    state, description = parse_unit_line(lines[0] if lines else "")
    if state in ("active", "activating") and description.startswith("nixtasks-lock:"):
        return description.removeprefix("nixtasks-lock:")
    return ""


def parse_unit_line(line: str) -> tuple[str, str]:
    """A `list-units` line -> (its active state, its description); ("", "") for none."""
    fields = line.strip().split(None, 4)
    return (fields[2], fields[4] if len(fields) == 5 else "") if len(fields) >= 3 else ("", "")


# The watchdog reverts unless the deployer confirms within `timeout` seconds after the
# activation ended (the activation unit touches ACTIVATION_DONE when it stops). Its timer
# fires `timeout` seconds after arming; the script then waits for a running activation to
# end, and for the rest of the confirmation's time; an activation that has not even started
# gets one more `timeout`. Whoever renames or removes the armed file first wins: the
# confirmation (rm) or the revert (mv). The script goes to a file on the host (systemd
# mangles `;` and `%` in a transient unit's command line) on the standard input of the
# one-line ARM_SCRIPT: sudo matches at most about 1000 characters of a command's arguments.
# Its revert only activates the system that ran before again (`switch-to-configuration test`):
# nothing the watchdog guards touched the profile or the boot entry (a switch sets them only
# once confirmed and checked), so a host that loses power meanwhile boots what it booted before.
# Arguments: $1 the boot generation, for the record ("-": none), $2 the system that booted
# before, $3 the system that ran before, $4 the action, $5 the timeout, $6 the host's name in
# the inventory, $7 the system that was activated ($2 and $4 are not used: they stay so that
# the sudoers rules users installed still match the arm).
# It stops at the first step that fails, writes "<time> <exit status>" when done, and
# appends a record of its revert to the host's journal (the shape of actions/journal.py's
# Record: a deployer that was killed meanwhile could not write one).
WATCHDOG_SCRIPT = f"""#!/bin/sh
PATH="$3/sw/bin:$PATH"
{UNITS_SH}
# Inside a function $5 is the function's own (none): the confirmation's time goes in by name.
confirm_time=$5
after_activation() {{
  while busy {ACTIVATION_UNIT}.service; do sleep 1; done
  [ -e {ACTIVATION_DONE} ] || return 1
  left=$(( $(stat -c %Y {ACTIVATION_DONE}) + confirm_time - $(date +%s) ))
  if [ "$left" -gt 0 ]; then sleep "$left"; fi
  return 0
}}
after_activation || {{ sleep "$confirm_time"; after_activation; }}
mv {WATCHDOG_DIR}/watchdog-armed {WATCHDOG_DIR}/watchdog-fired 2>/dev/null || exit 0
echo "nixtasks watchdog: no confirmation within $5 s of the activation, reverting to $3"
link=$(readlink {SYSTEM_PROFILE}); gen=${{link##*system-}}; gen=${{gen%-link}}
case "$gen" in ''|*[!0-9]*) gen=null;; esac
status=0
"$3/bin/switch-to-configuration" test || status=$?
echo "$(date +%s) $status" > {WATCHDOG_REVERTED}
back=null; to=null; outcome=failed; what="its revert failed (exit $status)"
if [ "$status" = 0 ]; then
  back="\\"$3\\""; outcome="reverted by the watchdog"; what="put back $3"
  if [ "$1" != - ]; then to=$1; fi
fi
id=$(tr -cd 0-9a-f < /proc/sys/kernel/random/uuid)
machine=$(tr -cd 0-9a-f < /etc/machine-id 2>/dev/null)
if [ -n "$machine" ]; then machine="\\"$machine\\""; else machine=null; fi
mkdir -p {HOST_JOURNAL.rsplit("/", 1)[0]}
printf '{{"action": "watchdog", "after_generation": %s, "after_path": %s, "before_generation": %s, \
"before_path": "%s", "git_dirty": null, "git_revision": null, "host": "%s", "id": "%s", "machine_id": %s, \
"message": "no confirmation within %s s of the activation; %s", "operator": "nixtasks-watchdog@%s", \
"outcome": "%s", "reason": "", "repository": null, "time": "%s", "tried_path": "%s"}}\\n' \
  "$to" "$back" "$gen" "$7" "$6" "$id" "$machine" "$5" "$what" "$(uname -n | tr -cd 'A-Za-z0-9._-')" \
  "$outcome" "$(date -u +%Y-%m-%dT%H:%M:%S+00:00)" "$7" >> {HOST_JOURNAL}
touch /run/systemd/system 2>/dev/null || true
"""
WATCHDOG_FILE = f"{WATCHDOG_DIR}/watchdog.sh"
# The armed file exists only once the timer does: a failed arm leaves nothing to fire. The
# first line of standard input is a journal record for the host's journal ("activation
# started": the activation's round trip writes it, and a batch has one standard input),
# the rest the watchdog's script. `read` takes no more than its line from a pipe.
ARM_SCRIPT = (  # in the watchdog's directory, so that its files need no path: sudo matches ~1000 characters
    f"IFS= read -r record; mkdir -p {WATCHDOG_DIR} && cd {WATCHDOG_DIR} && "
    f"rm -f watchdog-fired {WATCHDOG_REVERTED.rsplit('/', 1)[1]} {ACTIVATION_DONE.rsplit('/', 1)[1]} && "
    f"cat > {WATCHDOG_FILE.rsplit('/', 1)[1]} && systemd-run --unit={WATCHDOG_UNIT} --quiet --collect "
    f"--on-active=\"$1\" --timer-property=AccuracySec=100ms -- /bin/sh {WATCHDOG_FILE} \"$2\" \"$3\" \"$4\" \"$5\" "
    f"\"$1\" \"$6\" \"$7\" && : > {WATCHDOG_ARMED.rsplit('/', 1)[1]} && {{ [ -z \"$record\" ] || "
    f"{{ mkdir -p {HOST_JOURNAL.rsplit('/', 1)[0]} && printf '%s\\n' \"$record\" >> {HOST_JOURNAL}; }} || :; }}"
)
# Exit 3 while an activation still runs (its ssh session died, the unit did not): confirming
# then would disarm the watchdog before the activation could break anything.
CONFIRM_SCRIPT = (UNITS_SH + f"if busy {ACTIVATION_UNIT}.service;then exit 3;fi;rm {WATCHDOG_ARMED}&&"
                  f"stop_listed {WATCHDOG_UNIT}.timer {WATCHDOG_UNIT}.service")
CONFIRM_BUSY = 3


def arm_watchdog(timeout: float, generation: int | None, booted: str, running: str, action: Action, *,
                 host: str, system: str, record: str = "") -> Command:
    """Arm the host's watchdog: unless confirmed, activate `running` (the system that ran
    before) again `timeout` seconds after the activation of `system` ends, and journal that as
    `host`, booting `generation` still. `record` (one line, "" for none) goes to the host's journal."""
    return Command(("sh", "-c", ARM_SCRIPT, "nixtasks-arm", str(int(timeout)),
                    "-" if generation is None else str(generation), booted or running, running, action.value,
                    host, system),
                   sudo=True, changes=True, stdin=record.replace("\n", " ") + "\n" + WATCHDOG_SCRIPT)


def confirm_watchdog() -> Command:
    """Sent over a fresh ssh connection: a host whose new network or sshd is broken cannot."""
    return Command(("sh", "-c", CONFIRM_SCRIPT), sudo=True, changes=True)


def revert(generation: int | None, booted: str, running: str, action: Action, *, systemd: bool) -> tuple[Command, ...]:
    """The deployer's own rollback: the profile back on `generation`, the boot loader written
    for it, and the system that ran before activated again. Without a generation to go back to
    (none before, or the profile was never moved: a switch that failed before its boot entry),
    only the running system is activated again, as the watchdog does."""
    cmds: list[Command] = []
    if generation is not None and action.sets_profile:
        cmds.append(switch_generation(generation))
    if action is Action.BOOT:
        if generation is not None:
            cmds.append(switch_to_configuration(SYSTEM_PROFILE, Action.BOOT, systemd=systemd))
    elif action is Action.TEST or generation is None:
        cmds.append(switch_to_configuration(running, Action.TEST, systemd=systemd))
    elif booted == running:
        cmds.append(switch_to_configuration(SYSTEM_PROFILE, Action.SWITCH, systemd=systemd))
    else:
        cmds.append(switch_to_configuration(SYSTEM_PROFILE, Action.BOOT, systemd=systemd))
        cmds.append(switch_to_configuration(running, Action.TEST, systemd=systemd))
    return tuple(cmds)


# --- recipes: reboots, journals, the flake's lock file, hooks --------------------------------


def boot_id() -> Command:
    """Changes at every boot: a host that answers with the old one has not rebooted yet."""
    return Command(("cat", "/proc/sys/kernel/random/boot_id"))


def reboot() -> Command:
    return Command(("systemctl", "reboot"), sudo=True, changes=True)


def follow_journal() -> Command:
    """New warnings and errors of the host's journal as they come (root: the whole journal)."""
    return Command(("journalctl", "--follow", "--priority=warning", "--lines=0", "--no-pager", "--quiet"),
                   sudo=True)


def flake_update(flake: str, inputs: Sequence[str] = (), nix_options: Sequence[str] = ()) -> Command:
    """All inputs (`nix flake update`), or the named ones (`--update-input`, which Nix 2.8 has)."""
    if not inputs:
        return Command(("nix", *NIX_FEATURES, "flake", "update", *nix_options, flake), changes=True)
    named = [arg for name in inputs for arg in ("--update-input", name)]
    return Command(("nix", *NIX_FEATURES, "flake", "lock", *named, *nix_options, flake), changes=True)


def git_diff(repo: str, path: str) -> Command:
    return Command(("git", "-C", repo, "--no-pager", "diff", "--", path))


def git_file_status(repo: str, *paths: str) -> Command:
    return Command(("git", "-C", repo, "status", "--porcelain", "--", *paths))


# A commit made beside the branch: HEAD's tree with one file as the working tree has it, in an
# index of its own (GIT_INDEX_FILE), so neither the branch nor the user's index moves until
# `git_move_head`.


def git_read_tree(repo: str, revision: str, index: str) -> Command:
    return Command(("env", f"GIT_INDEX_FILE={index}", "git", "-C", repo, "read-tree", revision), changes=True)


def git_add_to_index(repo: str, path: str, index: str) -> Command:
    return Command(("env", f"GIT_INDEX_FILE={index}", "git", "-C", repo, "add", "--", path), changes=True)


def git_write_tree(repo: str, index: str) -> Command:
    return Command(("env", f"GIT_INDEX_FILE={index}", "git", "-C", repo, "write-tree"), changes=True)


def git_commit_tree(repo: str, tree: str, parent: str, message: str) -> Command:
    """The commit object (signed if commit.gpgSign says so); no branch moves, no hook runs."""
    return Command(("git", "-C", repo, "commit-tree", tree, "-p", parent, "-m", message), changes=True)


def git_move_head(repo: str, revision: str, expected: str, message: str) -> Command:
    """HEAD's branch to `revision`, only if it still is `expected` (else git refuses)."""
    return Command(("git", "-C", repo, "update-ref", "-m", f"commit: {message}", "HEAD", revision, expected),
                   changes=True)


def git_reset_file(repo: str, path: str) -> Command:
    """The index's entry for that file as HEAD has it (the working tree is left alone)."""
    return Command(("git", "-C", repo, "reset", "--quiet", "--", path), changes=True)


def local_hook(command: str) -> Command:
    """A command from the inventory (the operator wrote it), run by this machine's shell."""
    return Command(("sh", "-c", command), changes=True)


def git_tracked_files(repo: str) -> Command:
    """The files git tracks in the repository (run at its top), with submodules, NUL-separated."""
    return Command(("git", "-C", repo, "ls-files", "-z", "--recurse-submodules"))
