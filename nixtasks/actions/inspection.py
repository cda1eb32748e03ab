"""Status and verify: what hosts run, whether it is what the flake at HEAD builds, failed
units, the error journal and the inventory's health checks. Reads only; changes nothing."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..host import commands, gitstate
from ..host.facts import Facts, read_facts
from ..host.runner import Runner
from ..models import LOCAL, READS_AT_ONCE, WORK_AT_ONCE, Echo, GitState, Host, at_once
from .checks import label, run_check, ssh_address
from .plan import store_name


def flake_at_head(flake: str, git: GitState, toplevel: str | None) -> str:
    """The flake as committed: a dirty working tree is not what HEAD builds."""
    if git.revision is None or not git.dirty or toplevel is None:
        return flake
    return gitstate.at_revision(flake, toplevel, git.revision)


def expected_systems(hosts: tuple[Host, ...], flake: str, nix_options: tuple[str, ...], runner: Runner,
                     echo: Echo) -> tuple[dict[str, str], GitState]:
    """What the flake at HEAD builds for each configuration: one evaluation, nothing built."""
    git = gitstate.read(runner, flake)
    toplevel = gitstate.toplevel(runner, flake)
    ref = flake_at_head(flake, git, toplevel)
    configs = list(dict.fromkeys(h.config for h in hosts))
    result = runner.run(commands.nix_eval_systems(ref, configs, nix_options=nix_options), LOCAL, check=False)
    if not result.ok:
        echo(f"warning: cannot evaluate the flake at HEAD, so drift is unknown: {result.stderr.strip()[-200:]}")
        return {}, git
    try:
        return {c: v["out"] for c, v in json.loads(result.stdout).items()}, git
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}, git


# --- status --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusRow:
    host: str
    reachable: bool
    generation: int | None
    system: str
    flake: str  # up to date, drifted, unknown
    revision: str  # matches HEAD, differs, unknown
    failed_units: tuple[str, ...]
    error: str = ""
    running_generation: int | None = None  # the generation that runs; None: none does (a `test`), or nothing runs
    boots: str = ""  # the boot profile's system

    @property
    def test_activated(self) -> bool:
        """Runs a system that is no generation of its profile: the next boot does not run it."""
        return bool(self.system) and self.running_generation is None

    def as_json(self) -> dict[str, object]:
        """An unreachable host's failed units are not known: null, not an empty list. `generation`
        is the boot profile's; `running_generation` the one that runs (null after a `test`)."""
        return {"host": self.host, "reachable": self.reachable, "generation": self.generation,
                "system": self.system or None, "running_generation": self.running_generation,
                "test_activated": self.test_activated, "boot_system": self.boots or None,
                "flake": self.flake, "revision": self.revision,
                "failed_units": list(self.failed_units) if self.reachable else None, "error": self.error or None}

    def generation_cell(self) -> str:
        """The generation that runs, and the one that boots when it is another."""
        if not self.reachable:
            return "-"
        runs = ("-" if not self.system else "test-activated" if self.running_generation is None
                else str(self.running_generation))
        if self.system and self.system == self.boots:
            return runs
        return f"{runs} (boots {self.generation})" if self.generation is not None else runs


def compare(facts: Facts, expected: str | None) -> str:
    if not facts.reachable or not expected or not facts.running:
        return "unknown"
    return "up to date" if facts.running == expected else "drifted"


def revision_state(facts: Facts, git: GitState) -> str:
    if not facts.reachable or not facts.revision or facts.revision == "unknown" or git.revision is None:
        return "unknown"
    return "matches HEAD" if facts.revision == git.revision else f"differs ({facts.revision[:12]})"


def status(hosts: tuple[Host, ...], flake: str, nix_options: tuple[str, ...], runner: Runner,
           echo: Echo) -> list[StatusRow]:
    with ThreadPoolExecutor(max_workers=at_once(len(hosts) + 1, READS_AT_ONCE)) as pool:
        expected_future = pool.submit(expected_systems, hosts, flake, nix_options, runner, echo)
        facts = list(pool.map(lambda h: read_facts(h, runner), hosts))
        expected, git = expected_future.result()
    return [StatusRow(h.name, f.reachable, f.generation, f.running, compare(f, expected.get(h.config)),
                      revision_state(f, git), f.failed_units, f.error, f.running_generation, f.boot_path)
            for h, f in zip(hosts, facts)]


