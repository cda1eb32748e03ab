"""Wires one task invocation: inventory, hosts, runner and prompter, then the deploy.
Kept apart from tasks.py so that `invoke --list` imports almost nothing."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import inventory
from ..actions import access, inspection, journal, rollback, secrets
from ..actions.plan import report_json
from ..errors import NixtasksError, Refused, UsageError
from ..fleet import engine, lock
from ..host import commands, gitstate
from ..host.prompts import DRY_RUN, PASSWORD_FILE_VARIABLE, Prompter, ask_password, has_terminal, prompter_for
from ..host.runner import Runner, ShRunner
from ..models import LOCAL, Action, Host, Limit, NixFlags, Policy, Report, Secret, SudoPassword, Target
from .render import progress_for


@dataclass(frozen=True)
class Options:
    """What every action task accepts."""

    hosts: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    all_hosts: bool = False  # every host in the inventory
    target_host: str | None = None
    build_host: str | None = None
    sudo: bool | None = None
    show_trace: bool = False
    dry_run: bool = False
    yes: bool = False
    reason: str = ""
    inventory: str | None = None
    verbose: bool = False
    json: bool = False
    full_diff: bool = False
    allow_secrets: tuple[str, ...] = ()
    ask_sudo_password: bool = False  # also NIXTASKS_ASK_SUDO_PASSWORD=1
    no_link: bool = False  # build: no ./result link
    nix: NixFlags = NixFlags()  # --option, --override-input, --impure, -L, --max-jobs, --cores
    policy: PolicyFlags = field(default_factory=lambda: PolicyFlags())


@dataclass(frozen=True)
class PolicyFlags:
    """The fleet options given on the command line; None: the inventory's [policy] decides."""

    parallel: int | None = None
    batch_size: str | None = None
    batches: str | None = None
    pause: float | None = None
    max_fail_percentage: float | None = None
    rollback_batch_on_failure: bool | None = None
    checks: bool | None = None
    rollback: bool | None = None
    watchdog: bool | None = None
    confirm_timeout: float | None = None
    skip_unreachable: bool | None = None
    keep_going: bool | None = None
    copy_timeout: float | None = None
    activation_timeout: float | None = None


BATCH_SIZE_EXAMPLE = "--batch-size 5 or --batch-size 20%"
ONE_BATCH_SIZE = "--batch-size: give one size like 5 or 20%; for several, use --batches 1,5,20%"


def number(value: str | None, flag: str, lowest: float = 0, *, whole: bool = True) -> Any:
    """A number from the command line, or one clear error naming the option."""
    if value is None:
        return None
    try:
        parsed: float = int(value) if whole else float(value)
    except ValueError:
        kind = "a whole number" if whole else "a number of seconds"
        raise UsageError(f"{flag}: {value!r} is not {kind}; e.g. {flag} {int(lowest) or 5}") from None
    if not math.isfinite(parsed):
        raise UsageError(f"{flag}: {value} is not a finite number; give one like {flag} {max(int(lowest), 5)}")
    if parsed < lowest:
        raise UsageError(f"{flag}: {value} is too small; give at least {lowest:g}")
    return parsed


def policy_flags(*, parallel: str | None = None, batch_size: str | None = None, batches: str | None = None,
                 pause: str | None = None, max_fail_percentage: str | None = None,
                 rollback_batch_on_failure: bool = False, no_checks: bool = False, no_rollback: bool = False,
                 no_watchdog: bool = False, confirm_timeout: str | None = None,
                 skip_unreachable: bool = False, keep_going: bool = False, copy_timeout: str | None = None,
                 activation_timeout: str | None = None) -> PolicyFlags:
    """The command line's fleet options, checked; an option not given stays None."""
    if batch_size is not None and batches is not None:
        raise UsageError("give --batch-size or --batches, not both")
    if batch_size is not None and len(inventory.parse_sizes(batch_size, "--batch-size", BATCH_SIZE_EXAMPLE)) != 1:
        raise UsageError(ONE_BATCH_SIZE)
    if batches is not None:
        inventory.parse_sizes(batches, "--batches")
    return PolicyFlags(parallel=number(parallel, "--parallel", 1), batch_size=batch_size, batches=batches,
                       pause=number(pause, "--pause", 0, whole=False),
                       max_fail_percentage=number(max_fail_percentage, "--max-fail-percentage", 0, whole=False),
                       rollback_batch_on_failure=True if rollback_batch_on_failure else None,
                       checks=False if no_checks else None, rollback=False if no_rollback else None,
                       watchdog=False if no_watchdog else None,
                       confirm_timeout=number(confirm_timeout, "--confirm-timeout", 1, whole=False),
                       skip_unreachable=True if skip_unreachable else None,
                       keep_going=True if keep_going else None,
                       copy_timeout=limit(copy_timeout, "copy_timeout"),
                       activation_timeout=limit(activation_timeout, "activation_timeout"))


