"""lab/labctl as a command, where it needs no root and no lab: it finds its package beside itself
(from any directory, with nothing on PYTHONPATH), and the lab's id gives the documented names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LAB = Path(__file__).resolve().parents[2] / "lab"


def labctl(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NIXTASKS_LAB") and k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(LAB / "labctl"), *args], cwd=cwd, env={**clean, **env}, text=True,
                          capture_output=True, timeout=60)


def test_env_names_the_ssh_config_and_nix_config_of_the_labs_state_directory(tmp_path):
    proc = labctl("env", cwd=tmp_path, NIXTASKS_LAB_ID="3", NIXTASKS_LAB_DIR=str(tmp_path / "state"))
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.splitlines() == [
        f"export NIX_CONF_DIR={tmp_path}/state/nix",
        f"export NIX_SSHOPTS='-F {tmp_path}/state/ssh/config'",
        f"export NIXTASKS_LAB_SSH_CONFIG={tmp_path}/state/ssh/config",
    ]


def test_status_of_a_lab_never_booted_says_it_is_down(tmp_path):
    proc = labctl("status", cwd=tmp_path, NIXTASKS_LAB_DIR=str(tmp_path / "state"))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "the lab is down (make lab-up)\n", "")


def test_a_lab_id_that_is_not_one_digit_is_refused_in_one_line(tmp_path):
    proc = labctl("env", cwd=tmp_path, NIXTASKS_LAB_ID="12")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == "labctl: NIXTASKS_LAB_ID must be one digit, 0 to 9, not '12'\n"


def test_the_lab_id_gives_the_names_the_lab_page_documents(tmp_path):
    """What labctl, the lab tests and the benchmarks all take from lab/nixlab/config.py."""
    show = ("import sys; sys.path.insert(0, sys.argv[1]); from nixlab import config as c; "
            "print(c.STATE, c.netns('web1'), c.BRIDGE, c.veth(1), c.CGROUP, c.address(1), c.address6(1))")

    def names(lab_id: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NIXTASKS_LAB")}
        proc = subprocess.run([sys.executable, "-c", show, str(LAB)], env={**env, "NIXTASKS_LAB_ID": lab_id},
                              text=True, capture_output=True, check=True)
        return proc.stdout.strip()

    assert names("0") == "/var/lib/nixtasks-lab lab-web1 lab-br0 labv1 nixtasks-lab 10.250.0.11 fd00:250::11"
    assert names("7") == ("/var/lib/nixtasks-lab7 lab7-web1 lab-br7 lab7v1 nixtasks-lab7 10.250.7.11 "
                          "fd00:250:7::11")
