"""A release through the binary cache (issue 21), through the engine with the recording runner:
signed and pushed once, before any host takes it; each host realises its system from the cache
with its own trust; a host the cache cannot serve gets a direct copy (reported), or fails the
deploy with --cache-only before anything is activated anywhere; a push that fails stops the
deploy; a signing key others may read, or that does not match the public key, changes nothing.
The key is never on a command line."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from nixtasks.actions import access, cache
from nixtasks.actions.plan import report_json
from nixtasks.errors import NixtasksError, UsageError
from nixtasks.fleet import engine
from nixtasks.host import commands
from nixtasks.host.runner import Result, stdin_data
from nixtasks.models import Cache, Command, Secret, Target
from tests.fakes import NEW, FakeHost

from .flows import Fleet, hosts, outcomes, request

SHARED = "/nix/store/" + "s" * 32 + "-shared-payload"
SIZES = {NEW: 4096, SHARED: 20 * 2**20}
URL = "http://cache.lab"
PUSHED_TO = f"{URL}?compression=zstd"  # what the push writes to: zstd, not Nix's slow default xz
SEED = bytes(range(32))
PUBLIC = bytes(range(32, 64))
SECRET_TEXT = f"lab-cache-1:{base64.b64encode(SEED + PUBLIC).decode()}"
PUBLIC_KEY = f"lab-cache-1:{base64.b64encode(PUBLIC).decode()}"
UNTRUSTED = ("warning: ignoring substitute for '/nix/store/x', as it's not signed by any of the keys in "
             "'trusted-public-keys'\nerror: don't know how to build these paths:\n  /nix/store/x")


@dataclass
class CachedHost(FakeHost):
    """A host that lacks the whole new closure, and takes it from the cache unless `refuses`."""

    refuses: str = ""  # what its `nix-store --realise` says when the cache cannot serve it

    def __call__(self, step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if cmd.argv[0] == "xargs":  # which paths it lacks: all
            return Result(0, str(cmd.stdin), "")
        if "extra-substituters" in cmd.argv:
            return Result(1, "", self.refuses) if self.refuses else Result(0, "", "")
        return super().__call__(step, cmd, target, fresh)


@dataclass
class CacheFleet(Fleet):
    """The deployer's Nix answers for the cache: the closure's sizes, what the cache has, the push."""

    cache_has: set[str] = field(default_factory=set)
    push_fails: bool = False

    def respond(self, step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        argv = cmd.argv
        if target.address is None and "path-info" in argv and "-r" in argv:
            return Result(0, json.dumps([{"path": p, "narSize": n} for p, n in SIZES.items()]), "")
        if target.address is None and "path-info" in argv and "--store" in argv:
            asked = argv[argv.index("--") + 1:]
            return Result(0, json.dumps([{"path": p, "valid": p in self.cache_has} for p in asked]), "")
        if target.address is None and "copy" in argv and argv[argv.index("--to") + 1] == PUSHED_TO:
            if self.push_fails:
                return Result(1, "", "error: HTTP error 403 (forbidden)")
            self.cache_has |= set(SIZES)
            return Result(0, "", "")
        return super().respond(step, cmd, target, fresh)

    def deployer_argv(self) -> list[tuple[str, ...]]:
        return [c.cmd.argv for c in self.runner.calls if c.target.address is None]

    def host_calls(self, name: str) -> list[str]:
        return [" ".join(c.cmd.argv) for c in self.runner.calls if c.target.address == name]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret-key"
    path.write_text(SECRET_TEXT + "\n")
    path.chmod(0o600)
    return path


def fleet_with_cache(tmp_path: Path, **fakes: CachedHost) -> CacheFleet:
    names = ("web1", "web2", "db1")
    return CacheFleet(tmp_path, {n: fakes.get(n) or CachedHost() for n in names})


def through(key_file: Path, **changes: object) -> Cache:
    return replace(Cache(URL, URL, PUBLIC_KEY, str(key_file)), **changes)


def deploy(fleet: CacheFleet, the_cache: Cache | None):
    req = replace(request(hosts(*fleet.fakes)), cache=the_cache)
    return engine.deploy(req, fleet.tools(True))


def test_the_release_is_signed_and_pushed_once_then_every_host_takes_it_from_the_cache(tmp_path, key_file):
    fleet = fleet_with_cache(tmp_path)
    report = deploy(fleet, through(key_file))
    assert outcomes(report) == {"web1": "ok", "web2": "ok", "db1": "ok"}
    deployer = fleet.deployer_argv()
    signs = [a for a in deployer if "sign" in a]
    pushes = [a for a in deployer if "copy" in a and PUSHED_TO in a]
    assert len(signs) == 1 and signs[0][-2:] == ("--", NEW) and "/dev/stdin" in signs[0]
    assert len(pushes) == 1  # once for the release, not once per host
    assert not [a for a in deployer if "copy" in a and any(x.startswith("ssh://") for x in a)]  # no direct copy
    sign_call = next(c for c in fleet.runner.calls if "sign" in c.cmd.argv)
    assert stdin_data(sign_call.cmd) == SECRET_TEXT  # the key goes in on standard input
    for name in fleet.fakes:
        fetches = [c for c in fleet.host_calls(name) if "extra-substituters" in c]
        assert len(fetches) == 1 and f"extra-substituters {URL}" in fetches[0] and fetches[0].endswith(NEW)
    # the plan says how each closure went, the report what each received, and what left here
    text = fleet.text()
    assert text.count(f"    copied:  via cache {URL} (20.0 MiB)") == 3
    data = report_json(report)
    assert {h["host"]: (h["received_from"], h["received_bytes"]) for h in data["hosts"]} == {
        n: (f"cache {URL}", sum(SIZES.values())) for n in fleet.fakes}
    assert data["sent_bytes"] == sum(SIZES.values())  # pushed once; no host got a direct copy
    assert "sent from here: 20.0 MiB; 3 host(s) took their system from the cache, 0 got a direct copy" in text


def test_the_key_is_on_no_command_line_and_in_no_output(tmp_path, key_file):
    fleet = fleet_with_cache(tmp_path, web2=CachedHost(refuses=UNTRUSTED))
    deploy(fleet, through(key_file))
    secret_part = SECRET_TEXT.split(":")[1]
    for call in fleet.runner.calls:
        words = " ".join(call.cmd.argv)
        assert str(key_file) not in words and secret_part not in words
        assert secret_part not in repr(call.cmd)  # not even in a Command's repr (a log line, an error)
    assert secret_part not in fleet.text() and str(key_file) not in fleet.text()
    assert secret_part not in (tmp_path / "journal.jsonl").read_text()


def test_a_host_that_does_not_trust_the_key_gets_a_direct_copy_and_the_report_says_so(tmp_path, key_file):
    fleet = fleet_with_cache(tmp_path, web2=CachedHost(refuses=UNTRUSTED))
    report = deploy(fleet, through(key_file))
    assert outcomes(report) == {"web1": "ok", "web2": "ok", "db1": "ok"}
    direct = [a for a in fleet.deployer_argv() if "copy" in a and "ssh://root@web2" in a]
    assert len(direct) == 1
    web2 = next(r for r in report.results if r.host == "web2")
    assert web2.delivery is not None and web2.delivery.source == "deployer"
    assert "does not trust the cache's key" in web2.delivery.note and PUBLIC_KEY in web2.delivery.note
    assert 'nix.settings.trusted-public-keys = [ "' + PUBLIC_KEY in web2.delivery.note
    text = fleet.text()
    assert "warning: web2: not through the cache (the host does not trust the cache's key" in text
    assert "    copied:  direct from the deployer (20.0 MiB); not through the cache: the host does not trust" in text
    assert report.sent_bytes == 2 * sum(SIZES.values())  # the push, and web2's copy
    assert "2 host(s) took their system from the cache, 1 got a direct copy" in text


def test_cache_only_fails_the_deploy_before_anything_is_activated_anywhere(tmp_path, key_file):
    fleet = fleet_with_cache(tmp_path, db1=CachedHost(refuses="error: unable to download 'http://cache.lab/x': "
                                                              "Couldn't connect to server (7)"))
    with pytest.raises(NixtasksError) as failed:
        deploy(fleet, through(key_file, only=True))
    assert str(failed.value).startswith(f"db1: could not take its system from the cache {URL}: ")
    assert "Couldn't connect to server" in str(failed.value) and "nothing was activated anywhere" in str(failed.value)
    assert not [a for a in fleet.deployer_argv() if "copy" in a and any(x.startswith("ssh://") for x in a)]
    for name in fleet.fakes:
        assert not [c for c in fleet.steps(name) if c.startswith(("lock", "arm", "activate", "set-profile"))]
    assert fleet.asked() == []


def test_a_push_that_fails_stops_the_deploy_before_any_host_takes_anything(tmp_path, key_file):
    fleet = fleet_with_cache(tmp_path)
    fleet.push_fails = True
    with pytest.raises(NixtasksError) as failed:
        deploy(fleet, through(key_file))
    assert f"could not push the release to the cache {URL}" in str(failed.value)
    assert "403" in str(failed.value) and "nothing was activated anywhere" in str(failed.value)
    for name in fleet.fakes:
        assert not [c for c in fleet.host_calls(name) if "extra-substituters" in c or "switch-to-configuration" in c]
    assert fleet.asked() == []


def test_a_cache_that_has_the_release_gets_no_push(tmp_path, key_file):
    fleet = fleet_with_cache(tmp_path)
    fleet.cache_has = set(SIZES)
    report = deploy(fleet, through(key_file))
    assert report.ok and not [a for a in fleet.deployer_argv() if "copy" in a]
    assert report.sent_bytes == 0
    assert f"cache: {URL} had all 2 paths already" in fleet.text()


@pytest.mark.parametrize("problem", ["readable", "missing", "not a key", "another key"])
def test_a_key_that_cannot_be_used_is_refused_before_anything_is_built(tmp_path, key_file, problem):
    the_cache = through(key_file)
    if problem == "readable":
        key_file.chmod(0o644)
        said = f"other users may read it (mode 0644); a signing key must be its owner's alone: chmod 600 {key_file}"
    elif problem == "missing":
        the_cache = through(key_file, secret_key_file=str(tmp_path / "nowhere"))
        said = "No such file or directory; make one with: nix-store --generate-binary-cache-key"
    elif problem == "not a key":
        key_file.write_text("hello\n")
        said = "not a Nix secret key (name:base64 of 64 bytes)"
    else:
        the_cache = through(key_file, public_key="lab-cache-1:" + base64.b64encode(SEED).decode())
        said = f"its public key is {PUBLIC_KEY}, not [cache] public_key lab-cache-1:"
    fleet = fleet_with_cache(tmp_path)
    with pytest.raises(UsageError) as refused:
        deploy(fleet, the_cache)
    assert said in str(refused.value) and refused.value.exit_code == 2
    assert fleet.deployer() == [] and all(fleet.host_calls(n) == [] for n in fleet.fakes)  # nothing run anywhere
    assert SECRET_TEXT.split(":")[1] not in str(refused.value)


def test_the_public_key_is_the_secret_keys_last_half():
    assert cache.public_key_of(SECRET_TEXT) == PUBLIC_KEY
    assert cache.public_key_of("name:" + base64.b64encode(SEED).decode()) is None  # 32 bytes: not a secret key
    assert cache.public_key_of("no-colon") is None and cache.public_key_of(":" + SECRET_TEXT.split(":")[1]) is None


@pytest.mark.parametrize(("push", "pushed_to"), [
    ("http://cache.lab", "http://cache.lab?compression=zstd"),
    ("https://cache.lab/nix?", "https://cache.lab/nix?compression=zstd"),
    ("s3://bucket?region=eu-west-1", "s3://bucket?region=eu-west-1&compression=zstd"),
    ("file:///srv/cache", "file:///srv/cache?compression=zstd"),
    ("http://cache.lab?compression=xz", "http://cache.lab?compression=xz"),  # the inventory's own choice stays
    ("s3://bucket?compression=none&region=x", "s3://bucket?compression=none&region=x"),
    ("ssh://cache.lab", "ssh://cache.lab"),  # not a binary cache store: it takes no compression
])
def test_the_push_compresses_with_zstd_unless_the_url_says_otherwise(tmp_path, key_file, push, pushed_to):
    fleet = fleet_with_cache(tmp_path)
    cache.push(through(key_file, push=push), [NEW], Secret(SECRET_TEXT), fleet.runner, lambda line: None)
    copies = [a for a in fleet.deployer_argv() if "copy" in a]
    assert len(copies) == 1 and copies[0][copies[0].index("--to") + 1] == pushed_to
    # what the cache has is asked of the URL as written: compression is the push's business only
    asked = next(a for a in fleet.deployer_argv() if "--store" in a)
    assert asked[asked.index("--store") + 1] == push


def test_nix_path_info_of_a_store_old_and_new():
    old = '[{"path":"/nix/store/a-x","valid":false},{"path":"/nix/store/b-y","narSize":5}]'
    new = '{"/nix/store/a-x": null, "/nix/store/b-y": {"narSize": 5}}'
    assert cache.absent(old) == cache.absent(new) == {"/nix/store/a-x"}


def test_the_runner_hands_a_secret_to_standard_input_and_nowhere_else():
    cmd = commands.sign_paths([NEW], Secret(SECRET_TEXT))
    assert stdin_data(cmd) == SECRET_TEXT and SECRET_TEXT not in repr(cmd) and os.sep + "dev/stdin" in cmd.argv


def test_doctor_says_whether_a_host_trusts_and_lists_the_cache(key_file):
    the_cache = through(key_file)
    trusting = f"substituters = {URL} https://x\ntrusted-public-keys = other:AAAA {PUBLIC_KEY}\nrequire-sigs = true\n"
    found = access.cache_findings("web1", the_cache, trusting)
    assert [(f.check, f.ok) for f in found] == [("cache key", True), ("cache", True)]
    found = access.cache_findings("web2", the_cache, "substituters = \ntrusted-public-keys = other:AAAA\n"
                                                     "require-sigs = false\n")
    assert [(f.check, f.ok, f.warning) for f in found] == [("cache key", False, False), ("cache", False, True),
                                                          ("signatures", False, True)]
    assert found[0].fix == f'add to its configuration: nix.settings.trusted-public-keys = [ "{PUBLIC_KEY}" ];'
    assert found[1].fix == f'add to its configuration: nix.settings.substituters = [ "{URL}" ];'
    assert access.key_finding(the_cache).ok
    key_file.chmod(0o640)
    bad = access.key_finding(the_cache)
    assert not bad.ok and bad.fix == f"a signing key must be its owner's alone: chmod 600 {key_file}"