NIX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def name_and_value(given: str, flag: str, what: str, example: str) -> tuple[str, str]:
    """`NAME=VALUE` or `NAME VALUE` (invoke's flags take one value each, nix's --option two)."""
    name, sep, value = given.partition("=")
    if not (sep and NIX_NAME.fullmatch(name)):
        name, _, value = given.strip().partition(" ")
        value = value.strip()
    if not NIX_NAME.fullmatch(name):
        raise UsageError(f"{flag} {given!r}: give {what}=VALUE (or '{what} VALUE'), e.g. {flag} {example}")
    return name, value


def nix_flags(*, impure: bool = False, option: Any = None, override_input: Any = None,
              print_build_logs: bool = False, max_jobs: str | None = None, cores: str | None = None) -> NixFlags:
    """The command line's Nix options, checked; Nix still has the last word on their values."""
    if max_jobs is not None and max_jobs != "auto":
        max_jobs = str(number(max_jobs, "--max-jobs", 0))
    overrides = tuple(name_and_value(o, "--override-input", "INPUT", "nixpkgs=path:/src/nixpkgs")
                      for o in override_input or ())
    if any(not ref for _name, ref in overrides):
        raise UsageError("--override-input: give the input and a flake reference, e.g. "
                         "--override-input nixpkgs=path:/src/nixpkgs")
    return NixFlags(options=tuple(name_and_value(o, "--option", "NAME", "substituters=''") for o in option or ()),
                    override_inputs=overrides, impure=impure, print_build_logs=print_build_logs,
                    max_jobs=max_jobs, cores=number(cores, "--cores", 0))


def limit(value: str | None, setting: str) -> Limit | None:
    """A step's time limit from the command line (--copy-timeout for copy_timeout)."""
    seconds = number(value, f"--{setting.replace('_', '-')}", 1, whole=False)
    return None if seconds is None else Limit(seconds, setting)


def policy(inv: inventory.Inventory, opts: Options) -> Policy:
    """[policy], then [policy.tags.TAG] of the selected tag, then the command line."""
    flags = opts.policy
    chosen = inv.policy_for(split_hosts(opts.tags))
    values: dict[str, Any] = {k: v for k, v in asdict(flags).items()
                              if v is not None and k not in ("batch_size", "batches")}
    if flags.batch_size is not None and flags.batches is not None:  # also for PolicyFlags made by hand
        raise UsageError("give --batch-size or --batches, not both")
    if flags.batch_size is not None:
        values["batches"] = inventory.parse_sizes(flags.batch_size, "--batch-size", BATCH_SIZE_EXAMPLE)
        if len(values["batches"]) != 1:
            raise UsageError(ONE_BATCH_SIZE)
    if flags.batches is not None:
        values["batches"] = inventory.parse_sizes(flags.batches, "--batches")
    if values.get("parallel", 1) < 1:
        raise UsageError("--parallel: at least 1 host at a time")
    if not 0 <= values.get("max_fail_percentage", 0) <= 100:
        raise UsageError("--max-fail-percentage: a percentage from 0 to 100")
    if values.get("pause", 0) < 0:
        raise UsageError("--pause: seconds, 0 or more")
    if not 1 <= values.get("confirm_timeout", 30) <= 3600:
        raise UsageError("--confirm-timeout: seconds from 1 to 3600")
    for setting in inventory.LIMITS:
        if values.get(setting, 1) > 7 * 86400:
            raise UsageError(f"--{setting.replace('_', '-')}: at most {7 * 86400} seconds (a week)")
    return replace(chosen, **values)


