"""What a host must grant nixtasks: the sudoers snippet for a non-root user, and the doctor
that checks ssh, sudo, Nix, copy trust, disk space and the git tree, printing each fix."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from ..errors import NixtasksError
from ..host import commands, gitstate, nixversion, space
from ..host.runner import SUDO_WANTS_PASSWORD, Runner
from ..models import LOCAL, SYSTEM_PROFILE, WORK_AT_ONCE, Action, Cache, Command, Host, Target, at_once
from .cache import read_key

ENV_PATHS = ("/run/current-system/sw/bin/env", "/usr/bin/env")  # NixOS, then FHS systems
LOW_SPACE = 1024**3

# Placeholders for the parts of a command that vary, and the sudoers regex each becomes.
# Anchored regexes (sudo >= 1.9.10), never `*` wildcards: in sudoers a `*` in the arguments
# matches across spaces and slashes, so `/nix/store/*/bin/...` would also allow
# `/nix/store/../../bin/sh -c ...`.
STORE, NUMBER, NUMBERS, ACTION = "\0store\0", "\0n\0", "\0ns\0", "\0action\0"
GENERATION, OWNER, NAME, URL = "\0gen\0", "\0owner\0", "\0name\0", "\0url\0"
PATTERNS = {
    STORE: r"/nix/store/[0-9a-z]{32}-[-+._?0-9A-Za-z\=]+",  # a store path: no slash, no space
    NUMBER: "[0-9]+",
    NUMBERS: "[0-9]+( [0-9]+)*",
    ACTION: "(switch|boot|test|dry-activate)",
    GENERATION: "([0-9]+|-)",
    OWNER: "[-A-Za-z0-9@._:+=,]+",  # fleet/lock.py's owner text
    NAME: "[-A-Za-z0-9._]+",  # a host's name in the inventory
    # a binary cache's URL (a substituter: the host's own keys decide what it accepts), one word
    URL: "(https?|s3|ssh|ssh-ng|file)://[][A-Za-z0-9@._:+=,/%~?&-]+",
}


def root_commands() -> list[Command]:
    """Every command nixtasks runs with sudo, with placeholders where values vary: built
    from the same builders the deploys use, so the snippet cannot fall behind them."""
    cmds = [commands.set_profile(STORE), commands.list_generations(), commands.switch_generation(0),
            commands.delete_generations([0]), commands.collect_garbage(), commands.journal_dir(commands.HOST_JOURNAL),
            commands.journal_append(commands.HOST_JOURNAL, ""), commands.release_lock(), commands.confirm_watchdog(),
            commands.reboot(), commands.follow_journal(), commands.release_lock(OWNER),
            commands.hold_gc_root(STORE, NUMBER), commands.release_gc_roots(1), commands.release_gc_roots(2),
            commands.fetch_from_cache(URL, STORE), commands.refresh_unit_map()]
    for lock in (commands.take_lock(OWNER, 1), commands.hold_lock(OWNER, 1)):
        cmds.append(replace(lock, argv=(*lock.argv[:-1], NUMBER)))
    cmds.append(commands.release_hold(OWNER))
    arm = commands.arm_watchdog(1, 1, STORE, STORE, Action.SWITCH, host=NAME, system=STORE)
    cmds.append(replace(arm, argv=(*arm.argv[:4], NUMBER, GENERATION, STORE, STORE, ACTION, NAME, STORE)))
    for system in (STORE, SYSTEM_PROFILE):
        for systemd in (True, False):
            cmds.append(commands.switch_to_configuration(system, Action.SWITCH, systemd=systemd))
    return cmds


def literal(text: str) -> str:
    """Text matched as itself: regex specials in brackets, sudoers specials escaped."""
    # `$` in brackets must be escaped for sudoers' own parser, which ends a regex at a `$`.
    # A backslash in brackets is literal to the regex, and `[\\]` is one to sudoers.
    special = {"$": "[\\$]", "\\": "[\\\\]"}
    return "".join(special.get(c) or (f"[{c}]" if c in ".+*?()[]{}|^" else f"\\{c}" if c in ",:=#!\"" else c)
                   for c in text)


def regex_word(word: str) -> str:
    return "".join(PATTERNS.get(part) or literal(part) for part in re.split("(\0[a-z]+\0)", word) if part)


def command_line(cmd: Command) -> str:
    """The arguments after `env` as one anchored sudoers regex."""
    argv = list(commands.on_host(cmd, sudo=False)[1:])  # without the leading `env`
    if argv[-2] == "--switch-generation":
        argv[-1] = NUMBER
    elif argv[-2] == "--delete-generations":
        argv[-1] = NUMBERS
    elif argv[-2].endswith("/bin/switch-to-configuration"):
        argv[-1] = ACTION
    return "^" + " ".join(regex_word(a) for a in argv) + "$"


def sudoers(user: str, *, password: bool = False) -> str:
    """The snippet. With `password`, sudo asks for the user's password for these commands
    (nixtasks gives it with --ask-sudo-password); without, it allows them without one."""
    lines = sorted({f"{env} {command_line(c)}" for c in root_commands() for env in ENV_PATHS})
    alias = ", \\\n    ".join(lines)
    how = "with the user's password (--ask-sudo-password)" if password else "sudo -n, no password"
    return (f"# nixtasks: what {user} may run as root, and nothing else ({how}).\n"
            f"# Needs sudo 1.9.10 or newer (regular expressions in arguments). Note that a user Nix\n"
            f"# trusts (trusted-users) can add any store path, which is root-equivalent by itself, and\n"
            f"# the watchdog's script (run as root) is given on standard input, which sudo cannot check.\n"
            f"Cmnd_Alias NIXTASKS = \\\n    {alias}\n"
            f"{user} ALL=(root) {'PASSWD' if password else 'NOPASSWD'}: NIXTASKS\n")


# --- doctor --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    host: str
    check: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False  # reported, but not a failure


def doctor_host(host: Host, runner: Runner, cache: Cache | None = None) -> list[Finding]:
    target = host.target
    name = host.name
    found: list[Finding] = []
    where = "this machine" if target.is_local else str(target)
    reach = runner.run(Command(("id", "-un")), target, check=False)
    if not reach.ok:
        err = reach.stderr
        if "Host key verification failed" in err or "No ED25519 host key is known" in err or "host key" in err:
            fix = (f"check the host's key fingerprint out of band, then: ssh-keyscan {target.address} >> "
                   "~/.ssh/known_hosts")
        elif "Permission denied" in err:
            fix = f"ssh-copy-id {target.ssh_destination}"
        else:
            fix = f"check that {target.address} is up and reachable: ssh {target.ssh_destination} true"
        detail = (err.strip().splitlines() or [f"exit {reach.exit_code}"])[-1]
        return [Finding(name, "ssh", False, f"{where}: {detail}", fix)]
    user = reach.stdout.strip()
    found.append(Finding(name, "ssh", True, f"{where}: batch mode, host key known, logged in as {user}"))
    if user == "root":
        found.append(Finding(name, "root", True, "the ssh user is root: no sudo needed"))
    else:
        found.append(sudo_finding(name, user, target, runner))
    nix, version = nix_findings(name, target, nixversion.HOST_FEATURES, runner)
    found += nix
    if user != "root":
        found.append(copy_trust(name, user, target, version, runner))
    if cache is not None:
        config = runner.run(Command(nixversion.config_show(version)), target, check=False)
        found += cache_findings(name, cache, config.stdout)
    for path in ("/nix/store", "/boot"):
        df = runner.run(commands.free_space(path), target, check=False)
        free = space.available_bytes(df.stdout) if df.ok else None
        if free is not None:
            found.append(Finding(name, f"space {path}", free >= LOW_SPACE, f"{space.human(free)} free",
                                 f"invoke gc --host {name} --keep 3"))
    return found


def sudo_finding(name: str, user: str, target: Target, runner: Runner) -> Finding:
    """Can the user run nixtasks' commands as root: without a password (`sudo -n`), or with
    the one given for this run (checked when it was given)?"""
    if runner.has_sudo_password(target):
        return Finding(name, "sudo", True, f"{user} runs nixtasks' commands with sudo and the password given "
                       "(it was checked on the host)")
    listing = commands.on_host(commands.list_generations(), sudo=False)
    probe = runner.run(Command(("sudo", "-n", "-l", *listing)), target, check=False)
    if probe.ok:
        return Finding(name, "sudo", True, f"{user} can run nixtasks' commands with sudo -n")
    said = (probe.stderr.strip().splitlines() or ["refused"])[-1]
    fix = (f"put the output of `invoke sudoers --user {user}` in /etc/sudoers.d/nixtasks (check it with visudo "
           "-cf), or on NixOS add it to security.sudo.extraConfig")
    if SUDO_WANTS_PASSWORD in probe.stderr:  # or not allowed at all: sudo asks before it tells
        return Finding(name, "sudo", False, f"{user} cannot run nixtasks' commands with sudo -n: it needs a "
                       f"password for sudo ({said})", f"{fix}; or, if its sudo is meant to take a password, give "
                       "it with --ask-sudo-password (asked once per run; NIXTASKS_SUDO_PASSWORD_FILE without a "
                       "terminal) or sudo_password = \"ask\" for the host in the inventory")
    return Finding(name, "sudo", False, f"{user} cannot run nixtasks' commands with sudo -n: {said}", fix)


def nix_findings(name: str, target: Target, features: tuple[nixversion.Feature, ...],
                 runner: Runner) -> tuple[list[Finding], nixversion.Version | None]:
    """Nix and its version, and a warning for each feature nixtasks uses that this Nix lacks."""
    out = runner.run(Command(("nix", "--version")), target, check=False)
    if not out.ok:
        return [Finding(name, "nix", False, "nix is not installed",
                        "install Nix (on NixOS it is always there); https://nixos.org/download")], None
    version = nixversion.parse(out.stdout)
    if version is None:
        return [Finding(name, "nix", False, f"`nix --version` printed {out.stdout.strip()[:80]!r}, not a Nix version",
                        "check which `nix` is first on the PATH", warning=True)], None
    found = [Finding(name, "nix", True, f"Nix {nixversion.text(version)}")]
    found += [Finding(name, "nix", False, f"Nix {nixversion.text(version)} has no {f.what}, which nixtasks uses "
                      f"for {f.needed_for}", f"upgrade Nix to {nixversion.short(f.since)} or newer",
                      warning=not f.fatal)
              for f in nixversion.missing(version, features)]
    return found, version


def copy_trust(name: str, user: str, target: Target, version: nixversion.Version | None, runner: Runner) -> Finding:
    """A non-root user's copies are accepted if Nix trusts the user (or the paths are signed)."""
    config = runner.run(Command(nixversion.config_show(version)), target, check=False).stdout
    groups = runner.run(Command(("id", "-Gn")), target, check=False).stdout.split()
    trusted = next((line.split("=", 1)[1].split() for line in config.splitlines()
                    if line.startswith("trusted-users")), [])
    ok = user in trusted or "*" in trusted or any(f"@{g}" in trusted for g in groups)
    return Finding(name, "copy trust", ok,
                   f"trusted-users = {' '.join(trusted) or '(none)'}: copies by {user} "
                   f"{'are accepted' if ok else 'are refused (lacks a valid signature)'}",
                   f"add {user} to trusted-users: in /etc/nix/nix.conf `trusted-users = root {user}`, or on NixOS "
                   f'`nix.settings.trusted-users = [ "{user}" ];`, then restart nix-daemon')


