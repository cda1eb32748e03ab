"""update-deploy: `nix flake update`, show what changed, then make the commit of the new lock
beside the branch and the engine's prepare from that commit (build every selected host,
probe, copy, diff), so the systems are exactly those of the commit that lands, with its
revision; the plan of the hosts whose system changes; then one question naming them (a
subset may be chosen), then the branch moves to that commit, then exactly the prepared
changes of the chosen hosts go out: as a canary when they include canary hosts, else as a
rolling deploy. Nothing is built or asked twice. A declined question, a failed build or
Ctrl-C before then leaves the branch where it was and restores flake.lock."""

from __future__ import annotations

from dataclasses import replace

from ..actions import lockfile, secrets
from ..actions.plan import store_name
from ..errors import NixtasksError, Refused
from ..fleet import engine, flow, pipeline
from ..fleet.pipeline import Change
from ..host import gitstate
from ..host.prompts import HOW_TO_APPROVE, AlwaysYes
from ..models import GitState, Outcome, Report
from . import canary, rolling

MESSAGE = "chore: update flake inputs"


def update_deploy(req: engine.DeployRequest, tools: flow.Tools, inputs: tuple[str, ...] = (),
                  message: str = MESSAGE, soak: float = 0.0) -> Report:
    runner, echo = tools.runner, tools.echo
    directory = lockfile.flake_directory(req.flake)
    if not tools.prompter.can_ask:  # before anything is touched
        raise Refused(f"update-deploy commits flake.lock and deploys it to {', '.join(h.name for h in req.hosts)}; "
                      f"there is no terminal to ask on; {HOW_TO_APPROVE}. Nothing was changed")
    top = lockfile.repository_top(directory, runner)
    lockfile.refuse_uncommitted(directory, runner)
    lockfile.check_inputs(directory, inputs)
    secrets.guard(req.flake, req.allow_secrets, runner)  # `nix flake update` copies the flake too
    left_out = gitstate.read(runner, req.flake).changes
    if left_out:  # built from the commit: what is not committed is not deployed either
        echo(f"git: {len(left_out)} uncommitted change(s) stay out of the commit and of what is deployed:")
        for line in left_out:
            echo(f"  {line}")
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
        pending = lockfile.pending_commit(directory, top, message, runner)
        at_commit = replace(req, flake=gitstate.at_revision(req.flake, top, pending.revision))
        # every selected host: built from that commit, probed, copied, diffed
        prep = engine.prepare(at_commit, tools, git=GitState(revision=pending.revision))
        lost = [r.host for r in prep.skipped if r.host in {h.name for h in req.hosts if h.canary}]
        if lost:  # (--skip-unreachable, --keep-going) without it, the update would go out as if it had no canary
            raise NixtasksError(f"the canary {', '.join(lost)} cannot be reached or its system could not be made, "
                                "and the update must not go out "
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
        lockfile.land(directory, pending, message, runner)
        revision, committed = pending.revision, True
    finally:
        if not committed:
            lockfile.restore(directory, before)  # Nix may also have rewritten it without a change
            if updated:
                echo("flake.lock restored; nothing was committed or deployed")
    lockfile.sync_index(directory, runner)
    canaries = [c.host.name for c in chosen.changes if c.host.canary]
    how = f"as a canary ({', '.join(canaries)} first)" if canaries else "as a rolling deploy"
    echo(f"committed flake.lock as {revision[:12]} ({message})"
         + (f"; deploying it {how}" if chosen.changes else "; no host to deploy it to"))
    if not chosen.changes:
        return flow.finish(engine.report(chosen, (), False), echo)
    # The one question above approved exactly these systems: the gates say so instead of asking.
    once = replace(tools, prompter=AlwaysYes("(approved with the update)"))
    chosen = engine.recommitted(chosen, tools, req.reason or f"update-deploy {revision[:12]}")
    try:
        return canary.go_out(chosen, canaries, once, soak) if canaries else rolling.go_out(chosen, once)
    finally:
        echo(f"update-deploy: commit {revision} (flake.lock) was the one deployed")


def up_to_date(change: Change) -> bool:
    return change.before.running == change.system == change.before.boot_path


def ask(prep: engine.Prepared, tools: flow.Tools, lock_text: str, soak: float) -> engine.Prepared:
    """The plan of the hosts whose system changes, then the one question naming them, all of
    them preselected in the subset checkbox. Returns the chosen hosts' changes, the others
    among the reported results; a no raises (nothing is committed)."""
    canaries = [c.host.name for c in prep.changes if c.host.canary]
    engine.show_plan(engine.with_policy(prep, rolling.policy(prep.request.policy)), tools, first=canaries)
    if canaries:
        tools.echo(canary.describe(prep, canaries, soak, then="if the canary is healthy"))
    names = ", ".join(c.host.name for c in prep.changes)
    how = f"as a canary ({', '.join(canaries)} first)" if canaries else "as a rolling deploy"
    go, left = engine.approve(prep, prep.changes, tools, preselect=True, question=(
        f"Commit {lock_text} and deploy it to {names}, {how}?"))
    if engine.declined(left) or not go:
        raise Refused("not approved; nothing was committed or deployed")
    return replace(prep, changes=tuple(go), skipped=prep.skipped + left)
