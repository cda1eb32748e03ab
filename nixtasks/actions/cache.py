"""A release through a binary cache: the systems signed here with the operator's key, pushed
once (only what the cache lacks), then each host realises its system from the cache with its
own trust settings; a host the cache cannot serve gets a direct copy, reported as such, or
fails with `only` (--cache-only). The signing key never leaves this machine: it is read here
(refused unless only its owner can read it) and handed to `nix store sign` on standard input."""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from ..errors import NixtasksError, UsageError
from ..host import commands, space
from ..host.runner import Runner
from ..models import LOCAL, Cache, Delivery, Echo, Host, Secret
from .closures import Built, copy

KEY_HINT = "make one with: nix-store --generate-binary-cache-key NAME SECRET-FILE PUBLIC-FILE"
# Nix compresses what it writes to a binary cache with xz (level 6, one thread) unless the store
# URL names another compression: about 2 MB/s on a small deployer, so 20 MiB of new paths took
# 12 s to push over a link that carries them in 2 (benchmarks/bench, the cache profile). zstd
# keeps up with the link, and every Nix since 2.4 reads it as a substituter.
PUSH_COMPRESSION = "zstd"
BINARY_CACHE_SCHEMES = ("http", "https", "s3", "file")  # stores that take `compression` (ssh:// does not)


def read_key(cache: Cache) -> Secret:
    """The secret key, checked: a regular file only its owner may read, in Nix's `name:base64`
    form, whose public half is the inventory's `public_key` (else every host would refuse what
    it signs, and each would quietly get a direct copy)."""
    where = f"[cache] secret_key_file {cache.secret_key_file}"
    try:
        info = os.stat(cache.secret_key_file)
    except OSError as exc:
        raise UsageError(f"{where}: {exc.strerror}; {KEY_HINT}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{where}: not a regular file; {KEY_HINT}")
    if info.st_mode & 0o077:
        raise UsageError(f"{where}: other users may read it (mode {stat.S_IMODE(info.st_mode):04o}); a signing key "
                         f"must be its owner's alone: chmod 600 {cache.secret_key_file}")
    try:
        with open(cache.secret_key_file, encoding="ascii") as file:
            text = file.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{where}: cannot be read as a key ({exc.__class__.__name__}); {KEY_HINT}") from exc
    public = public_key_of(text)
    if public is None:
        raise UsageError(f"{where}: not a Nix secret key (name:base64 of 64 bytes); {KEY_HINT}")
    if public != cache.public_key:
        raise UsageError(f"{where}: its public key is {public}, not [cache] public_key {cache.public_key}; the "
                         "hosts would refuse every path it signs. Give the key pair's own public key")
    return Secret(text)


def public_key_of(secret: str) -> str | None:
    """Nix's (libsodium's) ed25519 secret key holds its public key in its last 32 bytes."""
    name, _, encoded = secret.partition(":")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not name or len(raw) != 64:
        return None
    return f"{name}:{base64.b64encode(raw[32:]).decode()}"


@dataclass(frozen=True)
class Pushed:
    paths: int  # store paths the cache lacked, now sent
    bytes: int  # their NAR sizes


def push(cache: Cache, systems: Sequence[str], key: Secret, runner: Runner, echo: Echo) -> Pushed:
    """Sign the systems' closures here and send the cache what it lacks, once for the release.
    A failure raises: nothing has been activated anywhere, and nothing will be."""
    sizes = space.nar_sizes(runner.run(commands.closure_info(*systems), LOCAL).stdout)
    runner.run(commands.sign_paths(systems, key), LOCAL, label="sign")
    answer = runner.run(commands.store_path_info(cache.push, sorted(sizes)), LOCAL, check=False)
    lacking = absent(answer.stdout) if answer.ok else set(sizes)
    if lacking:
        send = commands.push_to_cache(push_store(cache.push), systems)
        result = runner.run(send, LOCAL, label="push", stream=True, check=False)
        if not result.ok:
            why = runner.failure(send, LOCAL, "push", result)
            raise NixtasksError(f"could not push the release to the cache {cache.push}: {why}; nothing was activated "
                                "anywhere. Check the cache (or deploy without it: --no-cache)")
    pushed = Pushed(len(lacking), sum(sizes.get(p, 0) for p in lacking))
    echo(f"cache: {cache.push} had all {len(sizes)} paths already" if not lacking else
         f"cache: pushed {pushed.paths} of {len(sizes)} paths ({space.human(pushed.bytes)}) to {cache.push}")
    return pushed