LOG: list[bool] = []  # set by a run whose output goes to a log (see `output_to_log`)


def echo(line: str) -> None:
    stream = sys.stdout if LOG else sys.stderr
    stream.write(line + "\n")  # one write: lines of parallel hosts never interleave
    stream.flush()


def output_to_log(as_json: bool) -> None:
    """`invoke switch | tee deploy.log` at a terminal: the plan, the hosts' lines and the report
    go to standard output, which the log (and, through tee, the terminal) gets, in plain lines;
    the questions go to the terminal itself. Only then: standard error is the terminal and
    standard output is not, and carries no JSON report. A script that captures both (`> log
    2>&1`, CI) keeps everything on standard error as before."""
    if not as_json and sys.stderr.isatty() and not sys.stdout.isatty() and not LOG:
        LOG.append(True)


def split_hosts(values: tuple[str, ...]) -> tuple[str, ...]:
    """--host a --host b,c -> (a, b, c)."""
    names = [n.strip() for v in values for n in v.split(",")]
    return tuple(dict.fromkeys(n for n in names if n))


def check_names(values: tuple[str, ...], flag: str, known: str) -> None:
    """Each --host/--tag value names something: an empty one (`--host "$HOSTS"` with HOSTS
    unset) must never fall back to this machine."""
    for value in values:
        items = [n.strip() for n in value.split(",")]
        if not any(items):
            raise UsageError(f"{flag} {value!r} names no {flag[2:]}; give {flag} NAME ({known}), or, to act on "
                             f"this machine, leave out {flag}")
        if not all(items):
            raise UsageError(f"{flag} {value!r} has an empty name in its list; separate names by single commas, "
                             f"like {flag} a,b ({known})")


def some(names: list[str], shown: int = 8) -> str:
    """A list for a one-line message: its first names, and how many more."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more if names else "none"


def check_selection(inv: inventory.Inventory, opts: Options) -> None:
    """Refuse a selection that is empty, or two that contradict each other."""
    tags = sorted({t for e in inv.hosts.values() for t in e.tags})
    check_names(opts.hosts, "--host", f"hosts in {inv.source}: {some(list(inv.hosts))}")
    check_names(opts.tags, "--tag", f"tags in {inv.source}: {some(tags)}")
    if opts.all_hosts and (opts.hosts or opts.tags):
        given = ", ".join(f"{flag} {', '.join(values)}" for flag, values in (("--host", opts.hosts),
                                                                                 ("--tag", opts.tags)) if values)
        raise UsageError(f"--all and {given} both select hosts (--all: every host in {inv.source}); give one of them")
    if opts.target_host and (opts.tags or opts.all_hosts):
        raise UsageError(f"--target-host {opts.target_host} deploys one configuration to one machine; give it with a "
                         "single --host NAME, not with --tag or --all")


def check_reason(reason: str) -> str:
    if any(ord(ch) < 32 for ch in reason):
        raise UsageError("--reason: control characters such as newlines are not allowed; give one line")
    if len(reason) > 500:
        raise UsageError("--reason: at most 500 characters")
    return reason


def approved(opts: Options) -> bool:
    return opts.yes or inventory.env_bool(os.environ.get("NIXTASKS_YES", "0"), "NIXTASKS_YES")


def resolve_hosts(inv: inventory.Inventory, opts: Options, runner: Runner, *,
                  builds: bool = True) -> tuple[Host, ...]:
    """The hosts to act on. `builds`: the task evaluates each host's configuration in the
    flake, so this machine, when it is the host, must be one of the flake's."""
    check_selection(inv, opts)
    names = split_hosts(opts.hosts)
    if opts.all_hosts or opts.tags:
        tags = set(split_hosts(opts.tags))
        chosen = [n for n, e in inv.hosts.items() if opts.all_hosts or tags & set(e.tags)]
        if not chosen:
            raise UsageError(f"no host in {inv.source} has the tag(s) {', '.join(sorted(tags))}" if tags
                             else f"{inv.source} lists no hosts")
        names = tuple(dict.fromkeys((*names, *chosen)))
    if opts.target_host and not names:
        raise UsageError("--target-host needs --host NAME (which configuration to deploy there)")
    if not names:
        local = inventory.resolve_local(inv, socket.gethostname(), build_host=opts.build_host, sudo=opts.sudo)
        if builds and local.name not in inv.hosts:
            check_this_machine(inv, local.name, opts, runner)
        return (local,)
    if opts.target_host and len(names) > 1:
        raise UsageError("--target-host names one machine; give a single --host with it")
    for name in names:
        inventory.check_host_name(name)
    unknown = [n for n in names if n not in inv.hosts]
    if unknown:  # evaluating copies the flake into the store: the secrets guard first
        secrets.guard(inv.flake, inv.defaults.allow_secrets + opts.allow_secrets, runner)
        check_flake_defines(inv, unknown, runner)
    return tuple(inventory.resolve_host(inv, n, target_host=opts.target_host, build_host=opts.build_host,
                                        sudo=opts.sudo) for n in names)


