"""Sudo passwords: asked once (or once per user@host that has its own), checked on each host
while changing nothing, then handed to the runner."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from .. import inventory
from ..errors import NixtasksError, Refused, UsageError
from ..host.prompts import PASSWORD_FILE_VARIABLE, ask_password, has_terminal
from ..host.runner import ShRunner
from ..models import WORK_AT_ONCE, Host, Secret, SudoPassword, Target, at_once
from .options import Options
from .output import echo


def password_modes(opts: Options, hosts: tuple[Host, ...]) -> dict[Target, SudoPassword]:
    """The targets whose sudo gets a password, and whether theirs is shared or their own."""
    ask = opts.ask_sudo_password or inventory.env_bool(os.environ.get("NIXTASKS_ASK_SUDO_PASSWORD", "0"),
                                                        "NIXTASKS_ASK_SUDO_PASSWORD")
    modes: dict[Target, SudoPassword] = {}
    for host in hosts:
        mode = SudoPassword.ASK if ask and host.sudo_password is SudoPassword.NONE else host.sudo_password
        if host.target.sudo and mode is not SudoPassword.NONE:
            modes[host.target] = SudoPassword.PER_HOST if modes.get(host.target) is SudoPassword.PER_HOST else mode
    return modes


def read_password_file(path: str) -> Secret:
    """NIXTASKS_SUDO_PASSWORD_FILE: the password is its first line. Like ssh with a private key,
    refuse a file others may read."""
    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="utf-8") as handle:
            first = handle.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{PASSWORD_FILE_VARIABLE}={path}: cannot read it ({getattr(exc, 'strerror', None) or exc}); "
                         "give a file whose first line is the sudo password") from None
    if mode & 0o077:
        raise UsageError(f"{PASSWORD_FILE_VARIABLE}={path}: others may read it; chmod 600 {path}")
    if not first:
        raise UsageError(f"{PASSWORD_FILE_VARIABLE}={path}: its first line is empty; put the sudo password there")
    return Secret(first)


def give_sudo_passwords(opts: Options, hosts: tuple[Host, ...], runner: ShRunner) -> None:
    """Ask for the sudo passwords (once, or once per user@host that has its own), check each on
    its host while changing nothing, and hand them to the runner. A wrong one stops the run
    here, before anything changed on any host."""
    modes = password_modes(opts, hosts)
    if not modes:
        return
    file = os.environ.get(PASSWORD_FILE_VARIABLE)
    secrets_for: dict[Target, Secret] = {}
    if file:
        secret = read_password_file(file)
        secrets_for = {t: secret for t in modes}
    elif not has_terminal():
        raise Refused(f"a sudo password is wanted for {', '.join(map(str, modes))} and there is no terminal to ask "
                      f"on; set {PASSWORD_FILE_VARIABLE} to a file only you can read that holds it. Nothing was "
                      "changed")
    else:
        shared = [t for t, m in modes.items() if m is SudoPassword.ASK]
        if shared:
            names = ", ".join(map(str, shared))
            secret = Secret(ask_password(f"sudo password for {names}:"))
            secrets_for.update({t: secret for t in shared})
        for target in (t for t, m in modes.items() if m is SudoPassword.PER_HOST):
            secrets_for[target] = Secret(ask_password(f"sudo password for {target}:"))
    with ThreadPoolExecutor(max_workers=at_once(len(secrets_for), WORK_AT_ONCE)) as pool:
        verdicts = dict(zip(secrets_for, pool.map(lambda ts: runner.check_sudo_password(*ts), secrets_for.items())))
    refused = []
    for target, verdict in verdicts.items():
        if verdict == "ok":
            runner.set_sudo_password(target, secrets_for[target])
        elif verdict == "not needed":
            echo(f"note: {target} runs nixtasks' commands with sudo without a password; none is sent there")
        elif verdict == "wrong password":
            refused.append(f"{target}: sudo did not accept the password")
        else:
            refused.append(f"{target}: sudo with the password failed: {verdict}")
    if refused:
        how = f"fix the password in {PASSWORD_FILE_VARIABLE}" if file else "run again and type it carefully"
        raise NixtasksError(f"{'; '.join(refused)}. Nothing was changed on any host; {how}")


