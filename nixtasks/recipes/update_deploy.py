"""update-deploy: `nix flake update`, show what changed, then the engine's prepare with the new
lock (build every selected host, probe, copy, diff) and the plan of the hosts whose system
changes; then one question naming them (a subset may be chosen), then commit flake.lock
alone, then deploy exactly the prepared changes of the chosen hosts: as a canary when they
include canary hosts, else as a rolling deploy. Nothing is built or asked twice. A declined
question, a failed build or Ctrl-C before the commit restores flake.lock and commits nothing."""

from __future__ import annotations

from dataclasses import replace

from ..actions import lockfile, secrets
from ..actions.plan import store_name
from ..errors import NixtasksError, Refused
from ..fleet import engine, pipeline
from ..fleet.pipeline import Change
from ..host.prompts import HOW_TO_APPROVE, AlwaysYes
from ..models import Outcome, Report
from . import canary, rolling

MESSAGE = "chore: update flake inputs"


def update_deploy(req: engine.DeployRequest, tools: engine.Tools, inputs: tuple[str, ...] = (),
                  message: str = MESSAGE, soak: float = 0.0) -> Report:
    runner, echo = tools.runner, tools.echo
    directory = lockfile.flake_directory(req.flake)
    if not tools.prompter.can_ask:  # before anything is touched
        raise Refused(f"update-deploy commits flake.lock and deploys it to {', '.join(h.name for h in req.hosts)}; "
                      f"there is no terminal to ask on; {HOW_TO_APPROVE}. Nothing was changed")
    lockfile.refuse_uncommitted(directory, runner)
    lockfile.check_inputs(directory, inputs)
    secrets.guard(req.flake, req.allow_secrets, runner)  # `nix flake update` copies the flake too
    before = lockfile.read_lock(directory)
    committed = updated = False
    try:  # until flake.lock is committed, every way out puts it back as it was
        diff, changed = lockfile.update(req.flake, directory, before, inputs, req.nix_options, runner)
        updated = bool(changed)
        if not changed:
            echo("flake.lock: no input changed; nothing to deploy")
            return Report("update-deploy")
        echo(diff.rstrip())
        echo(f"{len(changed)} input(s) updated:")
        for change in changed:
            echo(f"  {change.name}: {change.old} -> {change.new}")
        prep = engine.prepare(req, tools)  # every selected host: built with the new lock, probed, copied, diffed
        lost = [r.host for r in prep.skipped if r.host in {h.name for h in req.hosts if h.canary}]
        if lost:  # (--skip-unreachable) without it, the update would go out as if it had no canary
            raise NixtasksError(f"the canary {', '.join(lost)} cannot be reached, and the update must not go out "
                                "without it; nothing was committed or deployed. Bring it back, or leave it out of "
                                "the selection")
        moving = tuple(c for c in prep.changes if not up_to_date(c))
        current = tuple(pipeline.unchanged(c, Outcome.OK, "up to date: it already runs and boots the new system")
                        for c in prep.changes if up_to_date(c))
        for result in current:
            echo(f"{result.host}: up to date (runs {store_name(result.new_system)}); not asked about")
        lock_text = f"flake.lock ({len(changed)} input(s) updated)"
        chosen = replace(prep, changes=moving, skipped=prep.skipped + current)
        if moving:
            chosen = ask(chosen, tools, lock_text, soak)
        elif not tools.prompter.confirm(f"No selected host's system changes. Commit {lock_text} anyway?"):
            raise Refused("not approved; nothing was committed")
        revision = lockfile.commit(directory, message, runner)
        committed = True
    finally:
        if not committed:
            lockfile.restore(directory, before)  # Nix may also have rewritten it without a change
            if updated:
                echo("flake.lock restored; nothing was committed or deployed")
    canaries = [c.host.name for c in chosen.changes if c.host.canary]
    how = f"as a canary ({', '.join(canaries)} first)" if canaries else "as a rolling deploy"
    echo(f"committed flake.lock as {revision[:12]} ({message})"
         + (f"; deploying it {how}" if chosen.changes else "; no host to deploy it to"))
    if not chosen.changes:
        return engine.finish(engine.report(chosen, (), False), echo)
    # The one question above approved exactly these systems: the gates say so instead of asking.
    once = replace(tools, prompter=AlwaysYes("(approved with the update)"))
    chosen = engine.recommitted(chosen, tools, req.reason or f"update-deploy {revision[:12]}")
    try:
        return canary.go_out(chosen, canaries, once, soak) if canaries else rolling.go_out(chosen, once)
    finally:
        echo(f"update-deploy: commit {revision} (flake.lock) was the one deployed")


def up_to_date(change: Change) -> bool:
    return change.before.running == change.system == change.before.boot_path


def ask(prep: engine.Prepared, tools: engine.Tools, lock_text: str, soak: float) -> engine.Prepared:
    """The plan of the hosts whose system changes, then the one question naming them, all of
    them preselected in the subset checkbox. Returns the chosen hosts' changes, the others
    among the reported results; a no raises (nothing is committed)."""
    canaries = [c.host.name for c in prep.changes if c.host.canary]
    engine.show_plan(prep, tools, rolling.policy(prep.request.policy))
    if canaries:
        tools.echo(canary.describe(prep, canaries, soak, then="if the canary is healthy"))
    names = ", ".join(c.host.name for c in prep.changes)
    how = f"as a canary ({', '.join(canaries)} first)" if canaries else "as a rolling deploy"
    go, left = engine.approve(prep, prep.changes, tools, preselect=True, question=(
        f"Commit {lock_text} and deploy it to {names}, {how}?"))
    if engine.declined(left) or not go:
        raise Refused("not approved; nothing was committed or deployed")
    return replace(prep, changes=tuple(go), skipped=prep.skipped + left)