def flake_defines(inv: inventory.Inventory, runner: Runner) -> set[str]:
    """The names of the flake's nixosConfigurations."""
    result = runner.run(commands.nix_eval_config_names(inv.flake, inv.defaults.nix_options), LOCAL)
    try:
        return set(json.loads(result.stdout or "[]"))
    except ValueError as exc:
        raise UsageError(f"the flake's nixosConfigurations could not be listed: {result.stdout[:100]!r}") from exc


def check_this_machine(inv: inventory.Inventory, name: str, opts: Options, runner: Runner) -> None:
    """No selection means this machine: building it is only possible if the flake defines it
    (else Nix ends in a trace about a missing attribute)."""
    secrets.guard(inv.flake, inv.defaults.allow_secrets + opts.allow_secrets, runner)  # before Nix copies it
    defined = flake_defines(inv, runner)
    if name not in defined:
        raise UsageError(f"this machine ({name}) is not one of the flake's nixosConfigurations "
                         f"({', '.join(sorted(defined)) or 'none'}); name a host (--host NAME, make host/NAME/ACTION), "
                         f"use --all (make fleet/ACTION), or mark a host `local = true` in {inv.source}")


def check_flake_defines(inv: inventory.Inventory, names: list[str], runner: Runner) -> None:
    """A host the inventory does not list is fine if the flake defines it."""
    defined = flake_defines(inv, runner)
    missing = [n for n in names if n not in defined]
    if missing:
        raise UsageError(f"unknown host {', '.join(missing)}: not in {inv.source} and not in the flake's "
                         f"nixosConfigurations ({', '.join(sorted(defined)) or 'none'})")


@contextmanager
def session(opts: Options, *, root: bool = True,
            builds: bool = True) -> Iterator[tuple[inventory.Inventory, Runner, tuple[Host, ...]]]:
    """The inventory, a runner (its ssh masters closed at the end) and the hosts to act on.
    `root`: the task runs commands as root on the hosts, so sudo passwords are asked for.
    `builds`: the task evaluates the hosts' configurations (see resolve_hosts)."""
    inv = inventory.load(opts.inventory)
    d = inv.defaults
    with ShRunner(ssh_config=d.ssh_config, ssh_extra=d.ssh_options, dry_run=opts.dry_run, echo=echo,
                  verbose=opts.verbose, connect_timeout=d.ssh_connect_timeout, alive_interval=d.ssh_alive_interval,
                  alive_count=d.ssh_alive_count, fast_fresh_kex=d.ssh_fast_confirmation) as runner:
        hosts = resolve_hosts(inv, opts, runner, builds=builds)
        if root:
            give_sudo_passwords(opts, hosts, runner)
        yield inv, runner, hosts


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
    with ThreadPoolExecutor(max_workers=min(16, len(secrets_for))) as pool:
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


def prompter(opts: Options) -> Prompter:
    return DRY_RUN if opts.dry_run else prompter_for(approved(opts))


def reason(opts: Options) -> str:
    return check_reason(opts.reason or os.environ.get("NIXTASKS_REASON", ""))


