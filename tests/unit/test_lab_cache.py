"""The lab's cache and builder hosts where no lab is needed: what `labctl env` prints for them, the
[cache] table and `builders` that examples/make-repo writes from it, the cache host's nginx site
and nix-cache-info, a cache client's nix.conf, and the `up --cache` flags refused before any change."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python < 3.11, as nixtasks.inventory reads it
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab"))  # lab/nixlab, found as lab/labctl finds it

from nixlab import config, roles  # noqa: E402
from nixlab.proc import LabError  # noqa: E402
from nixtasks.inventory import load  # noqa: E402

PUBLIC = "lab-cache-3-1:7mVx0sNiP1lJ2FgLcYgBw+HZ0E1bGt0mP1y+gYbq/9Q="


def lab_state(tmp_path: Path, hosts: dict[str, int]) -> Path:
    """A lab state directory as `labctl up` leaves it: the registry and, with a cache, the keys."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "hosts.json").write_text(json.dumps({"hosts": hosts, "bind_ro": []}))
    if "cache" in hosts:
        (state / "cache").mkdir(mode=0o700)
        (state / "cache/secret-key").write_text("lab-cache-3-1:secret\n")
        (state / "cache/secret-key").chmod(0o600)
        (state / "cache/public-key").write_text(PUBLIC + "\n")
    return state


def run(argv: list[str], state: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NIXTASKS_LAB") and k != "PYTHONPATH"}
    return subprocess.run(argv, cwd=cwd, env={**clean, "NIXTASKS_LAB_ID": "3", "NIXTASKS_LAB_DIR": str(state)},
                          text=True, capture_output=True, timeout=60)


def test_env_gives_the_cache_url_key_and_secret_key_file_and_the_builders_line(tmp_path):
    state = lab_state(tmp_path, {"web1": 1, "cache": 2, "builder": 3})
    proc = run([sys.executable, str(REPO / "lab/labctl"), "env"], state, tmp_path)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.splitlines()[3:] == [
        "export NIXTASKS_LAB_CACHE_PUSH=http://10.250.3.12",
        "export NIXTASKS_LAB_CACHE_URL=http://10.250.3.12",
        f"export NIXTASKS_LAB_CACHE_PUBLIC_KEY={PUBLIC}",
        f"export NIXTASKS_LAB_CACHE_SECRET_KEY_FILE={state}/cache/secret-key",
        "export NIXTASKS_LAB_BUILDERS='ssh://builder x86_64-linux - 2'",
    ]


def test_env_of_a_lab_without_cache_or_builder_prints_neither(tmp_path):
    state = lab_state(tmp_path, {"web1": 1})
    proc = run([sys.executable, str(REPO / "lab/labctl"), "env"], state, tmp_path)
    assert proc.returncode == 0
    assert "CACHE_" not in proc.stdout and "BUILDERS" not in proc.stdout


def test_make_repo_writes_the_cache_table_and_builders_where_build_host_lives(tmp_path):
    state = lab_state(tmp_path, {"web1": 1, "cache": 2, "builder": 3})
    proc = run([str(REPO / "examples/make-repo"), str(tmp_path / "fleet")], state, tmp_path)
    assert proc.returncode == 0, proc.stderr
    inventory = tomllib.loads((tmp_path / "fleet/nixtasks.toml").read_text())
    assert inventory["cache"] == {"push": "http://10.250.3.12", "public_key": PUBLIC,
                                  "secret_key_file": f"{state}/cache/secret-key"}
    assert inventory["defaults"]["builders"] == ["ssh://builder x86_64-linux - 2"]
    parsed = load(str(tmp_path / "fleet/nixtasks.toml"), env={})  # as nixtasks reads it
    assert parsed.cache is not None and parsed.cache.public_key == PUBLIC
    assert parsed.defaults.builders == ("ssh://builder x86_64-linux - 2",)


def test_make_repo_without_a_cache_writes_no_cache_table(tmp_path):
    state = lab_state(tmp_path, {"web1": 1})
    proc = run([str(REPO / "examples/make-repo"), str(tmp_path / "fleet")], state, tmp_path)
    assert proc.returncode == 0, proc.stderr
    inventory = tomllib.loads((tmp_path / "fleet/nixtasks.toml").read_text())
    assert "cache" not in inventory and "builders" not in inventory["defaults"]


def test_the_cache_serves_a_nix_cache_info_nix_accepts():
    assert roles.cache_info() == "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"


def test_the_nginx_site_lets_only_the_writers_put():
    site = roles.nginx_site(["10.250.3.1", "10.250.3.14"])
    assert "dav_methods PUT;" in site and "create_full_put_path on;" in site
    assert ("limit_except GET {\n            allow 10.250.3.1;\n            allow 10.250.3.14;\n            deny all;\n"
            "        }") in site


def test_the_writers_are_this_machine_and_the_deployer_hosts():
    reg = {"hosts": {"cache": 1, "deployer": 4, "web1": 2}, "deployers": {"deployer": "/wheels", "gone": "/w"}}
    assert roles.writers(reg) == [config.GATEWAY, config.address(4)]  # type: ignore[arg-type]


def test_a_cache_clients_nix_conf_has_the_cache_as_its_only_substituter_and_requires_signatures():
    image = "build-users-group = nixbld\nsubstituters =\nsandbox = false\n"
    conf = roles.client_nix_conf(image, "http://10.250.3.12", PUBLIC)
    assert conf.splitlines() == [
        "build-users-group = nixbld", "sandbox = false", "substituters = http://10.250.3.12",
        f"trusted-public-keys = {PUBLIC}", "require-sigs = true", "connect-timeout = 5",
    ]


def flags(cache: bool = False, untrusted: bool = False) -> argparse.Namespace:
    return argparse.Namespace(cache=cache, untrusted=untrusted)


def test_untrusted_without_cache_is_refused_and_changes_nothing():
    reg = {"hosts": {"cache": 1}}
    with pytest.raises(LabError, match="--untrusted goes with --cache"):
        roles.take_flags(flags(untrusted=True), reg, ["web1"], ["web1"])  # type: ignore[arg-type]
    assert reg == {"hosts": {"cache": 1}}


def test_cache_in_a_lab_without_a_cache_host_is_refused_and_changes_nothing():
    reg = {"hosts": {"web1": 1}}
    with pytest.raises(LabError, match="the lab has no cache host; boot it first or in the same command"):
        roles.take_flags(flags(cache=True), reg, ["web1"], [])  # type: ignore[arg-type]
    assert reg == {"hosts": {"web1": 1}}


def test_cache_flags_record_each_hosts_trust_and_name_the_running_hosts_to_change():
    reg = {"hosts": {"cache": 1, "web1": 2, "web2": 3}, "cache_clients": {"web2": "trusted"}}
    running = roles.take_flags(flags(cache=True, untrusted=True), reg, ["web1", "web2", "web3"],  # type: ignore[arg-type]
                               ["web3"])
    assert reg["cache_clients"] == {"web1": "untrusted", "web2": "untrusted", "web3": "untrusted"}
    assert running == ["web1", "web2"]
    assert roles.take_flags(flags(), reg, ["web3"], ["web3"]) == []  # type: ignore[arg-type]
    assert reg["cache_clients"] == {"web1": "untrusted", "web2": "untrusted"}  # booted anew without --cache