def render_status(rows: list[StatusRow]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="nixtasks status")
    for column in ("host", "reachable", "generation", "system", "flake at HEAD", "revision", "failed units"):
        table.add_column(column)
    for r in rows:
        table.add_row(r.host, "yes" if r.reachable else "[red]no[/red]", r.generation_cell(),
                      store_name(r.system) if r.system else "-",
                      {"drifted": "[yellow]drifted[/yellow]"}.get(r.flake, r.flake), r.revision,
                      failed_units_cell(r))
    # Not a terminal (CI, a pipe): wide enough that store paths are not cut.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def failed_units_cell(row: StatusRow) -> str:
    if not row.reachable:
        return "unknown"
    return f"[red]{', '.join(row.failed_units)}[/red]" if row.failed_units else "none"


def unreachable_error(rows: list[StatusRow]) -> str:
    """The one error line of a status that could not read every host ("" when it could): the
    hosts named, with ssh's word on the first."""
    down = [r for r in rows if not r.reachable]
    if not down:
        return ""
    if len(down) == 1:
        return f"{down[0].error}; so its system and failed units are unknown"
    return (f"{', '.join(r.host for r in down)} cannot be reached ({down[0].error}); so their systems and failed "
            "units are unknown")


# --- verify --------------------------------------------------------------------------------


@dataclass
class Verdict:
    host: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def verify(hosts: tuple[Host, ...], flake: str, nix_options: tuple[str, ...], runner: Runner,
           echo: Echo) -> list[Verdict]:
    expected, _git = expected_systems(hosts, flake, nix_options, runner, echo)
    with ThreadPoolExecutor(max_workers=at_once(len(hosts), WORK_AT_ONCE)) as pool:
        return list(pool.map(lambda h: verify_host(h, expected.get(h.config), runner), hosts))


def verify_host(host: Host, expected: str | None, runner: Runner) -> Verdict:
    verdict = Verdict(host.name)
    facts = read_facts(host, runner)
    if not facts.reachable:  # the error names the host already; the verdict's line does too
        verdict.problems.append(facts.error.removeprefix(f"{host.name}: "))
        return verdict
    runs = ("" if not facts.running or facts.running == facts.boot_path else
            ", runs a test-activated system (no generation)" if facts.running_generation is None else
            f", runs generation {facts.running_generation}")
    verdict.notes.append(f"nixos-version {facts.version or '(none)'}, boots generation {facts.generation or '-'}"
                         f"{runs}, systemd {facts.state or 'unknown'}")
    if not facts.running:
        verdict.problems.append("no system is activated (/run/current-system is missing)")
    elif facts.running != facts.boot_path:
        verdict.problems.append(f"runs {facts.running} but boots {facts.boot_path or 'nothing'}")
    if expected and facts.running and facts.running != expected:
        verdict.problems.append(f"drifted: runs {facts.running}, but the flake at HEAD builds {expected}")
    elif not expected:
        verdict.notes.append("drift unknown (the flake could not be evaluated)")
    if facts.failed_units:
        verdict.problems.append(f"failed units: {', '.join(facts.failed_units)}")
    errors = runner.run(commands.error_journal(5), host.target, check=False).stdout.strip()
    if errors:
        indented = "\n".join(f"      {e}" for e in errors.splitlines())
        verdict.notes.append(f"last errors in this boot's journal:\n{indented}")
    address = ssh_address(host, runner)
    for check in host.checks:
        ok, detail = run_check(check, host, address, runner)
        (verdict.notes if ok else verdict.problems).append(f"{label(check, host, address)}: {detail}")
    return verdict


def render_verdicts(verdicts: list[Verdict]) -> str:
    lines = []
    for v in verdicts:
        lines.append(f"{v.host}: {'ok' if not v.problems else 'PROBLEMS'}")
        lines += [f"  - {p}" for p in v.problems]
        lines += [f"    {n}" for n in v.notes]
    return "\n".join(lines)