def run_action(action: Action, opts: Options) -> Report:
    why = reason(opts)
    with session(opts, root=action.activates) as (inv, runner, hosts):
        request = engine.DeployRequest(action, hosts, inv.flake, policy(inv, opts), opts.show_trace,
                                       inv.defaults.nix_options, why, opts.full_diff,
                                       inv.defaults.allow_secrets + opts.allow_secrets,
                                       result_links=None if opts.no_link else Path.cwd(), nix_flags=opts.nix)
        return with_report(opts, lambda tools: engine.deploy(request, tools), runner)


def run_rollback(opts: Options, generation: int | None, boot: bool) -> Report:
    why = reason(opts)
    with session(opts, builds=False) as (inv, runner, hosts):
        request = engine.RollbackRequest(hosts, generation, boot, policy(inv, opts), why, opts.full_diff)
        return with_report(opts, lambda tools: engine.rollback(request, tools), runner)


@contextmanager
def live_tools(opts: Options, runner: Runner, asker: Prompter | None = None) -> Iterator[engine.Tools]:
    """The engine's tools with the live view drawing (on a terminal). The prompter (`asker`, or
    the one the options give) is wrapped by the view: every question the run asks takes the live
    view off the screen until it is answered, so the question is never drawn over."""
    progress, view = progress_for(echo, logged=bool(LOG))
    with view:
        yield engine.Tools(runner, view.asking(asker or prompter(opts)), progress, echo)


def with_report(opts: Options, run: Callable[[engine.Tools], Report], runner: Runner) -> Report:
    """Run the engine with the live view (on a terminal) and print the report as JSON if asked,
    also when the run failed."""
    output_to_log(opts.json)
    try:
        with live_tools(opts, runner) as tools:
            report = run(tools)
    except NixtasksError as exc:
        failed = getattr(exc, "report", None)
        if opts.json and isinstance(failed, Report):
            print(json.dumps(report_json(failed), indent=2))
        raise
    if opts.json:
        print(json.dumps(report_json(report), indent=2))
    return report


def run_generations(opts: Options, as_json: bool) -> None:
    """Each host's generations, those that failed before (by the journals) marked."""
    here = journal.read_local(journal.deployer_journal_path())
    with session(opts, builds=False) as (_inv, runner, hosts):
        found = rollback.show_generations(hosts, runner, here)
    if as_json:
        print(json.dumps({name: [g.as_json() for g in gens.generations] for name, gens in found.items()}, indent=2))
    else:
        print(rollback.render_all(found))


def run_status(opts: Options, as_json: bool) -> list[inspection.StatusRow]:
    if not (opts.hosts or opts.tags):
        opts = replace(opts, all_hosts=True)  # status is read-only: the whole fleet by default
    with session(opts, root=False) as (inv, runner, hosts):
        rows = inspection.status(hosts, inv.flake, inv.defaults.nix_options, runner, echo)
    if as_json:
        print(json.dumps([r.as_json() for r in rows], indent=2))
    else:
        inspection.render_status(rows)
    unreachable = inspection.unreachable_error(rows)
    if unreachable:  # the table is shown, but what it does not know must not pass for "all is well"
        raise NixtasksError(unreachable)
    return rows


def run_verify(opts: Options) -> None:
    with session(opts, root=False) as (inv, runner, hosts):
        verdicts = inspection.verify(hosts, inv.flake, inv.defaults.nix_options, runner, echo)
    print(inspection.render_verdicts(verdicts))
    bad = [v for v in verdicts if v.problems]
    if bad:
        raise NixtasksError("; ".join(f"{v.host}: {v.problems[0]}" + (f" (and {len(v.problems) - 1} more)"
                                                                      if len(v.problems) > 1 else "")
                                      for v in bad))


