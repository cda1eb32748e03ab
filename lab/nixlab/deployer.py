"""Deployer hosts (`up --deployer`) run Debian 13's Python 3.13 and Nix 2.26. Lab hosts reach no
package registry, and the image has no pip: nixtasks' dependencies (and the unit tests') are
wheels downloaded once on this machine, pinned to the versions tested, and unpacked inside the
host by its own python3 into a directory on Debian's sys.path that the image leaves empty."""

from __future__ import annotations

import hashlib
import platform
import shutil
import sys
from pathlib import Path

from nixlab import config, roles
from nixlab.image import cache_lock
from nixlab.inside import exec_in
from nixlab.proc import LabError, log, run
from nixlab.registry import Registry
from nixlab.sshcfg import deployer_env_lines

DEPLOYER_SUITE = "trixie"
DEPLOYER_PYTHON = "3.13"
DEPLOYER_SITE = "/usr/local/lib/python3.13/dist-packages"
DEPLOYER_WHEELS = (
    "invoke==3.0.3", "questionary==2.1.1", "prompt_toolkit==3.0.52", "wcwidth==0.7.0", "sh==2.4.0",
    "rich==15.0.0", "markdown-it-py==4.3.0", "mdurl==0.1.2", "pygments==2.20.0",
    "pytest==9.0.3", "pluggy==1.6.0", "iniconfig==2.3.0", "packaging==26.2", "pyte==0.8.2", "pyyaml==6.0.3",
)
DEPLOYER_IMPORTS = "invoke, questionary, sh, rich, pytest, pyte, yaml"
DEPLOYER_PROFILE = "etc/profile.d/nixtasks-lab.sh"


def wheels_dir() -> Path:
    key = hashlib.sha256(" ".join((DEPLOYER_PYTHON, platform.machine(), *DEPLOYER_WHEELS)).encode()).hexdigest()
    return config.CACHE / f"wheels-py{DEPLOYER_PYTHON.replace('.', '')}-{key[:12]}"


def ensure_wheels() -> Path:
    """Download (once) and return the directory of the deployer hosts' wheels for Python 3.13."""
    wheels = wheels_dir()
    if (wheels / ".complete").exists():
        return wheels
    with cache_lock():  # one download at a time, as for the images
        if (wheels / ".complete").exists():
            return wheels
        staging = wheels.with_name(wheels.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        log(f"downloading {len(DEPLOYER_WHEELS)} wheels for the deployer's Python {DEPLOYER_PYTHON} (once)")
        abi = "cp" + DEPLOYER_PYTHON.replace(".", "")
        proc = run(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--python-version", DEPLOYER_PYTHON, "--implementation", "cp", "--abi", abi,
                   "--platform", f"manylinux2014_{platform.machine()}", "--dest", str(staging), *DEPLOYER_WHEELS,
                   check=False, capture_output=True)
        if proc.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise LabError(f"could not download the deployer's wheels with pip: {proc.stderr.strip()[-600:]}")
        staging.rename(wheels)
        (wheels / ".complete").touch()
    log(f"deployer wheels ready: {wheels}")
    return wheels


def write_profile(reg: Registry, host: str, upper: Path) -> None:
    """Login shells on a deployer (`labctl exec HOST -- bash -l`, ssh) get what `labctl env` prints."""
    if host in reg.get("deployers", {}):
        (upper / DEPLOYER_PROFILE).parent.mkdir(parents=True)
        (upper / DEPLOYER_PROFILE).write_text("\n".join(deployer_env_lines()) + "\n")


def deployer_binds(reg: Registry, host: str) -> list[str]:
    """What a deployer host reads from this machine, at the same paths: the ssh key, config and
    known_hosts (kept current as hosts come and go), the deployer-side Nix config, the wheels, and
    the lab cache's keys if it has them (a deployer host pushes to the cache as this machine does)."""
    wheels = reg.get("deployers", {}).get(host)
    keys = [str(roles.KEY_DIR)] if roles.KEY_DIR.is_dir() else []
    return [str(config.SSH_DIR), str(config.NIX_CONF_DIR), wheels, *keys] if wheels else []


def install_deployer_wheels(reg: Registry, host: str) -> None:
    """Unpack the wheels into the deployer's site directory with its own python3 (no pip, no
    registry), then import them: after every boot on a fresh layer (up, reset)."""
    wheels = reg.get("deployers", {}).get(host)
    if not wheels:
        return
    files = sorted(str(p) for p in Path(wheels).glob("*.whl"))
    script = ("import sys, zipfile\nfor wheel in sys.argv[2:]:\n    zipfile.ZipFile(wheel).extractall(sys.argv[1])\n"
              f"import {DEPLOYER_IMPORTS}\n")
    proc = exec_in(host, ["python3", "-c", script, DEPLOYER_SITE, *files], capture=True, timeout=120)
    if proc.returncode != 0:
        raise LabError(f"{host}: could not install the deployer's wheels: {proc.stderr.strip()[-600:]}")
