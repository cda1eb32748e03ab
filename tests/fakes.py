"""Fake hosts for the recording runner (tests/recording.py): just enough of a NixOS host to
answer the engine's steps. The unit tests and the engine's scale benchmark
(benchmarks/engine-scale) drive the engine with them."""

from __future__ import annotations

from dataclasses import dataclass, field

from nixtasks.host import commands
from nixtasks.host.runner import Result
from nixtasks.models import SYSTEM_PROFILE, Command, Target
from tests.recording import OK

OLD, NEW = "/nix/store/" + "a" * 32 + "-nixos-system-web1-1.0", "/nix/store/" + "b" * 32 + "-nixos-system-web1-1.1"


@dataclass
class FakeHost:
    """Just enough of a NixOS host: generations, what runs, and what goes wrong."""

    generations: dict[int, str] = field(default_factory=lambda: {1: OLD})
    profile: int = 1
    running: str = OLD
    fail: set[str] = field(default_factory=set)  # steps that fail (exit 1; "confirm" fails with 255)
    healthy: set[str] = field(default_factory=lambda: {OLD, NEW})
    reverted: str = ""
    pending: bool = False  # an earlier deploy's watchdog
    takes: bool = True  # an activation of NEW that exits 0 changes what runs
    holder: str = ""  # another deploy's lock, as `systemctl list-units` describes it
    lock_error: str = ""  # what taking the lock says on stderr when it fails (not held by another)

    def facts(self) -> str:
        return (f"running\t{self.running}\nprofile\tsystem-{self.profile}-link\n"
                f"profile-path\t{self.generations[self.profile]}\nsystemd\tyes\nstate\trunning\n"
                f"reverted\t{self.reverted}\nstore-df\t/dev/x 100 50 1000000 5% /nix/store\n"
                + ("watchdog\tpending\n" if self.pending else ""))

    def __call__(self, step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if step == "lock" and (self.holder or self.lock_error):
            return Result(1, "", self.lock_error or "Unit nixtasks-lock.service was already loaded")
        if step == "lock-holder" and self.holder:
            return Result(0, f"nixtasks-lock.service loaded active running nixtasks-lock:{self.holder}\n", "")
        if step in self.fail and not (step.startswith("activate") and NEW not in " ".join(cmd.argv)):
            return Result(255 if step == "confirm" else 1, "", f"error: {step} broke")
        if step == "facts":
            return Result(0, self.facts(), "")
        if step == "unchanged":  # the plan's running system and boot generation, and no watchdog pending
            same = cmd.argv[-2:] == (self.running, str(self.profile)) and not self.pending
            return OK if same else Result(commands.CHANGED, "", "")
        if "--list-generations" in cmd.argv:
            listed = (f"{n:4}   2026-12-01 08:45:{n % 60:02}   {'(current)' if n == self.profile else ''}\n"
                      for n in sorted(self.generations))
            return Result(0, "".join(listed), "")
        if cmd.argv[:2] == ("sh", "-c") and "printf 'gen" in cmd.argv[2]:  # the generations' details
            return Result(0, "".join(f"gen\t{n}\t{path}\t\t\t\t\t\n" for n, path in self.generations.items())
                          + f"running\t{self.running}\n", "")
        if step == "set-profile":
            self.profile = max(self.generations) + 1
            self.generations[self.profile] = cmd.argv[-1]
        elif step.startswith("switch-generation"):
            self.profile = int(step.split()[1])
        elif step.startswith("activate"):
            path = next(a for a in cmd.argv if a.endswith("/bin/switch-to-configuration")).rsplit("/bin/", 1)[0]
            if step in ("activate switch", "activate test") and (self.takes or path != NEW):
                self.running = self.generations[self.profile] if path == SYSTEM_PROFILE else path
        elif step == "running":
            return Result(0, f"now running {self.running}\n", "")
        elif step == "unit":
            return OK if self.running in self.healthy else Result(3, "failed", "")
        return OK