def run_history(opts: Options, as_json: bool) -> None:
    """The records of the machines the inventory's hosts are: each host's own journal, and the
    deployer's records of that machine (by its /etc/machine-id: another repository's host of
    the same name is another machine). The deployer's records from before machine ids are
    shown, marked: hiding them would lose a journal's history at an upgrade."""
    local = journal.read_local(journal.deployer_journal_path())
    with session(replace(opts, all_hosts=opts.all_hosts or not (opts.hosts or opts.tags)), root=False,
                 builds=False) as (_inv, runner, hosts):
        def records_of(host: Host) -> list[journal.Record]:
            cmds = [commands.read_file(journal.HOST_JOURNAL), commands.read_file(MACHINE_ID)]
            results = runner.run_all(cmds, host.target, check=False, keep_going=True)
            if results[-1].exit_code == 255 or len(results) < len(cmds):
                echo(f"warning: {host.name}: unreachable, so which machine it is is not known; showing the "
                     f"deployer's records of every machine called {host.name}")
                return [r for r in local if r.host == host.name]
            machine = results[1].stdout.strip() if results[1].ok else ""
            own = journal.parse_lines(results[0].stdout) if results[0].ok else []
            # The deployer's first: records of one second keep the order it wrote them in.
            if not machine:
                return [*(r for r in local if r.host == host.name), *own]
            return [*journal.of_machine(local, host.name, machine), *own]

        with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
            found = list(pool.map(records_of, hosts))
    records = journal.finished(journal.merge(*found))
    if as_json:
        print(json.dumps([asdict(r) for r in records], indent=2))
    else:
        print(journal.render(records))


MACHINE_ID = "/etc/machine-id"


def run_gc(opts: Options, keep: int) -> None:
    if keep < 1:
        raise UsageError("--keep must be at least 1")
    with session(opts, builds=False) as (inv, runner, hosts):
        with_report(opts, lambda tools: engine.gc(hosts, keep, policy(inv, opts), tools), runner)


def run_unlock(opts: Options) -> None:
    """Show who holds each host's deploy lock and remove it after a confirmation."""
    with session(opts, builds=False) as (_inv, runner, hosts):
        asker = prompter(opts)
        for host in hosts:
            held_by = lock.holder(host, runner)
            if not held_by:
                echo(f"{host.name}: not locked")
                continue
            echo(f"{host.name}: locked by {held_by}")
            if asker.confirm(f"Remove the deploy lock of {host.name} (held by {held_by})? Only if that deploy "
                             "is gone"):
                if not lock.release(host, runner):
                    raise NixtasksError(f"{host.name}: the lock could not be removed; check `systemctl status "
                                        f"nixtasks-lock.service` on the host")
                echo(f"{host.name}: unlocked")
            else:
                raise Refused(f"{host.name}: the lock was kept")


def run_doctor(opts: Options) -> None:
    with session(opts, builds=False) as (inv, runner, hosts):
        findings = access.doctor(hosts, inv.flake, runner)
    print(access.render(findings))
    failed = [f for f in findings if not f.ok and not f.warning]
    if failed:
        raise NixtasksError(f"{len(failed)} problem(s), each with its fix above; first: {failed[0].host}: "
                            f"{failed[0].check}: {failed[0].detail}")


def print_sudoers(user: str, password: bool = False) -> None:
    inventory.user(user, "--user", "value")
    print(access.sudoers(user, password=password), end="")


# --- recipes ---------------------------------------------------------------------------------


def needs_selection(opts: Options, recipe: str) -> None:
    if not (opts.hosts or opts.tags or opts.all_hosts):
        raise UsageError(f"{recipe} needs hosts: --host NAME, --tag TAG or --all (make {recipe} HOSTS=... or TAG=...)")


def run_recipe(opts: Options, recipe: Callable[[engine.DeployRequest, engine.Tools], Report],
               action: Action = Action.SWITCH) -> Report:
    why = reason(opts)
    with session(opts) as (inv, runner, hosts):
        request = engine.DeployRequest(action, hosts, inv.flake, policy(inv, opts), opts.show_trace,
                                       inv.defaults.nix_options, why, opts.full_diff,
                                       inv.defaults.allow_secrets + opts.allow_secrets, nix_flags=opts.nix)
        return with_report(opts, lambda tools: recipe(request, tools), runner)


def run_canary(opts: Options, canaries: str | None, soak: str | None) -> Report:
    from ..recipes import canary

    needs_selection(opts, "canary")
    named = split_hosts((canaries,)) if canaries else ()
    seconds = number(soak, "--soak", 0, whole=False) or 0.0
    return run_recipe(opts, lambda req, tools: canary.canary(req, tools, named, seconds))


