"""The flake's lock file for update-deploy: refuse uncommitted changes to it, update inputs,
say what changed (per input, the old and new revision and date), make its commit beside the
branch (what is built and asked about), put that commit on the branch after the yes, or
restore the file after a no or a failed build."""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import NixtasksError, UsageError
from ..host import commands, gitstate
from ..host.runner import Runner
from ..models import LOCAL

LOCK = "flake.lock"
FLAKE = "flake.nix"  # what `nix flake update` reads: the lock must fit the committed one
INPUT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Pending:
    """flake.lock's commit, made but not yet on the branch."""

    top: str  # the repository's top directory
    parent: str  # HEAD when it was made: the branch moves only from there
    revision: str


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


def repository_top(directory: str, runner: Runner) -> str:
    top = gitstate.toplevel(runner, directory)
    if top is None:
        raise UsageError(f"update-deploy commits {LOCK}, and {directory} is not in a git repository; run "
                         "`git init` and commit the flake first")
    return top


def refuse_uncommitted(directory: str, runner: Runner) -> None:
    lines = [line for line in runner.run(commands.git_file_status(directory, LOCK, FLAKE), LOCAL).stdout.splitlines()
             if line.strip()]
    if lines:
        files, status = [line[3:] for line in lines], "; ".join(line.strip() for line in lines)
        have = "has" if len(files) == 1 else "have"
        raise UsageError(f"{' and '.join(files)} {have} uncommitted changes ({status}); commit or discard them "
                         f"first (git -C {directory} diff -- {LOCK} {FLAKE})")


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


def pending_commit(directory: str, top: str, message: str, runner: Runner) -> Pending:
    """The commit of HEAD's tree with the updated lock file, beside the branch: the systems are
    built from it, so they carry its revision. Neither the branch nor the index moves."""
    parent = runner.run(commands.git_revision(directory), LOCAL).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="nixtasks-update-") as scratch:
        index = str(Path(scratch) / "index")
        runner.run(commands.git_read_tree(directory, parent, index), LOCAL)
        runner.run(commands.git_add_to_index(directory, LOCK, index), LOCAL)
        tree = runner.run(commands.git_write_tree(directory, index), LOCAL).stdout.strip()
    revision = runner.run(commands.git_commit_tree(directory, tree, parent, message), LOCAL).stdout.strip()
    return Pending(top, parent, revision)


def land(directory: str, pending: Pending, message: str, runner: Runner) -> None:
    """The branch to the pending commit, if it has not moved since it was made."""
    moved = runner.run(commands.git_move_head(directory, pending.revision, pending.parent, message), LOCAL,
                       check=False)
    if not moved.ok:
        raise NixtasksError(f"HEAD is no longer {pending.parent[:12]} (something was committed while update-deploy "
                            "asked), so nothing was committed or deployed; run update-deploy again")


def sync_index(directory: str, runner: Runner) -> None:
    """The index's lock file as the new HEAD has it; the working tree already does."""
    runner.run(commands.git_reset_file(directory, LOCK), LOCAL)
