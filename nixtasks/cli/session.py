"""One task invocation's surroundings: the inventory, the hosts it selects, a runner whose
ssh masters close at the end, the prompter, the live view and the report."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import inventory
from ..actions import secrets
from ..actions.plan import report_json
from ..errors import NixtasksError, UsageError
from ..fleet import engine, flow
from ..host import commands
from ..host.prompts import DRY_RUN, Prompter, prompter_for
from ..host.runner import Runner, ShRunner
from ..models import LOCAL, Action, Host, Report
from .options import Options, approved, builders_option, check_selection, chosen_cache, policy, reason, split_hosts
from .output import LOG, echo, output_to_log
from .render import progress_for
from .sudo import give_sudo_passwords


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
    # An option the inventory cannot serve (--cache with no [cache], a bad --builders) is refused
    # here, before anything runs; the request takes the values later.
    chosen_cache(inv, opts)
    builders_option(inv, opts)
    d = inv.defaults
    with ShRunner(ssh_config=d.ssh_config, ssh_extra=d.ssh_options, dry_run=opts.dry_run, echo=echo,
                  verbose=opts.verbose, connect_timeout=d.ssh_connect_timeout, alive_interval=d.ssh_alive_interval,
                  alive_count=d.ssh_alive_count, fast_fresh_kex=d.ssh_fast_confirmation) as runner:
        hosts = resolve_hosts(inv, opts, runner, builds=builds)
        if root:
            give_sudo_passwords(opts, hosts, runner)
        yield inv, runner, hosts


def prompter(opts: Options) -> Prompter:
    return DRY_RUN if opts.dry_run else prompter_for(approved(opts))


@contextmanager
def live_tools(opts: Options, runner: Runner, asker: Prompter | None = None) -> Iterator[flow.Tools]:
    """The engine's tools with the live view drawing (on a terminal). The prompter (`asker`, or
    the one the options give) is wrapped by the view: every question the run asks takes the live
    view off the screen until it is answered, so the question is never drawn over."""
    progress, view = progress_for(echo, logged=bool(LOG))
    with view:
        yield flow.Tools(runner, view.asking(asker or prompter(opts)), progress, echo)


def with_report(opts: Options, run: Callable[[flow.Tools], Report], runner: Runner) -> Report:
    """Run the engine with the live view (on a terminal) and print the report as JSON if asked,
    also when the run failed."""
    output_to_log(opts.json)
    try:
        with live_tools(opts, runner) as tools:
            report = flow.reported(run, tools)  # Ctrl-C anywhere: the report all the same
    except NixtasksError as exc:
        failed = getattr(exc, "report", None)
        if opts.json and isinstance(failed, Report):
            print(json.dumps(report_json(failed), indent=2))
        raise
    if opts.json:
        print(json.dumps(report_json(report), indent=2))
    return report




def deploy_request(opts: Options, inv: inventory.Inventory, hosts: tuple[Host, ...], action: Action, *,
                   full_diff: bool | None = None, result_links: Path | None = None) -> engine.DeployRequest:
    """The one place a deploy request is made from the command line and the inventory."""
    return engine.DeployRequest(
        action=action, hosts=hosts, flake=inv.flake, policy=policy(inv, opts), show_trace=opts.show_trace,
        nix_options=inv.defaults.nix_options + builders_option(inv, opts), reason=reason(opts),
        full_diff=opts.full_diff if full_diff is None else full_diff,
        allow_secrets=inv.defaults.allow_secrets + opts.allow_secrets, result_links=result_links, nix_flags=opts.nix,
        cache=chosen_cache(inv, opts) if action.activates else None)
