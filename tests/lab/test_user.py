"""A new user's first steps, for real: init, the CI workflow built with its own commands,
the secrets guard, and deploys that Nix does not warn about."""

from __future__ import annotations

import shutil
import subprocess
import sys

import yaml

from nixtasks.actions import ci

from .conftest import REPO

# Built at run time, so that this file itself holds no key-shaped line: the secrets guard passes
# this repository (the demo inventory at its top deploys examples/fleet from it).
KEY = "\n".join(["-----BEGIN OPENSSH " + "PRIVATE KEY-----", "b3BlbnNzaC1rZXktdjEAAAAA",
                  "-----END OPENSSH " + "PRIVATE KEY-----", ""])


def nixtasks(cwd, env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from nixtasks.cli.program import main; main()", *args], cwd=cwd,
                          env=env, text=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=300)


def test_init_then_the_ci_workflow_builds_what_it_says(lab, tmp_path):
    repo = tmp_path / "flake"
    shutil.copytree(REPO / "examples" / "fleet", repo)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    proc = nixtasks(repo, lab.env, "init")
    assert proc.returncode == 0, proc.stderr
    for name in ("tasks.py", "Makefile", "nixtasks.toml"):
        assert f"wrote {name}" in proc.stderr
    assert '[hosts.web1]\ntarget = "web1"' in (repo / "nixtasks.toml").read_text()
    (repo / "tasks.py").write_text("# mine\n")
    proc = nixtasks(repo, lab.env, "init")
    assert proc.returncode == 0 and "kept tasks.py" in proc.stderr and (repo / "tasks.py").read_text() == "# mine\n"
    proc = nixtasks(repo, lab.env, "ci-workflow")
    assert proc.returncode == 0, proc.stderr
    workflow = yaml.safe_load((repo / ci.PATH).read_text())
    job = workflow["jobs"]["build"]
    assert sorted(job["strategy"]["matrix"]["host"]) == ["db1", "web1", "web2"]
    [template] = [step["run"] for step in job["steps"] if "run" in step]
    for host in job["strategy"]["matrix"]["host"]:  # what CI would run, with the same text
        command = template.replace("${{ matrix.host }}", host) + " --option substituters ''"
        built = subprocess.run(["sh", "-c", command], cwd=repo, env=lab.env, capture_output=True, text=True)
        assert built.returncode == 0, built.stderr


def test_a_plaintext_key_in_the_flake_stops_the_deploy_before_anything_is_built(fleet):
    (fleet.path / "secrets").mkdir()
    (fleet.path / "secrets" / "host.key").write_text(KEY)
    fleet.git("add", "-A")
    fleet.git("commit", "-qm", "oops: a key")
    proc = fleet.invoke("switch", "--host", "web1", "--yes")
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: secrets/host.key:1: a private key")
    assert "agenix" in errors[0] and "--allow-secret secrets/host.key" in errors[0]
    assert "[build]" not in proc.stderr and fleet.lab.current_system("web1") == ""
    proc = fleet.invoke("switch", "--host", "web1", "--yes", "--allow-secret", "secrets/host.key")
    assert proc.returncode == 0, proc.stderr


def test_a_deploy_keeps_its_builds_alive_and_nix_does_not_warn(fleet):
    proc = fleet.invoke("switch", "--host", "web1,db1", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "--add-root" not in proc.stderr and "Nix warned" not in proc.stderr
