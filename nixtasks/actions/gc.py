"""Garbage collection: delete old system generations (never the running one or the one that
boots), then collect garbage and say what was freed."""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import CommandFailed, DeployFailed, Refused
from ..host import commands
from ..host.generations import HostGenerations, numbers_text, to_delete
from ..host.prompts import HOW_TO_APPROVE, Prompter
from ..host.runner import Runner
from ..models import Host, HostResult, Outcome, Report
from .journal import Journal, deployer_journal_path
from .plan import render_report
from .rollback import read_generations

Echo = Callable[[str], None]
FREED = re.compile(r"^\d+ store paths deleted, .* freed$", re.M)


def gc(hosts: tuple[Host, ...], keep: int, runner: Runner, prompter: Prompter, echo: Echo,
       journal_path: Path | None = None) -> Report:
    journal = Journal(runner, journal_path or deployer_journal_path(), None, "", echo)
    if not runner.dry_run and not prompter.can_ask:
        for host in hosts:
            journal.write(host, "gc", "refused", on_host=False, message="no terminal and no approval")
        raise Refused(f"gc on {', '.join(h.name for h in hosts)} deletes generations and needs an approval; "
                      f"{HOW_TO_APPROVE}. Nothing was deleted")
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        found: list[HostGenerations] = list(pool.map(lambda h: read_generations(h, runner), hosts))
    results = []
    for host, gens in zip(hosts, found):
        doomed = to_delete(gens, keep)
        kept = [g for g in gens.generations if g not in doomed]
        echo(f"{host.name}: delete generation(s) {numbers_text(doomed)}; keep {numbers_text(kept)} "
             f"(the newest {keep}, the running one and the one that boots), then collect garbage")
        if not prompter.confirm(f"Delete {len(doomed)} generation(s) on {host.name} and collect garbage?"):
            results.append(HostResult(host.name, "gc", Outcome.DECLINED, message="declined"))
            journal.write(host, "gc", "declined", message="declined; nothing deleted")
            continue
        try:
            if doomed:
                runner.run(commands.delete_generations([g.number for g in doomed]), host.target, label=host.name,
                           stream=True)
            out = runner.run(commands.collect_garbage(), host.target, label=host.name)
        except CommandFailed as exc:
            results.append(HostResult(host.name, "gc", Outcome.FAILED, message=str(exc)))
            journal.write(host, "gc", "failed", message=str(exc))
            continue
        if runner.dry_run:
            results.append(HostResult(host.name, "gc", Outcome.OK, message="dry run: nothing deleted"))
            continue
        freed = FREED.search(out.stdout + out.stderr)
        message = freed[0] if freed else "collected"
        echo(f"{host.name}: deleted generation(s) {numbers_text(doomed)}; {message}")
        results.append(HostResult(host.name, "gc", Outcome.OK, message=message))
        journal.write(host, "gc", "ok", message=f"deleted generations {numbers_text(doomed)}; {message}")
    report = Report("gc", tuple(results))
    echo(render_report(report))
    failed = report.failed()
    if failed:
        raise DeployFailed(f"{failed[0].host}: {failed[0].message}", report)
    if any(r.outcome is Outcome.DECLINED for r in results):
        raise Refused("gc declined; nothing was deleted there")
    return report