def cache_findings(name: str, cache: Cache, config: str) -> list[Finding]:
    """Whether a host takes the cache's paths: it must trust its key (nixtasks never relaxes
    that); it need not list the cache (nixtasks names it when the host fetches), but should."""
    settings = {key.strip(): value.split() for key, _, value in (line.partition("=") for line in config.splitlines())}
    keys = settings.get("trusted-public-keys", [])
    found = [Finding(name, "cache key", cache.public_key in keys,
                     f"it {'trusts' if cache.public_key in keys else 'does not trust'} the cache's key "
                     f"{cache.public_key.split(':')[0]}" + ("" if cache.public_key in keys else
                                                            ": it would refuse the cache's paths (and get direct "
                                                            "copies, or fail with --cache-only)"),
                     f'add to its configuration: nix.settings.trusted-public-keys = [ "{cache.public_key}" ];')]
    listed = cache.url in settings.get("substituters", []) or cache.url in settings.get("trusted-substituters", [])
    found.append(Finding(name, "cache", listed, f"{cache.url} is {'' if listed else 'not '}one of its substituters"
                         + ("" if listed else " (nixtasks names it when the host fetches a release; its own "
                            "rebuilds would not use it)"),
                         f'add to its configuration: nix.settings.substituters = [ "{cache.url}" ];', warning=True))
    if settings.get("require-sigs", ["true"]) != ["true"]:
        found.append(Finding(name, "signatures", False, "require-sigs = false: it accepts unsigned paths from any "
                             "substituter", "remove require-sigs = false from its Nix configuration", warning=True))
    return found


