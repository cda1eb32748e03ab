"""System generations: parsing what hosts print, and choosing which to roll back to or
delete. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ..errors import UsageError
from ..models import SYSTEM_PROFILE

LIST_LINE = re.compile(r"^\s*(\d+)\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s*(\(current\))?\s*$")

# One round trip for the details of every generation (run on the host, no sudo needed:
# the links are world-readable). Constant text: nothing from the user goes into it.
DETAILS_SCRIPT = f"""
for link in {SYSTEM_PROFILE}-*-link; do
  [ -L "$link" ] || continue
  n=${{link#{SYSTEM_PROFILE}-}}; n=${{n%-link}}
  p=$(readlink -f "$link")
  v=$(cat "$p/nixos-version" 2>/dev/null)
  r=$("$p/sw/bin/nixos-version" --configuration-revision 2>/dev/null || cat "$p/configuration-revision" 2>/dev/null)
  k=$(readlink -e "$p/kernel" 2>/dev/null)
  kv=$(ls "$p/kernel-modules/lib/modules" 2>/dev/null | head -n 1)
  sp=$(ls "$p/specialisation" 2>/dev/null | tr '\\n' ' ')
  printf 'gen\\t%s\\t%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' "$n" "$p" "$v" "$r" "$k" "$kv" "$sp"
done
printf 'running\\t%s\\n' "$(readlink -f /run/current-system 2>/dev/null)"
printf 'booted-kernel\\t%s\\n' "$(readlink -e /run/booted-system/kernel 2>/dev/null)"
printf 'machine-id\\t%s\\n' "$(cat /etc/machine-id 2>/dev/null)"
"""


@dataclass(frozen=True)
class Generation:
    number: int
    date: str
    path: str = ""
    version: str = ""
    revision: str = ""
    kernel: str = ""
    boots: bool = False  # the profile points here: the next boot runs it
    running: bool = False  # /run/current-system is this generation's system
    kernel_version: str = ""
    specialisations: tuple[str, ...] = ()
    failed: str = ""  # how its system failed before, from the journals ("" when it did not)

    def as_json(self) -> dict[str, object]:
        """nixos-rebuild list-generations --json's fields (so jq scripts keep working), and ours."""
        return {"generation": self.number, "date": self.date, "nixosVersion": self.version or "Unknown",
                "kernelVersion": self.kernel_version or "Unknown", "configurationRevision": self.revision or "Unknown",
                "specialisations": list(self.specialisations), "current": self.boots,
                "number": self.number, "path": self.path, "nixos_version": self.version,
                "configuration_revision": self.revision or None, "boots": self.boots, "running": self.running,
                "failed": bool(self.failed), "failure": self.failed or None}


@dataclass(frozen=True)
class HostGenerations:
    generations: tuple[Generation, ...]  # newest first
    running_path: str  # "" when nothing is activated
    booted_kernel: str = ""
    machine_id: str = ""  # the host's /etc/machine-id

    @property
    def numbers(self) -> list[int]:
        return [g.number for g in self.generations]

    def boot_generation(self) -> Generation | None:
        return next((g for g in self.generations if g.boots), None)

    def get(self, number: int) -> Generation | None:
        return next((g for g in self.generations if g.number == number), None)


def parse(list_output: str, details_output: str) -> HostGenerations:
    """Join `nix-env --list-generations` with the details script's lines."""
    listed: dict[int, tuple[str, bool]] = {}
    for line in list_output.splitlines():
        match = LIST_LINE.match(line)
        if match:
            listed[int(match[1])] = (match[2], bool(match[3]))
    details: dict[int, list[str]] = {}
    running = booted_kernel = machine_id = ""
    for line in details_output.splitlines():
        fields = line.split("\t")
        if fields[0] == "gen" and len(fields) in (6, 8) and fields[1].isdigit():
            details[int(fields[1])] = (fields[2:] + ["", ""])[:6]  # 6 fields: no kernel version, specialisations
        elif fields[0] == "running" and len(fields) == 2:
            running = fields[1]
        elif fields[0] == "booted-kernel" and len(fields) == 2:
            booted_kernel = fields[1]
        elif fields[0] == "machine-id" and len(fields) == 2:
            machine_id = fields[1].strip()
    gens = []
    for number in sorted(listed, reverse=True):
        date, current = listed[number]
        path, version, revision, kernel, kernel_version, specs = details.get(number, [""] * 6)
        gens.append(Generation(number, date, path, version, revision, kernel, boots=current,
                               running=bool(path) and path == running, kernel_version=kernel_version,
                               specialisations=tuple(specs.split())))
    return HostGenerations(tuple(gens), running, booted_kernel, machine_id)


def mark_failed(gens: HostGenerations, failures: Mapping[str, str]) -> HostGenerations:
    """Each generation whose system is in `failures` (store path -> how it failed) marked so:
    by path, since a number is given again after gc deletes its generation."""
    marked = tuple(replace(g, failed=failures.get(g.path, "")) if g.path else g for g in gens.generations)
    return replace(gens, generations=marked)


def choose_target(host: str, gens: HostGenerations, number: int | None) -> tuple[Generation, list[Generation]]:
    """Generation N; else, when the host runs a system that is no generation's (a test
    activation, or a switch that failed and was left as it is: it never became the boot entry),
    the boot generation; else the newest one before the boot generation that did not fail
    before. And the failed ones passed over on the way."""
    available = ", ".join(str(n) for n in sorted(gens.numbers)) or "none"
    if number is not None:
        found = gens.get(number)
        if found is None:
            raise UsageError(f"{host}: there is no generation {number}; it has {available}")
        return found, []
    boot = gens.boot_generation()
    if boot is not None and gens.running_path and not any(g.running for g in gens.generations) and not boot.failed:
        return boot, []
    older = [g for g in gens.generations if boot is not None and g.number < boot.number]
    if not older:
        raise UsageError(f"{host}: no generation older than the current one ({boot.number if boot else 'none'}) "
                         f"to roll back to; it has {available}")
    good = next((g for g in older if not g.failed), None)
    if good is None:
        raise UsageError(f"{host}: every generation older than the current one ({boot.number if boot else 'none'}) "
                         f"failed before ({numbers_text(older)}); to go to one anyway: --generation N")
    return good, [g for g in older if g.number > good.number]


def to_delete(gens: HostGenerations, keep: int) -> list[Generation]:
    """Old generations beyond the newest `keep`, never the running one or the one that boots."""
    if keep < 1:
        raise UsageError("--keep must be at least 1")
    return [g for g in gens.generations[keep:] if not g.boots and not g.running]


def kernel_changes(gens: HostGenerations, target: Generation) -> bool:
    return bool(gens.booted_kernel and target.kernel and gens.booted_kernel != target.kernel)


def render(host: str, gens: HostGenerations) -> str:
    lines = [f"{host}: {len(gens.generations)} generation(s)",
             f"  {'GEN':>4}  {'DATE':19}  {'VERSION':10}  {'REVISION':12}  STATE"]
    for g in gens.generations:
        state = ", ".join(s for s, on in (("running", g.running), ("boots", g.boots), ("FAILED: " + g.failed,
                                                                                      bool(g.failed))) if on)
        lines.append(f"  {g.number:>4}  {g.date:19}  {g.version[:10]:10}  {g.revision[:12]:12}  {state}")
    if gens.running_path and not any(g.running for g in gens.generations):
        boot = gens.boot_generation()
        lines.append(f"  runs {gens.running_path}: test-activated, no generation"
                     + (f" (the next boot runs generation {boot.number})" if boot else ""))
    return "\n".join(lines)


def generation_of_profile_link(link: str) -> int | None:
    """`system-42-link` -> 42."""
    match = re.fullmatch(r"(?:.*/)?system-(\d+)-link", link.strip())
    return int(match[1]) if match else None


def numbers_text(gens: Sequence[Generation]) -> str:
    return ", ".join(str(g.number) for g in gens) or "none"
