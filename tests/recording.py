"""A runner that runs nothing: it records each step and answers from a script. Unit tests
use it to check the order of the engine's steps (lock before profile, watchdog before
activation, rollback after a failed check) without root or a lab; the lab proves the
behaviour for real."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nixtasks.errors import NixtasksError
from nixtasks.host import commands
from nixtasks.host.facts import FACTS_SCRIPT
from nixtasks.host.runner import Result, failure_of
from nixtasks.models import Command, Target

OK = Result(0, "", "")


def step_of(cmd: Command) -> str:
    """A short name for what a command does on a host: lock, arm, set-profile, activate switch..."""
    argv = cmd.argv
    if commands.ARM_SCRIPT in argv:
        return "arm"
    if commands.CONFIRM_SCRIPT in argv:
        return "confirm"
    if FACTS_SCRIPT in argv:
        return "facts"
    if commands.TAKE_SCRIPT in argv:
        return "lock"
    if commands.UNCHANGED_SCRIPT in argv:
        return "unchanged"
    if commands.RELEASE_SCRIPT in argv or commands.UNLOCK_SCRIPT in argv:
        return "unlock"
    if commands.HOLD_SCRIPT in argv:
        return "hold"
    if commands.UNHOLD_SCRIPT in argv:
        return "unhold"
    if commands.HOLDER_SCRIPT in argv:
        return "lock-holder"
    for i, word in enumerate(argv):
        if word.endswith("/bin/switch-to-configuration"):
            return f"activate {argv[i + 1]}"
    if argv[0] == "nix-env" and "--set" in argv:
        return "set-profile"
    if argv[0] == "nix-env" and "--switch-generation" in argv:
        return f"switch-generation {argv[-1]}"
    if argv[:2] == ("touch", "-c"):
        return "unit-map"
    if argv[0] == "curl":
        return "http"
    if argv[:2] == ("systemctl", "is-active"):
        return "unit"
    if (argv[0] == "dd" and "oflag=append" in argv) or (argv[0] == "mkdir" and "nixtasks" in argv[-1]):
        return "journal"
    if commands.NOW_RUNNING_SCRIPT in argv:
        return "running"
    return " ".join(argv[:2])


@dataclass(frozen=True)
class Call:
    step: str
    target: Target
    fresh: bool
    cmd: Command
    trip: int  # the round trip it went in: the commands of one `run_all` share one
    checks: bool  # run by the thread that checks a host while its confirmation is made


Responder = Callable[[str, Command, Target, bool], Result]


class RecordingRunner:
    def __init__(self, respond: Responder | None = None, *, dry_run: bool = False) -> None:
        self.respond: Responder = respond or (lambda step, cmd, target, fresh: OK)
        self.dry_run = dry_run
        self.calls: list[Call] = []
        self.echoed: list[str] = []
        self.warnings: list[str] = []
        self.ssh_options: tuple[str, ...] = ()
        self.gc_roots: str | None = None
        self.build_host_roots: str | None = None  # what gc_roots_on answers for a build host
        self.trips = 0
        self._lock = threading.Lock()  # the checks run in a thread of their own

    def echo(self, line: str) -> None:
        self.echoed.append(line)

    def run(self, cmd: Command, target: Target, *, label: str | None = None, stream: bool = False,
            echo_stdout: bool = True, check: bool = True, timeout: float | None = None,
            fresh: bool = False) -> Result:
        return self._answer(cmd, target, fresh, label, check, self._trip())

    def run_all(self, cmds: Sequence[Command], target: Target, *, label: str | None = None, stream: bool = False,
                check: bool = True, timeout: float | None = None, keep_going: bool = False, quiet: int = 0,
                after_quiet: Callable[[], None] | None = None) -> list[Result]:
        trip = self._trip()
        results: list[Result] = []
        for index, cmd in enumerate(cmds):
            if index == quiet and after_quiet is not None and all(r.ok for r in results):
                after_quiet()
            results.append(self._answer(cmd, target, False, label, False, trip))
            if not results[-1].ok and not keep_going:
                break
        failed = next((i for i, r in enumerate(results) if not r.ok), None)
        if check and failed is not None:
            raise self.failure(cmds[failed], target, label or str(target), results[failed])
        return results

    def _trip(self) -> int:
        with self._lock:
            self.trips += 1
            return self.trips

    def _answer(self, cmd: Command, target: Target, fresh: bool, label: str | None, check: bool,
                trip: int) -> Result:
        step = step_of(cmd)
        checks = threading.current_thread().name.startswith("checks-")
        with self._lock:
            self.calls.append(Call(step, target, fresh, cmd, trip, checks))
        result = self.respond(step, cmd, target, fresh)
        if check and not result.ok:
            raise self.failure(cmd, target, label or str(target), result)
        return result

    def failure(self, cmd: Command, target: Target, where: str, result: Result) -> NixtasksError:
        return failure_of(cmd, target, where, result)

    def has_sudo_password(self, target: Target) -> bool:
        return False

    def expect_fresh(self, target: Target) -> None:
        return None

    def ssh_settings(self, target: Target) -> dict[str, str]:
        return {}

    def gc_roots_on(self, target: Target) -> str | None:
        return self.gc_roots if target.is_local else self.build_host_roots

    def close(self) -> None:
        return None

    def stop_all(self) -> None:
        return None

    def round_trips(self, target: Target) -> int:
        """How many times the deployer went to `target` (a batch counts once)."""
        return len({c.trip for c in self.calls if c.target == target})

    def steps(self, *, skip: tuple[str, ...] = ("journal", "lock-holder", "running", "unchanged"),
              checks: bool = False) -> list[str]:
        """The steps in order, fresh connections marked with a `*`: those of the host's way
        through the pipeline, or (`checks`) those of its checks after activation, which run
        beside the confirmation."""
        return [c.step + ("*" if c.fresh else "") for c in self.calls if c.step not in skip and c.checks == checks]