def push_store(store: str) -> str:
    """The store URL the release is pushed to: a binary cache's gets zstd compression unless
    the inventory names a compression of its own (`?compression=xz` keeps Nix's default)."""
    parts = urlsplit(store)
    if parts.scheme not in BINARY_CACHE_SCHEMES or "compression" in parse_qs(parts.query):
        return store
    joint = "&" if parts.query else "" if store.endswith("?") else "?"
    return f"{store}{joint}compression={PUSH_COMPRESSION}"


def absent(path_info_json: str) -> set[str]:
    """The paths `nix path-info --json --store URL` says the store lacks: `"valid": false`
    entries before Nix 2.19, null values since."""
    try:
        entries = json.loads(path_info_json)
    except ValueError as exc:
        raise NixtasksError(f"nix path-info printed nothing I can read: {path_info_json[:100]!r}") from exc
    if isinstance(entries, dict):
        return {path for path, info in entries.items() if not info}
    return {e["path"] for e in entries if e.get("valid") is False}


def fetch(host: Host, cache: Cache, system: str, runner: Runner, timeout: float | None = None) -> str:
    """The host realises its system from the cache: "" when it did, else why not (in the
    host's own words: not trusted, not there, the cache down)."""
    cmd = commands.fetch_from_cache(cache.url, system)
    result = runner.run(cmd, host.target, label=host.name, check=False, timeout=timeout)
    if result.ok:
        return ""
    return cache_refusal(result.stderr, str(runner.failure(cmd, host.target, host.name, result)), cache)


def cache_refusal(stderr: str, failure: str, cache: Cache) -> str:
    """Why a host did not take its system from the cache, with what to do when it is trust:
    Nix only warns that it ignored a substitute not signed by a key it trusts, then fails."""
    if "not signed by any of the keys" in stderr or "lacks a valid signature" in stderr:
        return (f"the host does not trust the cache's key {cache.public_key} (Nix ignored its paths); to use the "
                f'cache, add to its configuration: nix.settings.trusted-public-keys = [ "{cache.public_key}" ];')
    return failure


def deliver(host: Host, built: Built, lacking: int, cache: Cache | None, runner: Runner, echo: Echo,
            timeout: float | None = None) -> Delivery | None:
    """The host's system onto the host: from the cache when there is one and the system was built
    here, else (or when the cache cannot serve it, unless `cache.only`) copied directly. None:
    nothing to copy (it was built there, or --dry-run)."""
    if built.at == host.target or runner.dry_run:
        return None
    source = "deployer" if built.at.is_local else f"build host {built.at}"
    if cache is None or not built.at.is_local:
        copy(host, built, runner, timeout=timeout)
        return Delivery(lacking, source)
    why = fetch(host, cache, built.path, runner, timeout)
    if not why:
        return Delivery(lacking, f"cache {cache.url}")
    if cache.only:
        raise NixtasksError(f"{host.name}: could not take its system from the cache {cache.url}: {why}; nothing "
                            "was activated anywhere (--cache-only: without it, such a host gets a direct copy)")
    echo(f"warning: {host.name}: not through the cache ({why}); copying it directly")
    copy(host, built, runner, timeout=timeout)
    return Delivery(lacking, source, f"not through the cache: {why}")
