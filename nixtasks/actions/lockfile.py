"""The flake's lock file for update-deploy: refuse uncommitted changes to it, update inputs,
say what changed (per input, the old and new revision and date), restore it after a failed
build, commit it alone."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import NixtasksError, UsageError
from ..host import commands, gitstate
from ..host.runner import Runner
from ..models import LOCAL

LOCK = "flake.lock"
INPUT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class InputChange:
    name: str
    old: str  # "rev (date)", or "(new)"
    new: str  # "rev (date)", or "(removed)"


def flake_directory(flake: str) -> str:
    directory = gitstate.flake_dir(flake)
    if directory is None:
        raise UsageError(f"update-deploy updates a flake in a local directory, not {flake!r}; run it in your flake "
                         "repository")
    return directory


def describe(node: dict[str, Any] | None) -> str:
    """`abc123def456 (2026-11-29)` from a lock node: its revision, else its NAR hash."""
    if not node:
        return "(none)"
    locked = node.get("locked", {})
    ident = str(locked.get("rev") or locked.get("narHash") or "?")
    ident = ident[:12] if locked.get("rev") else ident.removeprefix("sha256-")[:12]
    modified = locked.get("lastModified")
    when = (datetime.fromtimestamp(int(modified), timezone.utc).strftime("%Y-%m-%d %H:%M")
            if isinstance(modified, int) else "no date")
    return f"{ident} ({when})"


def nodes(lock_text: str) -> dict[str, Any]:
    """The inputs of a lock file by name (the root's direct inputs), {} for no lock file."""
    if not lock_text.strip():
        return {}
    try:
        data = json.loads(lock_text)
        all_nodes = data["nodes"]
        root = all_nodes[data.get("root", "root")]
        return {name: all_nodes.get(ref) if isinstance(ref, str) else None
                for name, ref in root.get("inputs", {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise NixtasksError(f"{LOCK} is not a lock file nixtasks can read: {exc}") from exc


def changes(old_text: str, new_text: str) -> list[InputChange]:
    """Per input, what the update changed. Pure."""
    old, new = nodes(old_text), nodes(new_text)
    found = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if (before or {}).get("locked") != (after or {}).get("locked"):
            found.append(InputChange(name, describe(before) if name in old else "(new)",
                                     describe(after) if name in new else "(removed)"))
    return found


def read_lock(directory: str) -> str:
    path = Path(directory) / LOCK
    return path.read_text() if path.exists() else ""


def refuse_uncommitted(directory: str, runner: Runner) -> None:
    status = runner.run(commands.git_file_status(directory, LOCK), LOCAL)
    if status.stdout.strip():
        raise UsageError(f"{LOCK} has uncommitted changes ({status.stdout.strip()}); commit or discard them "
                         f"first (git -C {directory} diff -- {LOCK})")


def check_inputs(directory: str, inputs: tuple[str, ...]) -> None:
    known = nodes(read_lock(directory))
    for name in inputs:
        if not INPUT_NAME.match(name) or (known and name not in known):
            raise UsageError(f"--input {name!r}: the flake has no such input; it has {', '.join(sorted(known))}")


def update(flake: str, directory: str, before: str, inputs: tuple[str, ...], nix_options: tuple[str, ...],
           runner: Runner) -> tuple[str, list[InputChange]]:
    """`nix flake update` (or the named inputs): the diff of the lock file and what changed."""
    runner.run(commands.flake_update(flake.split("#")[0], inputs, nix_options), LOCAL, label="flake update",
               stream=True)
    diff = runner.run(commands.git_diff(directory, LOCK), LOCAL).stdout
    return diff, changes(before, read_lock(directory))


def restore(directory: str, previous: str) -> None:
    """The lock file as it was before the update (none, if there was none)."""
    path = Path(directory) / LOCK
    if previous:
        path.write_text(previous)
    else:
        path.unlink(missing_ok=True)


def commit(directory: str, message: str, runner: Runner) -> str:
    runner.run(commands.git_commit_file(directory, LOCK, message), LOCAL)
    return runner.run(commands.git_revision(directory), LOCAL).stdout.strip()
