"""The secrets guard: before a build copies the flake into the world-readable Nix store,
look through the files git tracks for plaintext secrets (private keys, age secret keys,
cleartext passwords in Nix files). Encrypted files (age, sops) are fine."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import NixtasksError
from ..host import commands, gitstate
from ..host.runner import Runner
from ..models import LOCAL

MAX_BYTES = 1024 * 1024  # larger files are not configuration
PATTERNS = (
    (re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----"), "a private key"),
    (re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]{50,}"), "an age secret key"),
    # A Nix binary-cache signing key: name:base64 of 64 bytes (the public key is 32 bytes).
    (re.compile(r"\b[\w.-]+:[A-Za-z0-9+/]{86}==(?![A-Za-z0-9+/=])"), "a Nix signing key"),
)
WIREGUARD = re.compile(r'\bprivateKey\s*=\s*"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]="')
NIX_PASSWORD = re.compile(r"""\b(password|initialPassword)\s*=\s*"([^"$]{1,200})"\s*;""")
ENCRYPTED = (
    re.compile(r"^-----BEGIN AGE ENCRYPTED FILE-----", re.M),
    re.compile(r"^age-encryption\.org/v1", re.M),
    re.compile(r"^sops:\s*$", re.M),  # sops YAML
    re.compile(r'"sops"\s*:\s*\{'),  # sops JSON
    re.compile(r"^\[sops\]", re.M),  # sops INI
    re.compile(r"ENC\[AES256_GCM,"),  # sops dotenv and values
)
ADVICE = ("keep secrets out of the Nix store: encrypt them with agenix (https://github.com/ryantm/agenix) or "
          "sops-nix (https://github.com/Mic92/sops-nix)")


@dataclass(frozen=True)
class Finding:
    path: str  # relative to the flake
    line: int
    what: str


def scan_text(path: str, text: str) -> list[Finding]:
    """Plaintext secrets in one file's text. Pure."""
    if any(p.search(text) for p in ENCRYPTED):
        return []
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for pattern, what in PATTERNS:
            if pattern.search(line):
                found.append(Finding(path, number, what))
        if path.endswith(".nix"):
            match = NIX_PASSWORD.search(line)
            if match:
                found.append(Finding(path, number, f"a cleartext {match[1]} (use hashedPasswordFile or a "
                                                    "secret manager)"))
            if WIREGUARD.search(line):
                found.append(Finding(path, number, "a WireGuard private key (use privateKeyFile)"))
    return found


def scan(directory: Path, files: Iterable[str], allowed: Sequence[str]) -> list[Finding]:
    """Every tracked file but the allowed ones (exact paths, or directories ending in /)."""
    found: list[Finding] = []
    for name in files:
        if any(name == a or (a.endswith("/") and name.startswith(a)) for a in allowed):
            continue
        path = directory / name
        try:  # a symlink is copied as a link, not as what it points to
            if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_BYTES:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if b"\0" in data:
            continue
        found += scan_text(name, data.decode("utf-8", errors="replace"))
    return found


def tracked_files(directory: str, runner: Runner) -> list[str]:
    """What git tracks in the whole repository: Nix copies all of it, even for a flake in a
    subdirectory. A failure refuses: the guard never passes what it could not read."""
    result = runner.run(commands.git_tracked_files(directory), LOCAL, check=False)
    if not result.ok:
        raise NixtasksError(f"git cannot list the files it tracks in {directory} ({result.stderr.strip()[-200:]}); "
                            "the secrets guard cannot check them")
    return [name for name in result.stdout.split("\0") if name]


def all_files(directory: Path) -> list[str]:
    """A flake outside git, or a path: flake: Nix copies every file of the directory."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                  if ".git" not in p.relative_to(directory).parts and (p.is_file() or p.is_symlink()))


def guard(flake: str, allowed: Sequence[str], runner: Runner) -> None:
    """Refuse, naming the file and line, when what the flake's source would copy into the Nix
    store holds a plaintext secret. Paths are relative to the git repository's top (or to the
    flake's directory when git does not hold it)."""
    directory = gitstate.flake_dir(flake)
    if directory is None:  # github:..., git+https://...: what Nix fetches is not on this disk
        return
    top = None if flake.startswith("path:") else gitstate.toplevel(runner, flake)
    base = Path(top or directory)
    files = tracked_files(str(base), runner) if top else all_files(base)
    found = scan(base, files, allowed)
    if found:
        first = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise NixtasksError(f"{first.path}:{first.line}: {first.what} in a file the flake would copy into the "
                            f"world-readable Nix store{more}; nothing was built. {ADVICE}; or, if it is meant "
                            f"to be there, pass --allow-secret {first.path} (or list it in [defaults] "
                            "allow_secrets)")
