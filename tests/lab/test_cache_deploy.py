"""nixtasks through the lab's binary cache (issue 21), each test asserting the hosts' real state:
a fleet switch whose release is pushed once and that every host takes from the cache (its paths
then carry the cache's signature); a host that does not trust the key gets a direct copy, reported,
or fails the deploy with --cache-only before anything is activated anywhere; the cache out of the
hosts' reach (fallback reported; --cache-only: nothing activated); a push that fails (the cache
host down: nothing activated anywhere); a build on the builder host with the deployer building
nothing; and the signing key in no process's command line, output, journal or store.

The module boots its own hosts beside the session's: cache, builder, c1 (Debian 12, Nix 2.8) and
c2 (Debian 13, Nix 2.26) that substitute from the cache, u1 that trusts another key."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import STATE, Fleet, Lab, lab_config, labctl, labctl_env, repo_with_hosts, start_invoke

HOSTS = ("cache", "builder", "c1", "c2", "u1")
TRUSTING = ("c1", "c2")
SECRET_KEY = STATE / "cache" / "secret-key"


@pytest.fixture(scope="module")
def cache_fleet(lab: Lab) -> Iterator[Fleet]:
    try:
        labctl("up", "cache", "builder", "c1", "--cache")
        labctl("up", "c2", "--suite", "trixie", "--cache")
        labctl("up", "u1", "--cache", "--untrusted")
        env = {**lab.env, **labctl_env()}
        cached = Lab(lab.workspace, env)
        path = repo_with_hosts(lab.workspace / "cache-fleet", {h: f"root@{h}" for h in ("c1", "c2", "u1")},
                               {"c1": "cached", "c2": "cached", "u1": "untrusted"}, "cached")
        assert "[cache]" in (path / "nixtasks.toml").read_text()  # make-repo wrote it: the lab has a cache
        yield Fleet(cached, path)
    finally:
        hosts = json.loads((STATE / "hosts.json").read_text())["hosts"]
        left = [h for h in HOSTS if h in hosts]
        if left:
            labctl("down", *left, check=False)


@pytest.fixture
def fleet(cache_fleet: Fleet) -> Fleet:
    """A new release every test (2 MiB shared by every host), so the cache lacks it."""
    data = json.loads((cache_fleet.path / "hosts.json").read_text())
    data["defaults"].update(release=f"r{uuid.uuid4().hex[:6]}", shared_payload_kib=2048)
    (cache_fleet.path / "hosts.json").write_text(json.dumps(data, indent=2) + "\n")
    cache_fleet.git("commit", "-qam", "a new release")
    labctl("start", "cache", check=False)
    return cache_fleet


def report(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    data = json.loads(proc.stdout)
    return {**{h["host"]: h for h in data["hosts"]}, "": {"sent_bytes": data["sent_bytes"]}}


def signatures(fleet: Fleet, host: str, path: str) -> str:
    return fleet.lab.exec(host, "nix", "--extra-experimental-features", "nix-command", "path-info", "--sigs",
                          path).stdout


def nars_fetched_by(fleet: Fleet, host: str) -> int:
    """How many NARs `host` fetched from the cache, by the cache's access log."""
    log = fleet.lab.exec("cache", "cat", "/var/log/nginx/access.log").stdout
    return sum(1 for line in log.splitlines() if line.startswith(fleet.lab.address(host) + " ") and "GET /nar/" in line)


def shared_path(system: str) -> str:
    return str(Path(system, "shared-payload").readlink())


def nar_size(path: str) -> int:
    out = subprocess.run(["nix-store", "--query", "--size", path], text=True, capture_output=True, check=True)
    return int(out.stdout)


