"""The runners of the host tasks (deploy actions, rollback, generations, status, verify,
history, gc, unlock, doctor, sudoers). Kept apart from tasks.py so that `invoke --list`
imports almost nothing."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from .. import inventory
from ..actions import access, generations, inspection, journal
from ..errors import NixtasksError, Refused
from ..fleet import engine, lock, operations
from ..models import Action, Report
from .options import Options, policy, reason
from .output import echo
from .session import deploy_request, prompter, session, with_report


def run_action(action: Action, opts: Options) -> Report:
    reason(opts)  # a bad --reason is refused before anything runs
    with session(opts, root=action.activates) as (inv, runner, hosts):
        request = deploy_request(opts, inv, hosts, action, result_links=None if opts.no_link else Path.cwd())
        return with_report(opts, lambda tools: engine.deploy(request, tools), runner)


def run_rollback(opts: Options, generation: int | None, boot: bool) -> Report:
    why = reason(opts)
    with session(opts, builds=False) as (inv, runner, hosts):
        request = operations.RollbackRequest(hosts, generation, boot, policy(inv, opts), why, opts.full_diff)
        return with_report(opts, lambda tools: operations.rollback(request, tools), runner)


def run_generations(opts: Options, as_json: bool) -> None:
    """Each host's generations, those that failed before (by the journals) marked."""
    here = journal.read_local(journal.deployer_journal_path())
    with session(opts, builds=False) as (_inv, runner, hosts):
        found = generations.show_generations(hosts, runner, here)
    if as_json:
        print(json.dumps({name: [g.as_json() for g in gens.generations] for name, gens in found.items()}, indent=2))
    else:
        print(generations.render_all(found))


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
    """What was done to the selected hosts (every host by default), newest last."""
    local = journal.read_local(journal.deployer_journal_path())
    with session(replace(opts, all_hosts=opts.all_hosts or not (opts.hosts or opts.tags)), root=False,
                 builds=False) as (_inv, runner, hosts):
        records = journal.history(hosts, runner, local, echo)
    if as_json:
        print(json.dumps([asdict(r) for r in records], indent=2))
    else:
        print(journal.render(records))


def run_gc(opts: Options, keep: int) -> None:
    with session(opts, builds=False) as (inv, runner, hosts):
        with_report(opts, lambda tools: operations.gc(hosts, keep, policy(inv, opts), tools), runner)


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
        findings = access.doctor(hosts, inv.flake, runner, inv.cache)
    print(access.render(findings))
    failed = [f for f in findings if not f.ok and not f.warning]
    if failed:
        raise NixtasksError(f"{len(failed)} problem(s), each with its fix above; first: {failed[0].host}: "
                            f"{failed[0].check}: {failed[0].detail}")


def print_sudoers(user: str, password: bool = False) -> None:
    inventory.user(user, "--user", "value")
    print(access.sudoers(user, password=password), end="")


