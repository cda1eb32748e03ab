"""update-deploy's commit of flake.lock with real git, in a flake below the repository's top:
made beside the branch (HEAD's tree and the new lock, nothing uncommitted), the branch and the
index untouched until it lands, and landing only from the commit's parent."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nixtasks.actions import lockfile
from nixtasks.errors import NixtasksError, UsageError
from nixtasks.host import gitstate
from nixtasks.host.runner import ShRunner

MESSAGE = "chore: update flake inputs"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, text=True, capture_output=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository whose flake is in fleet/; the lock updated, hosts.json changed and staged."""
    top = tmp_path / "repo"
    (top / "fleet").mkdir(parents=True)
    git(top, "init", "-q")
    git(top, "config", "user.email", "me@example.org")
    git(top, "config", "user.name", "me")
    (top / "fleet" / "flake.lock").write_text("old lock\n")
    (top / "fleet" / "hosts.json").write_text("{}\n")
    git(top, "add", ".")
    git(top, "commit", "-qm", "fleet")
    (top / "fleet" / "flake.lock").write_text("new lock\n")  # as `nix flake update` leaves it
    (top / "fleet" / "hosts.json").write_text('{"staged": true}\n')
    git(top, "add", "fleet/hosts.json")
    return top


def test_the_commit_is_made_beside_the_branch_then_lands_from_its_parent(repo: Path):
    directory, parent = str(repo / "fleet"), git(repo, "rev-parse", "HEAD").strip()
    with ShRunner() as runner:
        pending = lockfile.pending_commit(directory, str(repo), MESSAGE, runner)
        assert (pending.top, pending.parent) == (str(repo), parent)
        assert git(repo, "rev-parse", "HEAD").strip() == parent  # the branch has not moved
        assert git(repo, "status", "--porcelain").splitlines() == [" M fleet/flake.lock", "M  fleet/hosts.json"]
        assert git(repo, "show", f"{pending.revision}:fleet/flake.lock") == "new lock\n"
        assert git(repo, "show", f"{pending.revision}:fleet/hosts.json") == "{}\n"  # the staged change stays out
        assert git(repo, "log", "-1", "--format=%P %s", pending.revision).strip() == f"{parent} {MESSAGE}"
        ref = gitstate.at_revision(directory, str(repo), pending.revision)
        assert ref == f"git+file://{repo}?rev={pending.revision}&dir=fleet"

        lockfile.land(directory, pending, MESSAGE, runner)
        lockfile.sync_index(directory, runner)
        assert git(repo, "rev-parse", "HEAD").strip() == pending.revision
        assert git(repo, "status", "--porcelain").splitlines() == ["M  fleet/hosts.json"]  # still staged
        assert MESSAGE in git(repo, "reflog", "-1")


def test_it_does_not_land_when_head_moved_meanwhile(repo: Path):
    directory = str(repo / "fleet")
    with ShRunner() as runner:
        pending = lockfile.pending_commit(directory, str(repo), MESSAGE, runner)
        git(repo, "commit", "-qm", "someone else's commit")  # the staged hosts.json
        moved = git(repo, "rev-parse", "HEAD").strip()
        with pytest.raises(NixtasksError, match="HEAD is no longer"):
            lockfile.land(directory, pending, MESSAGE, runner)
    assert git(repo, "rev-parse", "HEAD").strip() == moved


def test_an_uncommitted_lock_or_flake_nix_is_refused_other_changes_are_not(repo: Path):
    directory = str(repo / "fleet")
    git(repo, "checkout", "-q", "--", "fleet/flake.lock")
    with ShRunner() as runner:
        lockfile.refuse_uncommitted(directory, runner)  # hosts.json is staged: it stays out of the commit
        (repo / "fleet" / "flake.lock").write_text("edited\n")
        (repo / "fleet" / "flake.nix").write_text("{ }\n")
        git(repo, "add", "fleet/flake.nix")
        with pytest.raises(UsageError, match=r"^fleet/flake.lock and fleet/flake.nix have uncommitted changes "
                                             r"\(M fleet/flake.lock; A  fleet/flake.nix\)"):
            lockfile.refuse_uncommitted(directory, runner)
