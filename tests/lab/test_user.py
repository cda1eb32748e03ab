"""A new user's first steps, for real: init, the CI workflow built with its own commands,
the secrets guard, and deploys that Nix does not warn about."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from nixtasks.actions import ci

from .conftest import HOSTS, REPO

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


def errors_of(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def deployer_state() -> tuple[bool, bool]:
    """Whether this machine (the deployer) has a running NixOS system and a system profile."""
    return os.path.lexists("/run/current-system"), os.path.lexists("/nix/var/nix/profiles/system")


def assert_nothing_changed(fleet, deployer: tuple[bool, bool]) -> None:
    for host in HOSTS:
        assert fleet.lab.current_system(host) == "" and fleet.lab.profile(host) == "", host
    assert deployer_state() == deployer
    assert not Path(fleet.lab.env["NIXTASKS_JOURNAL"]).exists()  # nothing was recorded: nothing was done


def in_shell(fleet, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A line of a user's script, run by sh in the fleet repository."""
    return subprocess.run(["sh", "-c", script], cwd=fleet.path, text=True, capture_output=True,
                          env={**fleet.lab.env, "NIXTASKS_YES": "", "NIXTASKS_REASON": "", **env},
                          stdin=subprocess.DEVNULL, timeout=300)


def test_an_empty_selection_is_refused_and_never_means_this_machine(fleet):
    toml = fleet.path / "nixtasks.toml"  # this machine is web1's: an empty selection would activate it here
    toml.write_text(toml.read_text().replace('[hosts.web1]\n', '[hosts.web1]\nlocal = true\n'))
    fleet.git("commit", "-qam", "this machine is web1")
    deployer = deployer_state()
    invoke = f"{sys.executable} -m invoke"
    scripts = [f'{invoke} switch --host "$HOSTS" --yes', f"{invoke} switch --host , --yes",
               f"{invoke} switch --host --yes", f"{invoke} switch --host", f'{invoke} switch --tag "$TAG" --yes',
               f'{invoke} switch --host "$HOSTS," --yes']
    scripts += [f'{invoke} {task} --host "$HOSTS"' + (" --yes" if yes else "") for task, yes in (
        ("status", False), ("verify", False), ("history", False), ("gc", True), ("unlock", True), ("doctor", False),
        ("generations", False), ("rollback", True), ("canary", True), ("rolling", True), ("stage", False),
        ("emergency", True), ("update-deploy", True), ("boot", True), ("test", True))]
    scripts += [f'{invoke} {task} --tag "$TAG"' for task in ("status", "history", "gc --yes", "rolling --yes")]
    for script in scripts:
        proc = in_shell(fleet, script, HOSTS="", TAG="")
        errors = errors_of(proc)
        assert proc.returncode == 2 and len(errors) == 1, (script, proc.stderr)
        assert "leave out --" in errors[0] or "empty name" in errors[0], (script, errors)
        assert "Traceback" not in proc.stderr and "[build]" not in proc.stderr, (script, proc.stderr)
    assert errors_of(in_shell(fleet, f'{invoke} switch --tag "$TAG" --yes', TAG=""))[0].startswith(
        "error: --tag '' names no tag; give --tag NAME (tags in nixtasks.toml: blue, db, green, web)")
    for args, env in ((("switch", "HOSTS=", "YES=1"), {}), (("switch", "YES=1"), {"HOSTS": ""}),
                      (("switch", "TAG=", "YES=1"), {}), (("host//switch", "YES=1"), {}),
                      (("tag//switch", "YES=1"), {}), (("rolling", "HOSTS=", "YES=1"), {}),
                      (("stage", "HOSTS="), {}), (("host/web1/switch", "TAG=", "YES=1"), {})):
        proc = fleet.make(*args, env=env)
        errors = errors_of(proc)
        assert proc.returncode == 2 and len(errors) == 1, (args, proc.stderr)
        assert "is empty" in errors[0] or "names no" in errors[0], (args, errors)
        assert "invoke" not in proc.stdout, (args, proc.stdout)  # refused before invoke ran
    assert_nothing_changed(fleet, deployer)


def test_conflicting_selections_are_refused_naming_both(fleet):
    deployer = deployer_state()
    for args, names in ((("--all", "--host", "web1"), ("--all", "--host web1")),
                        (("--tag", "db", "--all"), ("--all", "--tag db")),
                        (("--tag", "web", "--target-host", "root@web1"), ("--target-host root@web1", "--tag")),
                        (("--all", "--target-host", "root@web1"), ("--target-host root@web1", "--all"))):
        proc = fleet.invoke("switch", *args, "--yes")
        errors = errors_of(proc)
        assert proc.returncode == 2 and len(errors) == 1 and all(n in errors[0] for n in names), (args, proc.stderr)
    proc = fleet.make("fleet/switch", "HOSTS=web1", "YES=1")
    errors = errors_of(proc)
    assert proc.returncode == 2 and len(errors) == 1 and "--all and --host web1 both select hosts" in errors[0]
    assert_nothing_changed(fleet, deployer)


def test_numbers_that_are_not_finite_and_bad_batches_change_nothing(fleet):
    deployer = deployer_state()
    for args, message in ((("--pause", "inf"), "--pause: inf is not a finite number"),
                          (("--pause", "nan"), "--pause: nan is not a finite number"),
                          (("--confirm-timeout", "inf"), "--confirm-timeout: inf is not a finite number"),
                          (("--copy-timeout", "nan"), "--copy-timeout: nan is not a finite number"),
                          (("--max-fail-percentage", "nan"), "--max-fail-percentage: nan is not a finite number"),
                          (("--batch-size", "0"), "e.g. --batch-size 5"),
                          (("--batches", "1,,2"), "--batches: '1,,2' has an empty item")):
        proc = fleet.invoke("switch", "--host", "web1,web2,db1", "--yes", *args)
        errors = errors_of(proc)
        assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], (args, proc.stderr)
        assert "too small" not in errors[0], errors
        assert args[0] != "--batch-size" or "--batches" not in errors[0], errors  # it suggests its own option
    for task, args, message in (("rollback", ("--generation", "inf"), "--generation: 'inf' is not a whole number"),
                                ("gc", ("--keep", "nan"), "--keep: 'nan' is not a whole number"),
                                ("canary", ("--soak", "inf"), "--soak: inf is not a finite number"),
                                ("emergency", ("--follow", "nan"), "--follow: nan is not a finite number")):
        proc = fleet.invoke(task, "--host", "web1", "--yes", *args)
        errors = errors_of(proc)
        assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], (task, proc.stderr)
    assert_nothing_changed(fleet, deployer)


def test_make_build_on_a_machine_the_flake_does_not_define_is_one_line(fleet):
    hostname = socket.gethostname()
    assert hostname not in HOSTS  # the deployer is not one of the fleet's hosts
    deployer = deployer_state()
    line = (f"error: this machine ({hostname}) is not one of the flake's nixosConfigurations (db1, web1, web2); "
            "name a host (--host NAME, make host/NAME/ACTION), use --all (make fleet/ACTION), or mark a host "
            "`local = true` in nixtasks.toml")
    for args in (("build",), ("dry-build",), ("switch", "YES=1")):
        proc = fleet.make(*args)
        assert proc.returncode == 2 and errors_of(proc) == [line], (args, proc.stderr)
        assert "Traceback" not in proc.stderr and "attribute" not in proc.stderr and "trace" not in proc.stderr
    proc = fleet.invoke("build")
    assert proc.returncode == 2 and errors_of(proc) == [line], proc.stderr
    assert_nothing_changed(fleet, deployer)
