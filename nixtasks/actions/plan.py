"""Pure decisions about a deploy, and how a plan reads to a person."""

from __future__ import annotations

import shlex

from ..host.space import human
from ..models import Action, Delivery, GitState, Host, HostPlan, Plan, Report

VERBS = {
    Action.SWITCH: "Switch",
    Action.BOOT: "Make the boot entry of",
    Action.TEST: "Test-activate",
    Action.DRY_ACTIVATE: "Dry-activate",
}


def needs_approval(action: Action, host: Host, git: GitState) -> bool:
    """Remote activation always asks; local activation asks when the tree is dirty."""
    if not action.changes_host:
        return False
    return not host.is_local or git.dirty


def store_name(path: str | None) -> str:
    """`/nix/store/<hash>-nixos-system-web1-1.0` -> `nixos-system-web1-1.0`."""
    if not path:
        return "(none)"
    base = path.rsplit("/", 1)[-1]
    return base.split("-", 1)[1] if "-" in base else base


def approval_question(hp: HostPlan) -> str:
    where = "this machine" if hp.host.is_local else f"{hp.host.name} ({hp.host.target})"
    if hp.action is Action.BOOT:
        return f"Make {store_name(hp.new_system)} the boot entry of {where}?"
    return f"{VERBS[hp.action]} {where} to {store_name(hp.new_system)}?"


def fleet_question(action: Action, names: list[str]) -> str:
    """One question for the whole selection: "Switch web1, web2, db1 (3 hosts)?"."""
    verb = {Action.BOOT: "Set the boot entry of"}.get(action, VERBS.get(action, action.value))
    return f"{verb} {', '.join(names)} ({len(names)} host{'s' if len(names) != 1 else ''})?"


def diff_summary(diff: str) -> str:
    """`nix store diff-closures` in one line: how many changes, the first three."""
    lines = [line.strip() for line in diff.strip().splitlines() if line.strip()]
    more = f", and {len(lines) - 3} more (--diff shows all)" if len(lines) > 3 else ""
    return f"{len(lines)} change(s): {'; '.join(lines[:3])}{more}"


def render(plan: Plan, *, full_diff: bool = True) -> str:
    title = "rollback" if plan.git is None else plan.action.value
    lines = [f"Plan: {title} on {len(plan.hosts)} host(s)"]
    if plan.git is not None:
        lines.append(f"  git:      {plan.git.summary}")
    if plan.reason:
        lines.append(f"  reason:   {plan.reason}")
    if plan.nix_options:
        lines.append(f"  nix:      {shlex.join(plan.nix_options)}")
    for hp in plan.hosts:
        target = "this machine" if hp.host.is_local else str(hp.host.target)
        builder = f" (built on {hp.host.build_host})" if hp.host.build_host else ""
        lines += [f"  {hp.host.name} -> {target}", f"    action:  {hp.action.value}{builder}", *system_lines(hp),
                  f"    new:     {hp.new_system}{gen_text(hp.new_generation)}"]
        if hp.delivery is not None:
            lines.append(f"    copied:  {delivery_text(hp.delivery)}")
        same = unchanged_text(hp)
        if same:
            lines.append(f"    diff:    none ({same})")
        elif hp.closure_diff.strip() and not full_diff:
            lines.append(f"    diff:    {diff_summary(hp.closure_diff)}")
        elif hp.closure_diff.strip():
            lines.append("    diff:")
            lines += [f"      {d}" for d in hp.closure_diff.strip().splitlines()]
        elif hp.current_system:
            lines.append("    diff:    no package version changes")
    if plan.warnings:
        lines.append(f"  Nix warned {len(plan.warnings)} time(s):")
        lines += [f"    {w}" for w in plan.warnings]
    return "\n".join(lines)


def delivery_text(delivery: Delivery) -> str:
    """How a closure got to its host: "via cache http://... (12.0 MiB)", "direct (...)"."""
    how = f"via {delivery.source}" if delivery.source.startswith("cache ") else f"direct from the {delivery.source}"
    size = "nothing new" if delivery.bytes == 0 else human(delivery.bytes)
    return f"{how} ({size}){f'; {delivery.note}' if delivery.note else ''}"


