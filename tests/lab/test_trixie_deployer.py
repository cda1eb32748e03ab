"""nixtasks on a Debian 13 deployer: a lab host of its own (`labctl up deployer --deployer`) with
Python 3.13 and Nix 2.26, deploying to web1 and web2 (Debian 12, Nix 2.8) over ssh. The checkout
under test is bound read-only into it and put on PYTHONPATH; its dependencies are the wheels labctl
installed there. Every test asserts the hosts' real state from this machine."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator

import pytest

from .conftest import LABCTL, REPO, Lab, labctl

DEPLOYER = "deployer"
FLEET = "/root/fleet"  # the user's flake repository, inside the deployer
HOSTS = ("web1", "web2")


class Deployer:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def sh(self, script: str, cwd: str = FLEET, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`script` in a login shell on the deployer (its profile sets what `labctl env` prints),
        with the checkout under test on PYTHONPATH, as a user there would run it."""
        line = f"cd {shlex.quote(cwd)} && export PYTHONPATH={shlex.quote(str(REPO))} && {script}"
        return subprocess.run([sys.executable, str(LABCTL), "exec", DEPLOYER, "--", "bash", "-lc", line],
                              text=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)

    def ok(self, script: str, cwd: str = FLEET) -> str:
        proc = self.sh(script, cwd)
        assert proc.returncode == 0, f"{script!r} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def invoke(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.sh(shlex.join(["python3", "-m", "invoke", *args]) + " </dev/null")

    def knobs(self, **per_host: dict[str, object]) -> None:
        edit = ("import json, sys\nd = json.load(open('hosts.json'))\n"
                "for host, knobs in json.loads(sys.argv[1]).items():\n"
                "    (d['defaults'] if host == 'defaults' else d['hosts'].setdefault(host, {})).update(knobs)\n"
                "json.dump(d, open('hosts.json', 'w'), indent=2)\n")
        self.ok(f"python3 -c {shlex.quote(edit)} {shlex.quote(json.dumps(per_host))} && "
                f"git commit -qam {shlex.quote(f'knobs {per_host}')}")

    def release(self, host: str) -> str:
        status, body = self.lab.health(host)
        return json.loads(body)["release"] if status == 200 else f"http {status}"


@pytest.fixture(scope="module")
def debian13(lab: Lab) -> Iterator[Deployer]:
    labctl("up", DEPLOYER, "--deployer")
    try:
        d = Deployer(lab)
        d.ok(f"{shlex.quote(str(REPO / 'examples' / 'make-repo'))} {FLEET}", cwd="/root")
        # The example's flake.lock is Nix 2.8's; 2.26 rewrites a relative path: input's entry and,
        # not allowed to write it, would treat the flake as dirty (no revision). A user of 2.26 has
        # its lock file committed.
        d.ok("nix flake lock && git commit -qam 'flake.lock as Nix 2.26 writes it' && git tag base")
        yield d
    finally:
        labctl("down", DEPLOYER, check=False)


@pytest.fixture
def deployer(debian13: Deployer) -> Deployer:
    """The repository as the module fixture made it, and freshly booted web1, web2 and db1 (the
    inventory's third host, which status shows too)."""
    debian13.ok("git reset -q --hard base && git clean -qfdx")
    labctl("reset", *HOSTS, "db1")
    return debian13


def test_the_deployer_runs_debian_13_with_python_3_13_and_nix_2_26(debian13):
    out = debian13.ok("grep VERSION_CODENAME /etc/os-release && python3 --version && nix --version", cwd="/")
    assert "VERSION_CODENAME=trixie" in out and "Python 3.13." in out and "nix (Nix) 2.26." in out
    imported = debian13.ok("python3 -c 'import nixtasks, invoke; print(nixtasks.__file__, invoke.__file__)'", cwd="/")
    assert imported.split() == [f"{REPO}/nixtasks/__init__.py",
                                "/usr/local/lib/python3.13/dist-packages/invoke/__init__.py"]


def test_a_fleet_switch_rolls_back_the_host_that_fails_its_check(deployer):
    lab = deployer.lab
    first = deployer.invoke("switch", "--host", "web1,web2", "--yes")
    assert first.returncode == 0, first.stderr
    assert "Nix warned" not in first.stderr
    before = {h: lab.current_system(h) for h in HOSTS}
    assert all(before.values()) and all(deployer.release(h) == "1.0" for h in HOSTS)

    deployer.knobs(defaults={"release": "1.1"}, web2={"healthy": False})
    proc = deployer.invoke("switch", "--host", "web1,web2", "--yes", "--json")
    assert proc.returncode == 1, proc.stderr
    outcomes = {h["host"]: h["outcome"] for h in json.loads(proc.stdout)["hosts"]}
    assert outcomes == {"web1": "ok", "web2": "rolled back"}
    assert "error: web2: rolled back: check http" in proc.stderr and "answered 500" in proc.stderr
    # web2 runs and boots what it ran before; web1 the new release.
    assert lab.current_system("web2") == before["web2"] == lab.profile("web2")
    assert deployer.release("web2") == "1.0"
    assert lab.current_system("web1") == lab.profile("web1") != before["web1"]
    assert lab.current_system("web1").endswith("-nixos-system-web1-1.1") and deployer.release("web1") == "1.1"


def test_a_rollback_returns_to_the_previous_generation(deployer):
    lab = deployer.lab
    assert deployer.invoke("switch", "--host", "web1", "--yes").returncode == 0
    first = lab.current_system("web1")
    deployer.knobs(defaults={"release": "1.1"})
    assert deployer.invoke("switch", "--host", "web1", "--yes").returncode == 0
    assert lab.current_system("web1") != first and deployer.release("web1") == "1.1"

    proc = deployer.invoke("rollback", "--host", "web1", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert lab.current_system("web1") == first == lab.profile("web1")
    assert lab.exec("web1", "readlink", "/nix/var/nix/profiles/system").stdout.strip() == "system-1-link"
    assert deployer.release("web1") == "1.0"


def test_status_shows_every_host(deployer):
    assert deployer.invoke("switch", "--host", "web1,web2", "--yes").returncode == 0
    proc = deployer.invoke("status")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[1]: line for line in proc.stdout.splitlines() if line.startswith("│")}
    assert set(rows) == {"web1", "web2", "db1"}
    for host in HOSTS:
        assert f"nixos-system-{host}-1.0" in rows[host]
        assert "up to date" in rows[host] and "matches HEAD" in rows[host]
    as_json = {r["host"]: r for r in json.loads(deployer.invoke("status", "--json").stdout)}
    assert {h: (r["reachable"], r["system"]) for h, r in as_json.items()} == {
        "web1": (True, deployer.lab.current_system("web1")), "web2": (True, deployer.lab.current_system("web2")),
        "db1": (True, None)}  # db1: reachable, never deployed


def test_the_unit_tests_pass_under_python_3_13(debian13):
    # The checkout is read-only there: no bytecode, no cache directory.
    proc = debian13.sh("python3 -B -m pytest -p no:cacheprovider tests/unit -q", cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert " passed" in proc.stdout.splitlines()[-1] and "failed" not in proc.stdout.splitlines()[-1]
