"""Fixtures for end-to-end tests against the lab.

`lab` boots web1, web2 and db1 once per session and always tears them down (also after a
failure or Ctrl-C). `fleet` gives each test freshly reset hosts and a clean copy of the
example fleet in its own git repository, set up as a user's flake repository would be.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab"))  # lab/nixlab, found as lab/labctl finds it

from nixlab import config as lab_config  # the lab's id, names and state directory, as labctl works them out

REPO = lab_config.REPO
LABCTL = lab_config.LABCTL
HOSTS = ("web1", "web2", "db1")
# The lab is a mixed fleet (labctl's DEFAULT_HOST_SUITES): db1 runs Debian 13 with Nix 2.26, web1 and
# web2 Debian 12 with Nix 2.8, the deployer's own. Tests of what differs between Nix versions take one
# host of each through the `root_host` or `deploy_host` fixture.
NIX_2_26_HOST = "db1"
LAB_ID, SUFFIX, STATE = lab_config.LAB_ID, lab_config.SUFFIX, lab_config.STATE
TOOLS = ("systemd-nspawn", "debootstrap", "nix", "ssh", "ssh-keygen", "nsenter", "ip", "git", "make")


def lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (systemd-nspawn, network namespaces, mounts)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"the lab needs {', '.join(missing)} (run scripts/setup)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)


def labctl(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, str(LABCTL), *args], text=True, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"labctl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass
class Lab:
    workspace: Path  # bound read-only into every host at the same path
    env: dict[str, str]

    def exec(self, host: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, str(LABCTL), "exec", host, "--", *cmd], text=True,
                              capture_output=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"{host}: {' '.join(cmd)} exited {proc.returncode}: {proc.stderr}")
        return proc

    def ssh(self, target: str, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["ssh", "-F", str(lab_config.SSH_CONFIG), "-o", "BatchMode=yes", target, command],
                              text=True, capture_output=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"ssh {target} {command!r} exited {proc.returncode}: {proc.stderr}")
        return proc

    def address(self, host: str) -> str:
        return lab_config.address(self.index(host))

    def index(self, host: str) -> int:
        return int(json.loads((STATE / "hosts.json").read_text())["hosts"][host])

    def silence(self, host: str, on: bool = True) -> None:
        """Drop the host's packets to the deployer silently (not refused): a blackhole route in
        the host's own network namespace, so connections hang instead of failing."""
        verb = "add" if on else "del"
        subprocess.run(["ip", "-n", lab_config.netns(host), "route", verb, "blackhole", f"{lab_config.GATEWAY}/32"],
                       check=on, capture_output=True)

    def slow_link(self, host: str, rate: str | None) -> None:
        """Traffic to the host at `rate` (e.g. "50kbit"), or back to full speed (None)."""
        veth = lab_config.veth(self.index(host))
        subprocess.run(["tc", "qdisc", "del", "dev", veth, "root"], capture_output=True)
        if rate:
            subprocess.run(["tc", "qdisc", "add", "dev", veth, "root", "tbf", "rate", rate, "burst", "1600",
                            "latency", "1s"], check=True, capture_output=True)

    def left_behind(self, host: str) -> str:
        """The lock, watchdog and activation units a deploy leaves while it works ("" after it)."""
        return self.exec(host, "systemctl", "list-units", "--all", "--plain", "--no-legend", "nixtasks-lock.service",
                         "nixtasks-watchdog.*", "nixtasks-switch-to-configuration.service").stdout.strip()

    def current_system(self, host: str) -> str:
        return self.exec(host, "readlink", "-e", "/run/current-system", check=False).stdout.strip()

    def profile(self, host: str) -> str:
        return self.exec(host, "readlink", "-e", "/nix/var/nix/profiles/system", check=False).stdout.strip()

    def health(self, host: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.address(host)}/health", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()


def labctl_env() -> dict[str, str]:
    """What `labctl env` exports now (the ssh config, Nix's, and the cache's and builder's when
    the lab has them), as an environment."""
    env = {}
    for line in labctl("env").stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    return env