def run_rolling(opts: Options) -> Report:
    from ..recipes import rolling

    needs_selection(opts, "rolling")
    return run_recipe(opts, rolling.rolling)


def run_blue_green(opts: Options, to: str | None) -> Report:
    from ..recipes import blue_green

    inv = inventory.load(opts.inventory)
    groups = inv.blue_green.groups
    if not to:
        raise UsageError(f"blue-green needs --to GROUP, the idle group to deploy to"
                         f"{' (' + ' or '.join(groups) + ')' if groups else ''}")
    if groups and to not in groups:
        raise UsageError(f"--to {to}: not one of the groups in [blue_green] groups ({', '.join(groups)})")
    if opts.hosts or opts.tags or opts.all_hosts:
        raise UsageError("blue-green deploys the group given by --to; leave out --host, --tag and --all")
    settings = inv.blue_green
    return run_recipe(replace(opts, tags=(to,)), lambda req, tools: blue_green.blue_green(
        req, tools, to, settings.switch_traffic, settings.reboot_timeout))


def run_update_deploy(opts: Options, inputs: tuple[str, ...], message: str, soak: str | None) -> Report:
    from ..recipes import update_deploy

    if not message.strip() or any(ord(ch) < 32 for ch in message):
        raise UsageError("--message: one line of text, like \"chore: update flake inputs\"")
    seconds = number(soak, "--soak", 0, whole=False) or 0.0
    names = split_hosts(inputs)
    opts = update_deploy_selection(opts, inventory.load(opts.inventory))
    return run_recipe(opts, lambda req, tools: update_deploy.update_deploy(req, tools, names, message, seconds))


def update_deploy_selection(opts: Options, inv: inventory.Inventory) -> Options:
    """The command line's hosts, else the inventory's [recipes.update-deploy], else (asked on a
    terminal, where every host with a changed system is named) the whole inventory. Without
    a question to show them, nothing is deployed to hosts nobody named."""
    if opts.hosts or opts.tags or opts.all_hosts:
        return opts
    default = inv.recipes.get("update-deploy")
    if default:
        return replace(opts, hosts=default.hosts, tags=default.tags)
    how = ("name the hosts: --host NAME, --tag TAG or --all (make update-deploy HOSTS=... or TAG=...), or set "
           'a default in nixtasks.toml: [recipes.update-deploy] tags = ["web"]')
    if not prompter(opts).can_ask:
        raise Refused(f"update-deploy needs an approval and there is no terminal to ask on; pass --yes and {how}. "
                      "Nothing was changed")
    if approved(opts) or opts.dry_run:
        raise UsageError(f"update-deploy --yes deploys without asking, so it does not pick the hosts itself; {how}")
    return replace(opts, all_hosts=True)


def run_stage(opts: Options, plan_file: str, action: str) -> None:
    from ..recipes import stage

    needs_selection(opts, "stage")
    try:
        chosen = Action(action)
    except ValueError:
        raise UsageError(f"--action {action!r}: stage plans a switch, boot or test") from None
    if chosen not in (Action.SWITCH, Action.BOOT, Action.TEST):
        raise UsageError(f"--action {action}: stage plans a switch, boot or test")
    why = reason(opts)
    with session(opts, root=False) as (inv, runner, hosts):  # copies and diffs: nothing as root
        request = engine.DeployRequest(chosen, hosts, inv.flake, policy(inv, opts), opts.show_trace,
                                       inv.defaults.nix_options, why, True,
                                       inv.defaults.allow_secrets + opts.allow_secrets, nix_flags=opts.nix)
        # Staging changes nothing a host runs, so it never asks.
        with live_tools(opts, runner, DRY_RUN if opts.dry_run else prompter_for(True)) as tools:
            stage.stage(request, tools, Path(plan_file))


def run_apply(opts: Options, plan_file: str | None) -> Report:
    from ..actions import seal
    from ..recipes import stage

    plan_file = plan_file or "nixtasks-plan.json"
    path = Path(plan_file)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"{plan_file}: cannot read the plan ({exc.strerror}); make one with `invoke stage`") from None
    plan = stage.parse_plan(text, plan_file, seal.load_key(seal.key_path(), make=False))
    if opts.hosts or opts.tags or opts.all_hosts:
        raise UsageError("apply deploys the hosts of its plan; leave out --host, --tag and --all")
    return run_recipe(replace(opts, hosts=tuple(plan.hosts)), lambda req, tools: stage.apply(req, tools, plan),
                      plan.action)