def gen_text(number: int | None) -> str:
    return f" (generation {number})" if number is not None else ""


def system_lines(hp: HostPlan) -> list[str]:
    """What the host runs and what it boots, each with its own generation: one `now` line when
    they are the same system, else a `runs` and a `boots` line."""
    if hp.current_system and hp.current_system == hp.boot_system:
        return [f"    now:     {hp.current_system} (generation {hp.boot_generation}, runs and boots)"]
    if not hp.current_system and not hp.boot_system:
        return ["    now:     (no system activated yet)"]
    if not hp.current_system:
        runs = "(no system activated yet)"
    elif hp.running_generation is None:
        runs = f"{hp.current_system} (test-activated, no generation)"
    else:
        runs = f"{hp.current_system} (generation {hp.running_generation}, not the boot entry)"
    boots = f"{hp.boot_system}{gen_text(hp.boot_generation)}" if hp.boot_system else "(no boot entry yet)"
    return [f"    runs:    {runs}", f"    boots:   {boots}"]


def unchanged_text(hp: HostPlan) -> str:
    """Why a host's plan changes nothing of what `hp.action` changes ("" when it changes something)."""
    runs, boots = hp.current_system == hp.new_system, hp.boot_system == hp.new_system
    if hp.action is Action.BOOT:
        return "the host already boots this system" if boots else ""
    if not runs:
        return ""
    if hp.action.sets_profile and not boots:
        return f"the host already runs this system; the {hp.action.value} makes it the boot entry"
    return "the host already runs this system"


def render_git(git: GitState) -> list[str]:
    lines: list[str] = []
    if git.changes:
        lines.append(f"git: {len(git.changes)} uncommitted change(s) in the flake:")
        lines += [f"  {c}" for c in git.changes]
    if git.untracked:
        lines.append("git: not tracked, so the flake cannot see them (git add them if they matter):")
        lines += [f"  {u}" for u in git.untracked]
    return lines


def render_report(report: Report) -> str:
    """The closing table: host, outcome, generation before -> after, duration, what happened."""
    width = max([len(r.host) for r in report.results] + [4])
    outcome_width = max([len(r.outcome.value) for r in report.results] + [7])
    lines = [f"{'HOST'.ljust(width)}  {'OUTCOME'.ljust(outcome_width)}  {'GENERATION':12}  {'TIME':>6}  SYSTEM"]
    for r in report.results:
        gens = "-" if r.previous_generation is None and r.generation is None else \
            f"{r.previous_generation or '-'} -> {r.generation or '-'}"
        took = f"{r.duration:.1f}s" if r.duration else "-"
        lines.append(f"{r.host.ljust(width)}  {r.outcome.value.ljust(outcome_width)}  {gens:12}  {took:>6}  "
                     f"{store_name(r.new_system)}" + (f"  ({r.message})" if r.message else ""))
    through = [r.delivery for r in report.results if r.delivery and r.delivery.source.startswith("cache ")]
    if report.sent_bytes is not None and (through or any(r.delivery and r.delivery.note for r in report.results)):
        direct = sum(1 for r in report.results if r.delivery and not r.delivery.source.startswith("cache "))
        lines.append(f"sent from here: {human(report.sent_bytes)}; {len(through)} host(s) took their system from the "
                     f"cache, {direct} got a direct copy")
    return "\n".join(lines)


def report_json(report: Report) -> dict[str, object]:
    """`--json`: the report with each host's seconds per stage."""
    return {
        "action": report.action.value if isinstance(report.action, Action) else report.action,
        "ok": report.ok,
        "interrupted": report.interrupted,
        "hosts": [{
            "host": r.host, "outcome": r.outcome.value, "message": r.message,
            "system_before": r.previous_system, "system_after": r.new_system,
            "generation_before": r.previous_generation, "generation_after": r.generation,
            "duration": r.duration, "stages": {stage.value: seconds for stage, seconds in r.stages},
            "received_bytes": r.delivery.bytes if r.delivery else None,
            "received_from": r.delivery.source if r.delivery else None,
        } for r in report.results],
        "sent_bytes": report.sent_bytes,
    }
