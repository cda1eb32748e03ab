"""The git state of a local flake: its revision, uncommitted changes, and the files the
flake cannot see because git does not track them."""

from __future__ import annotations

import os
import re

from ..models import LOCAL, GitState
from . import commands
from .runner import Runner

RESULT_LINK = re.compile(r"(?:.*/)?result(?:-[A-Za-z0-9._-]+)?")


def flake_dir(flake: str) -> str | None:
    """The directory of a local flake reference, or None for URLs like `github:...`."""
    path = flake.split("#", 1)[0]
    path = path.removeprefix("path:").removeprefix("git+file://")
    return path if path.startswith("/") and os.path.isdir(path) else None


def parse_status(porcelain: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split `git status --porcelain` into changes to tracked files and untracked files."""
    changes, untracked = [], []
    for line in porcelain.splitlines():
        if line.startswith("?? "):
            if not RESULT_LINK.fullmatch(line[3:]):  # what `build` leaves is not part of the flake
                untracked.append(line[3:])
        elif line.strip():
            changes.append(line)
    return tuple(changes), tuple(untracked)


def toplevel(runner: Runner, flake: str) -> str | None:
    directory = flake_dir(flake)
    if directory is None:
        return None
    result = runner.run(commands.git_toplevel(directory), LOCAL, check=False)
    return result.stdout.strip() or None if result.ok else None


def repository(runner: Runner, flake: str) -> str | None:
    """Where a deploy came from, for its journal records: the flake's git toplevel (or its
    directory outside git). A path, not the remote's URL: two clones of one remote are two
    inventories, a repository need not have a remote, and a URL can carry a token. None for
    a flake that is not here (`github:...`)."""
    directory = flake_dir(flake)
    return None if directory is None else toplevel(runner, flake) or os.path.realpath(directory)


def at_revision(flake: str, top: str, revision: str) -> str:
    """The local flake as committed at `revision` (`git+file://TOP?rev=REV&dir=SUB#...`), whatever
    the working tree holds: Nix gives it `self.rev`. Other references are returned as they are."""
    directory = flake_dir(flake)
    if directory is None:
        return flake
    rel = directory[len(top):].strip("/")
    fragment = flake.partition("#")[2]
    ref = f"git+file://{top}?rev={revision}" + (f"&dir={rel}" if rel else "")
    return f"{ref}#{fragment}" if fragment else ref


def read(runner: Runner, flake: str) -> GitState:
    directory = flake_dir(flake)
    if directory is None:
        return GitState(revision=None)
    inside = runner.run(commands.git_is_work_tree(directory), LOCAL, check=False)
    if not inside.ok:
        if "not a git repository" in inside.stderr:
            return GitState(revision=None)
        # e.g. "detected dubious ownership": never guess that such a tree is clean
        raise runner.failure(commands.git_is_work_tree(directory), LOCAL, "git", inside)
    status = runner.run(commands.git_status(directory), LOCAL)
    changes, untracked = parse_status(status.stdout)
    rev = runner.run(commands.git_revision(directory), LOCAL, check=False)
    if not rev.ok:  # no commit yet: everything is uncommitted
        return GitState(revision="(no commits)", dirty=True, changes=changes, untracked=untracked)
    # Untracked files alone do not change what Nix evaluates, so they do not make it dirty.
    return GitState(revision=rev.stdout.strip(), dirty=bool(changes), changes=changes, untracked=untracked)