def run_emergency(opts: Options, follow: str | None) -> Report:
    from ..recipes import emergency

    needs_selection(opts, "emergency")
    seconds = number(follow, "--follow", 0, whole=False)
    return run_recipe(opts, lambda req, tools: emergency.emergency(req, tools, 60.0 if seconds is None else seconds))


# --- adopting nixtasks in a flake repository ----------------------------------------------


def flake_configurations(runner: Runner, flake: str = ".") -> list[str]:
    result = runner.run(commands.nix_eval_config_names(str(Path(flake).resolve())), LOCAL, label="eval",
                        stream=True, echo_stdout=False)
    try:
        names = json.loads(result.stdout or "[]")
    except ValueError as exc:
        raise NixtasksError(f"the flake's nixosConfigurations could not be listed: {result.stdout[:100]!r}") from exc
    usable = [n for n in names if isinstance(n, str) and inventory.HOST_NAME.fullmatch(n)]
    if len(usable) < len(names):
        echo(f"warning: left out (not a host name nixtasks accepts): {', '.join(map(str, set(names) - set(usable)))}")
    return usable


def write_new(path: Path, text: str) -> bool:
    """Write a file that does not exist yet; never overwrite one."""
    if path.exists():
        echo(f"kept {path} (it exists; nixtasks never overwrites a file)")
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    echo(f"wrote {path}")
    return True


def inventory_text(names: list[str]) -> str:
    hosts = "".join(f'\n[hosts.{json.dumps(n) if "." in n else n}]\ntarget = "{n}"  # [user@]address to ssh to\n'
                    for n in names)
    return ('# nixtasks inventory: see https://pypi.org/project/nixtasks/ (README: "Inventory reference")\n'
            '[defaults]\nflake = "."\n# ssh_user = "deploy"   # non-root users get `sudo -n` for the steps that need '
            'root\n# checks = [ { http = "http://{address}/health" }, { unit = "sshd.service" } ]\n' + hosts)


def run_init() -> None:
    """tasks.py, the thin Makefile and nixtasks.toml for the flake repository here."""
    from importlib.resources import files

    if not Path("flake.nix").is_file():
        raise UsageError("no flake.nix here: run `nixtasks init` at the top of your flake repository")
    with ShRunner(echo=echo) as runner:
        names = flake_configurations(runner)
    write_new(Path("tasks.py"), "# nixtasks' tasks: `invoke --list` shows them.\n"
                                "from nixtasks.tasks import ns  # noqa: F401\n")
    write_new(Path("Makefile"), files("nixtasks.cli").joinpath("user.mk").read_text())
    write_new(Path("nixtasks.toml"), inventory_text(names))
    echo(f"hosts from the flake's nixosConfigurations: {', '.join(names) or 'none'}")
    echo("next: set each host's target in nixtasks.toml, then `invoke doctor --all`, then a first "
         "`invoke build --all` (nothing is activated without your approval)")


def run_ci_workflow(path: str | None) -> None:
    """A GitHub Actions workflow that builds every host's system on push and pull request. It
    goes to the repository's top (GitHub reads workflows only there), building the flake in
    its directory."""
    from ..actions import ci

    if not Path("flake.nix").is_file():
        raise UsageError("no flake.nix here: run it in your flake's directory")
    with ShRunner(echo=echo) as runner:
        names = flake_configurations(runner)
        top = gitstate.toplevel(runner, str(Path.cwd()))
    if not names:
        raise UsageError("the flake has no nixosConfigurations to build")
    rel = os.path.relpath(Path.cwd(), top) if top else "."
    target = Path(path) if path else Path(top or ".") / ci.PATH
    if write_new(target, ci.workflow(names, "." if rel == "." else f"./{rel}")):
        echo("it builds every host on push and pull request (on x86_64 runners), and never deploys; commit it to "
             "turn it on")
