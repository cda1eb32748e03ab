"""update-deploy: `nix flake update`, show what changed, build every selected host with the
new lock before asking, ask once, commit flake.lock alone, then deploy it: as a canary when
the selection has canary hosts, else as a rolling deploy. A failed build restores flake.lock
and commits nothing."""

from __future__ import annotations

from dataclasses import replace

from ..actions import lockfile, secrets
from ..errors import Refused
from ..fleet import engine
from ..host.prompts import HOW_TO_APPROVE, AlwaysYes
from ..models import Action, Report
from . import canary, rolling

MESSAGE = "chore: update flake inputs"


def update_deploy(req: engine.DeployRequest, tools: engine.Tools, inputs: tuple[str, ...] = (),
                  message: str = MESSAGE, soak: float = 0.0) -> Report:
    runner, echo = tools.runner, tools.echo
    directory = lockfile.flake_directory(req.flake)
    canaries = [h.name for h in req.hosts if h.canary]
    how = f"as a canary ({', '.join(canaries)} first)" if canaries else "as a rolling deploy"
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
        engine.deploy(replace(req, action=Action.BUILD), tools)  # every selected host, with the new lock
        names = ", ".join(h.name for h in req.hosts)
        if not tools.prompter.confirm(f"Commit flake.lock ({len(changed)} input(s) updated) and deploy it to "
                                      f"{names}, {how}?"):
            raise Refused("not approved; nothing was committed or deployed")
        revision = lockfile.commit(directory, message, runner)
        committed = True
    finally:
        if not committed:
            lockfile.restore(directory, before)  # Nix may also have rewritten it without a change
            if updated:
                echo("flake.lock restored; nothing was committed or deployed")
    echo(f"committed flake.lock as {revision[:12]} ({message}); deploying it {how}")
    once = replace(tools, prompter=AlwaysYes("(approved with the update)"))  # asked once, above
    deploy = replace(req, reason=req.reason or f"update-deploy {revision[:12]}")
    try:
        return canary.canary(deploy, once, soak=soak) if canaries else rolling.rolling(deploy, once)
    finally:
        echo(f"update-deploy: commit {revision} (flake.lock) was the one deployed")
