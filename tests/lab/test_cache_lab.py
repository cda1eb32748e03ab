"""The lab's binary cache and builder hosts, end to end with Nix alone (nixtasks' own use of them is
tested where it lands): the cache serves nix-cache-info to the hosts and refuses their PUTs; the
deployer pushes a signed closure with `nix copy --to http://...`; a host given `--cache`
substitutes it (Nix 2.8 and 2.26) and it then carries the cache key's signature; a host that
trusts another key, and any host offered an unsigned path, accept nothing; a build handed to the
builder host with `--max-jobs 0`; and `labctl down cache` leaves none of its processes.

The module boots its own hosts beside the session's (cache, builder, c1 on Debian 12 with Nix 2.8,
c2 on Debian 13 with Nix 2.26, u1 that trusts another key) and removes them when done."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO, STATE, Lab, lab_config, labctl, labctl_env

CACHE_HOSTS = ("cache", "builder", "c1", "c2", "u1", "d1")
SECRET_KEY = STATE / "cache" / "secret-key"


@pytest.fixture(scope="module")
def cache_lab(lab: Lab) -> Iterator[Lab]:
    try:
        labctl("up", "cache", "builder", "c1")
        labctl("up", "c1", "--cache")  # already up: its nix.conf changes live
        labctl("up", "c2", "--suite", "trixie", "--cache")
        labctl("up", "u1", "--cache", "--untrusted")
        env = {**lab.env, **labctl_env()}
        yield Lab(lab.workspace, env)
    finally:
        hosts = json.loads((STATE / "hosts.json").read_text())["hosts"]
        left = [h for h in CACHE_HOSTS if h in hosts]
        if left:
            labctl("down", *left, check=False)


def nix(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["nix", "--extra-experimental-features", "nix-command flakes", *args], text=True,
                          capture_output=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"nix {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def fleet_with(lab: Lab, name: str, **knobs: object) -> Path:
    """The example fleet as a flake (path:) with these knobs for every host."""
    path = lab.workspace / name
    subprocess.run(["cp", "-r", str(REPO / "examples" / "fleet"), str(path)], check=True)
    data = json.loads((path / "hosts.json").read_text())
    data["defaults"].update(knobs)
    (path / "hosts.json").write_text(json.dumps(data, indent=2) + "\n")
    return path


def build(lab: Lab, flake: Path, *hosts: str, extra: tuple[str, ...] = ()) -> list[str]:
    attrs = [f"path:{flake}#nixosConfigurations.{h}.config.system.build.toplevel" for h in hosts]
    proc = nix(lab.env, "build", "--json", "--no-link", *extra, *attrs)
    return [entry["outputs"]["out"] for entry in json.loads(proc.stdout)]


def closure(path: str) -> list[str]:
    return subprocess.run(["nix-store", "-qR", path], text=True, capture_output=True, check=True).stdout.split()


def valid_on(lab: Lab, host: str, path: str) -> bool:
    return lab.exec(host, "nix-store", "--check-validity", path, check=False).returncode == 0


def cache_files(lab: Lab) -> set[str]:
    out = lab.exec("cache", "find", "/srv/nix-cache", "-type", "f", "-printf", "%P\\n").stdout
    return set(out.split())


@pytest.fixture(scope="module")
def pushed(cache_lab: Lab) -> tuple[str, str]:
    """Two hosts' systems of a new release that share a 256 KiB path; web1's closure signed with
    the lab's key and pushed to the cache by the deployer, as nixtasks does. Returns (web1's
    system, the shared path)."""
    flake = fleet_with(cache_lab, "cache-fleet", release=f"c{uuid.uuid4().hex[:8]}", shared_payload_kib=256)
    web1, web2 = build(cache_lab, flake, "web1", "web2")
    shared = os.readlink(f"{web1}/shared-payload")
    assert os.readlink(f"{web2}/shared-payload") == shared and shared in closure(web1) and shared in closure(web2)
    assert os.path.getsize(shared) == 256 * 1024
    nix(cache_lab.env, "store", "sign", "--key-file", str(SECRET_KEY), "-r", web1)
    nix(cache_lab.env, "copy", "--to", cache_lab.env["NIXTASKS_LAB_CACHE_PUSH"], web1)
    return web1, shared


def test_the_cache_serves_nix_cache_info_to_a_host(cache_lab: Lab):
    url = cache_lab.env["NIXTASKS_LAB_CACHE_URL"]
    proc = cache_lab.exec("c1", "curl", "-sf", f"{url}/nix-cache-info")
    assert proc.stdout == "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"


def test_a_put_from_a_host_is_refused_and_writes_nothing(cache_lab: Lab):
    url = cache_lab.env["NIXTASKS_LAB_CACHE_PUSH"]
    proc = cache_lab.exec("c1", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
                          "--data-binary", "forged", f"{url}/nar/forged.nar")
    assert proc.stdout == "403"
    assert "nar/forged.nar" not in cache_files(cache_lab)


def test_the_deployers_push_puts_every_path_of_the_closure_in_the_cache(cache_lab: Lab, pushed: tuple[str, str]):
    web1, shared = pushed
    files = cache_files(cache_lab)
    for path in closure(web1):
        assert f"{Path(path).name[:32]}.narinfo" in files
    assert any(f.startswith("nar/") for f in files)


@pytest.mark.parametrize("host", ["c1", "c2"], ids=["nix-2.8", "nix-2.26"])
def test_a_cache_host_substitutes_the_signed_closure_and_keeps_the_caches_signature(
        cache_lab: Lab, pushed: tuple[str, str], host: str):
    web1, shared = pushed
    assert not valid_on(cache_lab, host, web1)
    cache_lab.exec(host, "nix-store", "--realise", web1)
    assert all(valid_on(cache_lab, host, p) for p in closure(web1))
    sigs = cache_lab.exec(host, "nix", "path-info", "--sigs", shared).stdout
    key_name = cache_lab.env["NIXTASKS_LAB_CACHE_PUBLIC_KEY"].split(":")[0]
    assert f"{key_name}:" in sigs
    log = cache_lab.exec("cache", "cat", "/var/log/nginx/access.log").stdout
    assert f'{cache_lab.address(host)} - - ' in log  # fetched from the cache, not from anywhere else


def test_a_host_that_trusts_another_key_refuses_the_caches_paths(cache_lab: Lab, pushed: tuple[str, str]):
    web1, shared = pushed
    proc = cache_lab.exec("u1", "nix-store", "--realise", shared, check=False)
    assert proc.returncode != 0
    assert "is not signed by any of the keys in 'trusted-public-keys'" in proc.stderr
    assert not valid_on(cache_lab, "u1", shared)
    # It asked the cache (and was answered): the refusal is the signature's, not the network's.
    log = cache_lab.exec("cache", "cat", "/var/log/nginx/access.log").stdout
    narinfo = f"/{Path(shared).name[:32]}.narinfo"
    assert any(line.startswith(f"{cache_lab.address('u1')} ") and narinfo in line and '" 200 ' in line
               for line in log.splitlines())


def test_an_unsigned_path_in_the_cache_is_refused_by_a_host_that_trusts_the_cache(cache_lab: Lab):
    # A built (input-addressed) path: a content-addressed one (nix-store --add, builtins.toFile)
    # proves itself and is accepted without a signature, by design.
    flake = fleet_with(cache_lab, "unsigned-fleet", release=f"u{uuid.uuid4().hex[:8]}")
    (unsigned,) = build(cache_lab, flake, "web1")
    assert [t for t in nix(cache_lab.env, "path-info", "--sigs", unsigned).stdout.split() if ":" in t] == []
    nix(cache_lab.env, "copy", "--to", cache_lab.env["NIXTASKS_LAB_CACHE_PUSH"], unsigned)
    assert f"{Path(unsigned).name[:32]}.narinfo" in cache_files(cache_lab)
    proc = cache_lab.exec("c1", "nix-store", "--realise", unsigned, check=False)
    assert proc.returncode != 0
    assert "is not signed by any of the keys in 'trusted-public-keys'" in proc.stderr
    assert not valid_on(cache_lab, "c1", unsigned)


def test_a_build_handed_to_the_builder_host_with_max_jobs_0(cache_lab: Lab):
    builders = cache_lab.env["NIXTASKS_LAB_BUILDERS"]
    assert builders == "ssh://builder x86_64-linux - 2"
    flake = fleet_with(cache_lab, "builder-fleet", release=f"b{uuid.uuid4().hex[:8]}", shared_payload_kib=64)
    (system,) = build(cache_lab, flake, "web1", extra=("--max-jobs", "0", "--builders", builders))
    assert Path(system, "nixos-version").read_text() == json.loads((flake / "hosts.json").read_text())[
        "defaults"]["release"]
    # Built there (the deployer may build nothing), then copied back here.
    assert valid_on(cache_lab, "builder", system)
    assert valid_on(cache_lab, "builder", os.readlink(f"{system}/shared-payload"))


def process_state(pid: int) -> tuple[str, str] | None:
    """A process's state letter and start time (which guards PID reuse), or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], fields[19]


