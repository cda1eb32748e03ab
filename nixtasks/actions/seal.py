"""Sealed plan files: `stage` signs each part of its plan with a key that never leaves the
deployer, and `apply` deploys a plan only when every part is as it was staged. A plan edited by
hand, or edited and signed again elsewhere, names what does not match and changes nothing.

The key is 32 random bytes in the deployer's state directory (`plan-key`, mode 0600, made at
the first `stage`; NIXTASKS_PLAN_KEY names another file). Each part is an HMAC-SHA256 over its
canonical JSON, so a refusal can say which host's entry, or which field, was changed."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .journal import deployer_journal_path

KEY_BYTES = 32
SEALED_FIELDS = ("version", "action", "git_revision", "git_dirty", "created")


def key_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("NIXTASKS_PLAN_KEY"):
        return Path(env["NIXTASKS_PLAN_KEY"])
    return deployer_journal_path(env).parent / "plan-key"


def load_key(path: Path, *, make: bool) -> bytes:
    """The deployer's key; made (0600) when `make` and there is none yet. Like ssh with a
    private key, a key others may read is refused: with it, anyone could seal a plan."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if not make:
            raise UsageError(f"{path}: no plan key on this deployer, so no plan can have been sealed here; stage "
                             "the plan on this deployer: invoke stage") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under another name, then linked into place: a `stage` beside this one
        # finds either no key or a whole one, and the first link made wins.
        fresh = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
        try:
            os.link(fresh, path)
        except FileExistsError:
            pass
        finally:
            fresh.unlink()
        return load_key(path, make=False)
    if mode & 0o077:
        raise UsageError(f"{path}: others may read the plan key; chmod 600 {path}")
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise UsageError(f"{path}: not a plan key ({len(key)} bytes, not {KEY_BYTES}); remove it and stage again")
    return key


def key_id(key: bytes) -> str:
    """Names the key (not a secret): a plan sealed by another deployer's key says so."""
    return hashlib.sha256(b"nixtasks plan key id\0" + key).hexdigest()[:16]


def digest(key: bytes, plan_id: str, part: str, value: Any) -> str:
    """The part's MAC, bound to its plan by the plan's id: a part of another plan sealed with the
    same key (an older host entry) does not match in this one."""
    text = json.dumps([plan_id, part, value], sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def parts(plan: Mapping[str, Any]) -> dict[str, Any]:
    """What is sealed, by name: each top-level field, and each host's entry on its own."""
    found: dict[str, Any] = {name: plan.get(name) for name in SEALED_FIELDS}
    hosts = plan.get("hosts")
    if isinstance(hosts, dict):
        found.update({f"hosts.{name}": entry for name, entry in hosts.items()})
    return found


def seal(plan: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    plan_id = secrets.token_hex(16)
    return {"key": key_id(key), "plan": plan_id,
            "parts": {name: digest(key, plan_id, name, value) for name, value in parts(plan).items()}}


def same(given: object, expected: str) -> bool:
    """A digest from the file against ours, in constant time; anything not a digest is not."""
    return isinstance(given, str) and given.isascii() and hmac.compare_digest(given.encode(), expected.encode())


def mismatches(plan: Mapping[str, Any], key: bytes) -> list[str]:
    """What does not match the plan's seal, in words; empty when the plan is as it was staged."""
    given = plan.get("seal")
    if not isinstance(given, dict) or not isinstance(given.get("parts"), dict):
        return ["it has no seal (made by hand, or by a nixtasks before sealed plans)"]
    if given.get("key") != key_id(key):
        return [f"it was sealed with another key ({given.get('key')!r}; this deployer's is {key_id(key)!r}): stage "
                "it on the deployer that applies it"]
    plan_id = given.get("plan")
    if not isinstance(plan_id, str):
        return ["its seal names no plan"]
    sealed, now = given["parts"], parts(plan)
    wrong = [f"{name} was changed after stage" for name, value in now.items()
             if name in sealed and not same(sealed[name], digest(key, plan_id, name, value))]
    wrong += [f"{name} was added after stage" for name in now if name not in sealed]
    wrong += [f"{name} was removed after stage" for name in sealed if name not in now]
    return wrong
