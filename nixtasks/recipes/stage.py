"""stage and apply: the staged deployment, made exact. `stage` builds the selection, copies
it, shows each host's closure diff and writes a plan file (the git revision, and per host the
store path and the system it runs now). `apply PLANFILE` deploys exactly those store paths,
without evaluating again, after one approval, and refuses when a host no longer runs the
system the plan saw (someone deployed in between)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..actions import seal
from ..errors import NixtasksError, UsageError
from ..fleet import engine, flow
from ..inventory import HOST_NAME
from ..models import Action, GitState, Report

VERSION = 2  # 2: sealed (actions/seal.py); a version 1 plan has no seal and is refused


@dataclass(frozen=True)
class StagedHost:
    system: str  # what apply activates
    running: str  # what the host ran when the plan was made ("" for nothing)
    generation: int | None


@dataclass(frozen=True)
class StagedPlan:
    action: Action
    git_revision: str | None
    git_dirty: bool
    created: str
    hosts: dict[str, StagedHost]

    def as_json(self) -> dict[str, Any]:
        return {"version": VERSION, "action": self.action.value, "git_revision": self.git_revision,
                "git_dirty": self.git_dirty, "created": self.created,
                "hosts": {name: {"system": h.system, "running": h.running, "generation": h.generation}
                          for name, h in self.hosts.items()}}


def parse_plan(text: str, source: str, key: bytes) -> StagedPlan:
    """A plan file, checked against its seal, then field by field: it names store paths that
    will be activated."""
    def bad(what: str) -> UsageError:
        return UsageError(f"{source}: {what}; make a new one with `invoke stage`")

    try:
        data = json.loads(text)
    except ValueError as exc:
        raise bad(f"not a plan file ({exc})") from exc
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise bad(f"not a version {VERSION} plan file (a sealed one)")
    wrong = seal.mismatches(data, key)
    if wrong:
        raise UsageError(f"{source}: not applied, it is not the plan that was staged: {'; '.join(wrong)}. Nothing "
                         "was changed on any host; stage it again: invoke stage")
    try:
        action = Action(data.get("action"))
    except ValueError as exc:
        raise bad(f"unknown action {data.get('action')!r}") from exc
    if action not in (Action.SWITCH, Action.BOOT, Action.TEST):
        raise bad(f"{action.value} is not something apply does")
    hosts = data.get("hosts")
    if not isinstance(hosts, dict) or not hosts:
        raise bad("it names no hosts")
    staged = {}
    for name, entry in hosts.items():
        if not isinstance(name, str) or not HOST_NAME.fullmatch(name) or not isinstance(entry, dict):
            raise bad(f"host {name!r} is not valid")
        system, running, generation = entry.get("system"), entry.get("running"), entry.get("generation")
        if not isinstance(system, str) or not system.startswith("/nix/store/") or "/" in system[11:]:
            raise bad(f"{name}: {system!r} is not a store path")
        if not isinstance(running, str) or not (generation is None or isinstance(generation, int)):
            raise bad(f"{name}: what it ran is not recorded")
        staged[name] = StagedHost(system, running, generation)
    return StagedPlan(action, data.get("git_revision"), bool(data.get("git_dirty")), str(data.get("created")), staged)


def stage(req: engine.DeployRequest, tools: flow.Tools, plan_file: Path) -> StagedPlan:
    prep = engine.prepare(replace(req, full_diff=True), tools, as_root=False)  # copies and diffs only
    engine.show_plan(prep, tools)
    plan = StagedPlan(req.action, prep.git.revision, prep.git.dirty,
                      datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      {c.host.name: StagedHost(c.system, c.before.running, c.before.generation) for c in prep.changes})
    content = plan.as_json()
    content["seal"] = seal.seal(content, seal.load_key(seal.key_path(), make=True))
    plan_file.write_text(json.dumps(content, indent=2) + "\n")
    for left_out in prep.skipped:
        tools.echo(f"warning: not in the plan: {left_out.host} ({left_out.message})")
    tools.echo(f"plan written to {plan_file}: {len(plan.hosts)} host(s), each closure already on its host. "
               f"Apply exactly these systems with: invoke apply {plan_file}")
    return plan


def apply(req: engine.DeployRequest, tools: flow.Tools, plan: StagedPlan) -> Report:
    """`req.hosts` are the plan's hosts, resolved from the inventory."""
    req = replace(req, action=plan.action)
    prep = engine.prepare(req, tools, systems={name: h.system for name, h in plan.hosts.items()})
    stale = [f"{c.host.name} ran {plan.hosts[c.host.name].running or 'nothing'} (boot generation "
             f"{plan.hosts[c.host.name].generation}) when the plan was made and runs {c.before.running or 'nothing'} "
             f"(boot generation {c.before.generation}) now" for c in prep.changes
             if (c.before.running, c.before.generation) != (plan.hosts[c.host.name].running,
                                                            plan.hosts[c.host.name].generation)]
    if stale:
        raise NixtasksError(f"{'; '.join(stale)}: someone deployed in between, so the plan is stale; nothing was "
                            "changed on any host. Stage it again: invoke stage")
    tools.echo(f"applying the plan of {plan.created} (git {(plan.git_revision or 'none')[:12]}"
               f"{', dirty' if plan.git_dirty else ''}): exactly its store paths, nothing evaluated")
    # What goes out was built from the plan's revision, whatever HEAD is now: so say the plan
    # line and both journals.
    prep = engine.with_git(prep, GitState(plan.git_revision, plan.git_dirty))
    engine.show_plan(prep, tools)
    go, left = engine.approve(prep, prep.changes, tools)
    results, interrupted = engine.activate(prep, go, tools)
    return flow.finish(engine.report(prep, left + results, interrupted), tools.echo)