def bring_up(workspace: Path) -> None:
    """The session's lab from nothing: web1, web2 and db1, with this checkout, this Python and
    the workspace bound read-only into every host. Tests that take the lab down (the scale
    tests) call it again when they are done, so no test depends on running last."""
    binds = sorted({str(REPO), sys.prefix, sys.base_prefix, str(workspace)})
    labctl("down")  # tests own the lab: start from nothing
    labctl("up", *HOSTS, *(f"--bind-ro={b}" for b in binds))


@pytest.fixture(scope="session")
def lab() -> Lab:
    reason = lab_unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"lab tests must run in CI, but {reason}")
        pytest.skip(reason)
    workspace = Path(tempfile.mkdtemp(prefix="nixtasks-e2e-", dir="/var/tmp"))
    try:
        bring_up(workspace)
        # As at a user's shell: not inside `make check`, whose MAKELEVEL makes every make the
        # tests run say "make[1]: Entering directory" and name itself make[1].
        env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
        env.update(labctl_env())
        env["NIXTASKS_JOURNAL"] = str(workspace / "journal.jsonl")  # never the operator's own journal
        yield Lab(workspace, env)
    finally:
        labctl("down", check=False)
        shutil.rmtree(workspace, ignore_errors=True)


DEFAULT_KNOBS = json.loads((REPO / "examples" / "fleet" / "hosts.json").read_text())