def test_a_release_is_pushed_once_and_every_host_takes_it_from_the_cache(fleet: Fleet):
    before = {h: fleet.lab.current_system(h) for h in TRUSTING}
    proc = fleet.invoke("switch", "--tag", "cached", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    hosts = report(proc)
    public_key = fleet.lab.env["NIXTASKS_LAB_CACHE_PUBLIC_KEY"]
    url = fleet.lab.env["NIXTASKS_LAB_CACHE_URL"]
    for host in TRUSTING:
        system = fleet.build(host)
        assert fleet.lab.current_system(host) == system == fleet.lab.profile(host) != before[host]
        assert hosts[host]["outcome"] == "ok" and hosts[host]["received_from"] == f"cache {url}"
        # what the host took carries the cache's signature, and it came from the cache
        assert public_key.split(":")[0] in signatures(fleet, host, shared_path(system))
        assert nars_fetched_by(fleet, host) >= 2  # its own system and the shared path, at least
    assert f"copied:  via cache {url}" in proc.stderr
    shared = shared_path(fleet.build("c1"))
    # the deployer sent the shared path once (a direct push would have sent it to each host)
    assert nar_size(shared) <= hosts[""]["sent_bytes"] < 2 * nar_size(shared)  # type: ignore[operator]
    # pushed with zstd, the inventory's URL naming no compression (Nix's default xz is slow)
    narinfo = fleet.lab.exec("cache", "cat", f"/srv/nix-cache/{Path(shared).name.split('-')[0]}.narinfo").stdout
    assert "Compression: zstd" in narinfo and "nar/" in narinfo
    puts = fleet.lab.exec("cache", "sh", "-c", "grep -c 'PUT /nar/' /var/log/nginx/access.log || true").stdout
    assert int(puts.strip() or 0) >= 1


def test_a_host_that_does_not_trust_the_key_gets_a_direct_copy_or_fails_with_cache_only(fleet: Fleet):
    before = {h: fleet.lab.current_system(h) for h in ("c1", "u1")}
    proc = fleet.invoke("switch", "--host", "c1,u1", "--yes", "--cache-only")
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: u1: could not take its system from the cache"), errors
    assert "does not trust the cache's key" in errors[0] and "nothing was activated anywhere" in errors[0]
    assert {h: fleet.lab.current_system(h) for h in ("c1", "u1")} == before  # neither host changed
    proc = fleet.invoke("switch", "--host", "c1,u1", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    hosts = report(proc)
    system = fleet.build("u1")
    assert fleet.lab.current_system("u1") == system and hosts["u1"]["received_from"] == "deployer"
    assert "warning: u1: not through the cache (the host does not trust the cache's key" in proc.stderr
    assert nars_fetched_by(fleet, "u1") == 0  # it took nothing from the cache (a copy from here has the sigs too)
    assert hosts["c1"]["received_from"].startswith("cache ")  # type: ignore[union-attr]


def test_a_cache_the_hosts_cannot_reach_falls_back_or_fails_with_cache_only(fleet: Fleet):
    """The deployer reaches the cache (the push works), c2 does not: a blackhole route to it."""
    cache = fleet.lab.address("cache")
    route = ["ip", "-n", lab_config.netns("c2"), "route"]
    subprocess.run([*route, "add", "blackhole", f"{cache}/32"], check=True)
    try:
        before = fleet.lab.current_system("c2")
        proc = fleet.invoke("switch", "--host", "c2", "--yes", "--cache-only")
        assert proc.returncode == 1 and fleet.lab.current_system("c2") == before, proc.stderr
        assert f"error: c2: could not take its system from the cache {fleet.lab.env['NIXTASKS_LAB_CACHE_URL']}" \
            in proc.stderr
        proc = fleet.invoke("switch", "--host", "c2", "--yes", "--json")
        assert proc.returncode == 0, proc.stderr
        assert fleet.lab.current_system("c2") == fleet.build("c2") == fleet.lab.profile("c2")
        assert report(proc)["c2"]["received_from"] == "deployer"
        assert "warning: c2: not through the cache (" in proc.stderr
    finally:
        subprocess.run([*route, "del", "blackhole", f"{cache}/32"], check=True)


def test_a_push_that_fails_activates_nothing_anywhere(fleet: Fleet):
    before = {h: fleet.lab.current_system(h) for h in TRUSTING}
    labctl("stop", "cache")
    try:
        proc = fleet.invoke("switch", "--tag", "cached", "--yes")
    finally:
        labctl("start", "cache")
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could not push the release to the cache" in errors[0], proc.stderr
    assert "nothing was activated anywhere" in errors[0]
    assert {h: fleet.lab.current_system(h) for h in TRUSTING} == before
    assert "Switch c1, c2" not in proc.stderr  # it stopped before the plan's question


def test_a_build_on_the_builder_host_with_this_machine_building_nothing(fleet: Fleet):
    builders = fleet.lab.env["NIXTASKS_LAB_BUILDERS"]
    proc = fleet.invoke("build", "--host", "c1", "--builders", builders, "--max-jobs", "0", "--no-link")
    assert proc.returncode == 0, proc.stderr
    system = fleet.build("c1")  # already built: this only finds it
    assert fleet.lab.exec("builder", "nix-store", "--check-validity", system, check=False).returncode == 0
    assert "building" in proc.stderr and "on 'ssh://builder'" in proc.stderr


def test_the_signing_key_is_in_no_command_line_output_journal_or_store(fleet: Fleet):
    secret = SECRET_KEY.read_text().strip()
    secret_part = secret.split(":", 1)[1]
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # every process's command line, again and again while the deploy runs
        while not stop.is_set():
            for pid in Path("/proc").glob("[0-9]*"):
                with contextlib.suppress(OSError):  # gone meanwhile
                    seen.append((pid / "cmdline").read_bytes().decode(errors="replace"))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    proc, lines = start_invoke(fleet.path, fleet.lab.env, "switch", "--tag", "cached", "--yes", "--verbose")
    try:
        assert proc.wait(timeout=300) == 0, "".join(lines)
    finally:
        stop.set()
        watcher.join()
    output = "".join(lines)
    assert "store sign --key-file /dev/stdin --recursive" in output  # --verbose shows the command: no key on it
    assert any("nix" in line and "copy" in line for line in seen)  # the watcher saw the deploy's commands
    assert not [line for line in seen if secret_part in line or str(SECRET_KEY) in line]
    assert secret_part not in output and str(SECRET_KEY) not in output
    assert secret_part not in Path(fleet.lab.env["NIXTASKS_JOURNAL"]).read_text()
    for host in TRUSTING:
        assert secret_part not in fleet.lab.exec(host, "cat", "/var/lib/nixtasks/journal.jsonl").stdout
    system = fleet.build("c1")
    found = subprocess.run(["grep", "-rlF", secret_part, *subprocess.run(
        ["nix-store", "-qR", system], text=True, capture_output=True, check=True).stdout.split()],
        capture_output=True, text=True)
    assert found.stdout == ""  # not in any path of the release


def test_doctor_names_the_host_that_does_not_trust_the_cache_and_the_line_to_add(fleet: Fleet):
    proc = fleet.invoke("doctor", "--host", "c1,u1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    key = fleet.lab.env["NIXTASKS_LAB_CACHE_PUBLIC_KEY"]
    name = key.split(":")[0]
    assert f"[ok  ] (deployer): cache key: the signing key is its owner's alone and matches {name}" in proc.stdout
    assert f"[ok  ] c1: cache key: it trusts the cache's key {name}" in proc.stdout
    assert f"[FAIL] u1: cache key: it does not trust the cache's key {name}" in proc.stdout
    assert f'fix: add to its configuration: nix.settings.trusted-public-keys = [ "{key}" ];' in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 1 problem(s)")
