"""Disk space before a copy: what the host lacks of a closure, against what it has free. Pure."""

from __future__ import annotations

import json

from ..errors import NixtasksError


def nar_sizes(path_info_json: str) -> dict[str, int]:
    """`nix path-info --json -r` -> {store path: NAR size}: a list before Nix 2.19, an
    object keyed by path since."""
    try:
        entries = json.loads(path_info_json)
        if isinstance(entries, dict):
            return {p: int((v or {}).get("narSize") or 0) for p, v in entries.items()}
        return {e["path"]: int(e.get("narSize") or 0) for e in entries}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise NixtasksError(f"nix path-info printed nothing I can read: {path_info_json[:100]!r}") from exc


def available_bytes(df_output: str) -> int | None:
    """`df -Pk PATH` -> bytes available to unprivileged writers... and to the nix-daemon."""
    lines = df_output.strip().splitlines()
    if len(lines) < 2:
        return None
    fields = lines[-1].split()
    return int(fields[3]) * 1024 if len(fields) >= 4 and fields[3].isdigit() else None


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    raise AssertionError("unreachable")


def shortage(host: str, where: str, need: int, free: int | None, keep_hint: str) -> str | None:
    """The refusal text when `need` bytes do not fit in `free`, else None."""
    if free is None or need <= free:
        return None
    return (f"{host}: {where} has {human(free)} free, but the new system needs {human(need)} there; "
            f"nothing was copied. Free space with `{keep_hint}`")