@dataclass
class Fleet:
    """A user's flake repository (the example fleet), clean and committed."""

    lab: Lab
    path: Path

    def set_knobs(self, host: str, **knobs: object) -> None:
        data = json.loads((self.path / "hosts.json").read_text())
        data["hosts"].setdefault(host, {}).update(knobs)
        (self.path / "hosts.json").write_text(json.dumps(data, indent=2) + "\n")
        self.git("commit", "-qam", f"knobs for {host}: {knobs}")

    def set_target(self, host: str, target: str) -> None:
        """Point the inventory's `host` at another ssh target (e.g. another user), committed."""
        toml = self.path / "nixtasks.toml"
        old = f'[hosts.{host}]\ntarget = "'
        before, found, after = toml.read_text().partition(old)
        assert found, f"{host} has no target line in {toml}"
        toml.write_text(before + old + target + after[after.index('"'):])
        self.git("commit", "-qam", f"{host} is reached as {target}")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.path), *args], check=True, text=True,
                              capture_output=True).stdout

    def invoke(self, *args: str, env: dict[str, str] | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`invoke ARGS` in the repository, with no terminal (as in CI)."""
        return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=self.path, text=True,
                              capture_output=True, env={**self.lab.env, **(env or {})}, stdin=subprocess.DEVNULL,
                              timeout=timeout)

    def make(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        # An empty NIXTASKS_YES in the environment (as an outer make exports) must not hide YES=1.
        base = {**self.lab.env, "NIXTASKS_YES": "", "NIXTASKS_REASON": ""}
        return subprocess.run(["make", f"INVOKE={sys.executable} -m invoke", *args], cwd=self.path, text=True,
                              capture_output=True, env={**base, **(env or {})}, stdin=subprocess.DEVNULL,
                              timeout=300)

    def seed_host(self, host: str) -> None:
        """Nix 2.8 cannot fetch the fleet's relative path input into a fresh store: copy it there."""
        site = labctl("seed").stdout.strip()
        subprocess.run(["nix", "copy", "--to", f"ssh://{host}", site], env=self.lab.env, check=True,
                       capture_output=True)

    def invoke_json(self, *args: str) -> object:
        proc = self.invoke(*args, "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def build(self, host: str) -> str:
        attr = f'{self.path}#nixosConfigurations."{host}".config.system.build.toplevel'
        proc = subprocess.run(["nix", "build", "--json", "--no-link", attr], text=True, capture_output=True,
                              env=self.lab.env, check=True)
        return json.loads(proc.stdout)[0]["outputs"]["out"]


def start_invoke(cwd: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """invoke in the background; its stderr lines collect in the returned list."""
    proc = subprocess.Popen([sys.executable, "-m", "invoke", *args], cwd=cwd, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, stdin=subprocess.DEVNULL)
    lines: list[str] = []
    assert proc.stderr is not None
    stream = proc.stderr
    threading.Thread(target=lambda: lines.extend(iter(stream.readline, "")), daemon=True).start()
    return proc, lines


def copying(pid: int) -> bool:
    """Whether a `nix copy` runs below process `pid` (read from /proc: this deploy's, not another lab's)."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    for child, command in commands.items():
        if " copy " in command and "--to" in command:
            up = child
            while up in parents and up > 1:
                up = parents[up]
                if up == pid:
                    return True
    return False


def interrupt(proc: subprocess.Popen[str], lines: list[str], timeout: float = 120) -> int:
    """SIGINT to a `start_invoke` process, as Ctrl-C at its terminal; its exit code. One still
    running after `timeout` is aborted: with PYTHONFAULTHANDLER=1 in its environment its threads'
    stacks are in `lines`, for the failure."""
    os.kill(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGABRT)
        proc.wait(timeout=30)
        time.sleep(1)  # the stderr reader takes the last lines
        raise AssertionError(f"still running {timeout:g} s after SIGINT:\n{''.join(lines)}") from None


def repo_with_hosts(path: Path, targets: dict[str, str], tags: dict[str, str], why: str) -> Path:
    """A user's flake repository at `path` (examples/make-repo) with more hosts, committed and
    tagged `why`: each host's target and tag in the inventory, and the host in hosts.json."""
    subprocess.run([str(REPO / "examples" / "make-repo"), str(path)], check=True)
    with (path / "nixtasks.toml").open("a") as inv:
        for host, target in targets.items():
            inv.write(f'\n[hosts.{host}]\ntarget = "{target}"\ntags = ["{tags[host]}"]\n')
    data = json.loads((path / "hosts.json").read_text())
    data["hosts"].update({h: {} for h in targets})
    (path / "hosts.json").write_text(json.dumps(data, indent=2) + "\n")
    subprocess.run(["git", "-C", str(path), "commit", "-qam", f"hosts: {why}"], check=True)
    subprocess.run(["git", "-C", str(path), "tag", why], check=True)
    return path


@pytest.fixture(scope="session")
def fleet_repo(lab: Lab) -> Path:
    path = lab.workspace / "fleet"
    subprocess.run([str(REPO / "examples" / "make-repo"), str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "tag", "base"], check=True)
    return path


@pytest.fixture
def fleet(lab: Lab, fleet_repo: Path) -> Fleet:
    """Freshly booted hosts and the repository as make-repo made it (a test's commits, such as
    update-deploy's, are gone)."""
    subprocess.run(["git", "-C", str(fleet_repo), "reset", "-q", "--hard", "base"], check=True)
    subprocess.run(["git", "-C", str(fleet_repo), "clean", "-qfdx"], check=True)
    fl = Fleet(lab, fleet_repo)
    if json.loads((fleet_repo / "hosts.json").read_text()) != DEFAULT_KNOBS:
        (fleet_repo / "hosts.json").write_text(json.dumps(DEFAULT_KNOBS, indent=2) + "\n")
        fl.git("commit", "-qam", "default knobs")
    labctl("reset", *HOSTS)
    Path(lab.env["NIXTASKS_JOURNAL"]).unlink(missing_ok=True)
    return fl


@pytest.fixture(params=["web1", NIX_2_26_HOST], ids=["nix-2.8", "nix-2.26"])
def root_host(request: pytest.FixtureRequest, fleet: Fleet) -> str:
    """A host reached as root: one on Nix 2.8, one on Nix 2.26."""
    return str(request.param)


@pytest.fixture(params=["web2", NIX_2_26_HOST], ids=["nix-2.8", "nix-2.26"])
def deploy_host(request: pytest.FixtureRequest, fleet: Fleet) -> str:
    """A host reached as the `deploy` user with sudo -n: one on Nix 2.8, one on Nix 2.26 (sudo 1.9.16)."""
    host = str(request.param)
    if host == NIX_2_26_HOST:
        fleet.set_target(host, f"deploy@{host}")
    return host