def key_finding(cache: Cache) -> Finding:
    try:
        read_key(cache)
    except NixtasksError as exc:
        return Finding("(deployer)", "cache key", False, str(exc).split("; ")[0], str(exc).split("; ", 1)[-1])
    return Finding("(deployer)", "cache key", True, f"the signing key is its owner's alone and matches "
                   f"{cache.public_key.split(':')[0]}; pushes go to {cache.push}")


def doctor(hosts: tuple[Host, ...], flake: str, runner: Runner, cache: Cache | None = None) -> list[Finding]:
    git = gitstate.read(runner, flake)
    found, _ = nix_findings("(deployer)", LOCAL, nixversion.DEPLOYER_FEATURES, runner)
    if cache is not None:
        found.append(key_finding(cache))
    found.append(Finding("(deployer)", "git", True, f"the flake's tree is at {git.summary}"))
    if git.changes:
        found.append(Finding("(deployer)", "git", False, f"{len(git.changes)} uncommitted change(s); deploys of "
                             "this machine will ask, and the systems record no revision",
                             "commit them: git status; git commit -a", warning=True))
    if git.untracked:
        found.append(Finding("(deployer)", "git", False, f"untracked, so the flake cannot see: "
                             f"{', '.join(git.untracked[:5])}", "git add them if they matter", warning=True))
    with ThreadPoolExecutor(max_workers=at_once(len(hosts), WORK_AT_ONCE)) as pool:
        for findings in pool.map(lambda h: doctor_host(h, runner, cache), hosts):
            found += findings
    return found


def render(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        mark = "ok  " if f.ok else "warn" if f.warning else "FAIL"
        lines.append(f"[{mark}] {f.host}: {f.check}: {f.detail}")
        if not f.ok:
            lines.append(f"       fix: {f.fix}")
    return "\n".join(lines)