def test_a_deployer_host_booted_after_the_cache_pushes_to_it_with_the_labs_key(cache_lab: Lab):
    labctl("up", "d1", "--deployer")
    flake = fleet_with(cache_lab, "deployer-fleet", release=f"d{uuid.uuid4().hex[:8]}")
    # Built from a copy: Nix 2.26 rewrites the relative path input's lock entry (docs/lab.md).
    script = (f"cp -r {flake} /root/fleet && p=$(nix build --json --no-link path:/root/fleet#web1 | python3 -c "
              "'import json, sys; print(json.load(sys.stdin)[0][\"outputs\"][\"out\"])') && "
              'nix store sign --key-file "$NIXTASKS_LAB_CACHE_SECRET_KEY_FILE" -r "$p" && '
              'nix copy --to "$NIXTASKS_LAB_CACHE_PUSH" "$p" && echo "$p"')
    system = cache_lab.exec("d1", "bash", "-lc", script).stdout.split()[-1]
    assert f"{Path(system).name[:32]}.narinfo" in cache_files(cache_lab)
    cache_lab.exec("c2", "nix-store", "--realise", system)  # and a host takes it, signed by the lab's key
    assert valid_on(cache_lab, "c2", system)


def cgroup_processes(host: str) -> dict[int, str]:
    """The host's processes, as this machine sees them: PID -> its start time."""
    found: dict[int, str] = {}
    for root in lab_config.CGROUP_ROOTS:
        for procs in (root / lab_config.CGROUP / host).rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                state = process_state(int(pid))
                if state:
                    found[int(pid)] = state[1]
    return found


def test_down_cache_leaves_no_nginx_or_other_process_of_it(cache_lab: Lab):
    before = cgroup_processes("cache")
    nginx = [pid for pid in before if Path(f"/proc/{pid}/comm").read_text().strip() == "nginx"]
    assert len(nginx) >= 2  # the master and a worker
    labctl("down", "cache")
    # Killed ones that their (killed) parent has not reaped yet linger as zombies: they run nothing.
    left = {pid: state for pid, started in before.items()
            if (state := process_state(pid)) and state == (state[0], started) and state[0] != "Z"}
    assert left == {}
    assert "cache" not in json.loads((STATE / "hosts.json").read_text())["hosts"]
