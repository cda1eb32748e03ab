"""Builders for the recipe flow tests: a fleet of FakeHosts behind one recording runner, the
deployer's side (eval, build, copy, the traffic hook) answered here, and a scripted prompter
that keeps each question with the hosts it named. Nothing runs: the tests read the steps each
host went through, what was asked, the report and the journal."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from nixtasks.actions.journal import read_local
from nixtasks.fleet import engine, flow
from nixtasks.fleet.progress import PlainProgress
from nixtasks.host.prompts import Approval
from nixtasks.host.runner import Result
from nixtasks.models import Action, Check, Command, Host, Policy, Target
from tests.recording import OK, RecordingRunner

from .test_pipeline import NEW, OLD, FakeHost

CHECK = (Check("unit", "app.service", retries=1),)


def host(name: str, *, canary: bool = False, tags: Sequence[str] = ()) -> Host:
    return Host(name, name, Target(name, "root"), checks=CHECK, canary=canary, tags=tuple(tags))


def hosts(*names: str, canary: Sequence[str] = ()) -> tuple[Host, ...]:
    return tuple(host(n, canary=n in canary) for n in names)


@dataclass
class RebootingHost(FakeHost):
    """A FakeHost that reboots: it then runs what its boot entry holds (or stays down)."""

    boots: int = 1
    comes_back: bool = True  # after the first reboot; a boot back always comes back
    reboots: int = 0

    def __call__(self, step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if step == "systemctl reboot":
            self.reboots += 1
            if self.comes_back or self.reboots > 1:
                self.boots += 1
                self.running = self.generations[self.profile]
            return Result(255, "", "Connection closed by remote host")
        if step == "cat /proc/sys/kernel/random/boot_id":
            return Result(0, f"boot-{self.boots}\n", "") if self.comes_back or self.reboots != 1 else \
                Result(255, "", "ssh: connect to host: No route to host")
        if step == "facts" and fresh and not self.comes_back and self.reboots == 1:
            return Result(255, "", "ssh: connect to host: No route to host")
        return super().__call__(step, cmd, target, fresh)


@dataclass
class DownHost(FakeHost):
    """A host ssh cannot reach: every command ends with ssh's exit 255."""

    def __call__(self, step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        return Result(255, "", f"ssh: connect to host {target.address} port 22: Connection refused")


@dataclass
class TurnsUnhealthy(FakeHost):
    """Healthy on the new system for its first `good` unit checks, then not (a soak finds it)."""

    good: int = 1

    def __call__(self, step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if step == "unit" and self.running == NEW:
            self.good -= 1
            if self.good < 0:
                return Result(3, "failed", "")
        return super().__call__(step, cmd, target, fresh)


def ctrl_c_in_the_main_thread() -> None:
    """Ctrl-C as the terminal sends it: SIGINT to the main thread, once that thread waits for the
    hosts under way (interrupts.wait_all), so that it lands where a person's would; back once
    that wait has noted it (the run's stop flag is set)."""
    main = threading.main_thread().ident
    assert main is not None
    deadline = time.monotonic() + 30  # a test of a changed engine fails, it does not hang
    while not (waiting := [f for f in frames(sys._current_frames().get(main)) if f.f_code.co_name == "wait_all"]):
        if time.monotonic() > deadline:
            raise AssertionError("the main thread never waited for the hosts (interrupts.wait_all)")
        time.sleep(0.001)
    stop = waiting[0].f_locals["stop"]
    signal.pthread_kill(main, signal.SIGINT)
    while not stop.is_set():
        if time.monotonic() > deadline:
            raise AssertionError("the Ctrl-C was never noted")
        time.sleep(0.001)


def frames(frame: FrameType | None) -> Iterator[FrameType]:
    while frame is not None:
        yield frame
        frame = frame.f_back


@dataclass
class CtrlCAt(FakeHost):
    """A FakeHost during whose `step` the person at the terminal presses Ctrl-C."""

    at: str = "activate test"

    def __call__(self, step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if step == self.at:
            ctrl_c_in_the_main_thread()
        return super().__call__(step, cmd, target, fresh)


@dataclass
class Asked:
    """A question and the hosts it named (none for a yes/no question)."""

    question: str
    names: tuple[str, ...] = ()


class Answers:
    """Like tests.prompts.Scripted (True, False, or the names picked in the checkbox), and it
    keeps whom each question named; KeyboardInterrupt as an answer is Ctrl-C at the question."""

    can_ask = True

    def __init__(self, answers: Iterable[object]) -> None:
        self.answers = list(answers)
        self.asked: list[Asked] = []

    def _next(self) -> object:
        answer = self.answers.pop(0)
        if answer is KeyboardInterrupt:
            raise KeyboardInterrupt
        return answer

    def confirm(self, question: str) -> bool:
        self.asked.append(Asked(question))
        return bool(self._next())

    def approve(self, question: str, names: Sequence[str], *, preselect: bool = False) -> Approval:
        self.asked.append(Asked(question, tuple(names)))
        answer = self._next()
        if isinstance(answer, bool):
            return Approval(tuple(names) if answer else ())
        return Approval.of(answer, names)  # type: ignore[arg-type]


@dataclass
class Fleet:
    """The deployer and its hosts. The deployer's commands answer from the fields below; each
    host's from its FakeHost."""

    tmp: Path
    fakes: dict[str, FakeHost]
    build_fails: bool = False  # the one build of every system fails
    unevaluable: set[str] = field(default_factory=set)  # configurations whose evaluation fails
    uncopyable: set[str] = field(default_factory=set)  # hosts whose `nix copy` fails
    interrupt_build: bool = False  # Ctrl-C while the systems build
    hook_fails: bool = False  # the traffic hook exits 1
    hooks: list[str] = field(default_factory=list)  # the traffic hooks that ran

    def __post_init__(self) -> None:
        self.runner = RecordingRunner(self.respond)
        self.said: list[str] = []

    def respond(self, step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if target.address is not None:
            return self.fakes[target.address](step, cmd, target, fresh)
        argv = cmd.argv
        if "--is-inside-work-tree" in argv:
            return Result(128, "", "fatal: not a git repository")
        if "eval" in argv:
            asked = [n for n in self.fakes if f'"{n}"' in argv[-1]]
            if set(asked) & self.unevaluable:
                return Result(1, "", "error: attribute 'broken' missing")
            return Result(0, json.dumps({n: {"drv": f"/nix/store/{n}.drv", "out": NEW} for n in asked}), "")
        if "--realise" in argv:
            if self.interrupt_build:
                raise KeyboardInterrupt
            return Result(1, "", "error: builder for '/nix/store/x.drv' failed") if self.build_fails else OK
        if "path-info" in argv:
            return Result(0, "{}", "")
        if "copy" in argv and "--to" in argv:
            to = argv[argv.index("--to") + 1]
            if any(to.endswith(f"@{n}") or to.endswith(f"//{n}") for n in self.uncopyable):
                return Result(1, "", "error: cannot add path to the store")
        if argv[0] == "sh" and "-c" in argv:  # the traffic hook
            self.hooks.append(argv[-1])
            if self.hook_fails:
                return Result(1, "", "lb: refused")
        return OK

    def tools(self, *answers: object) -> flow.Tools:
        self.prompter = Answers(answers)
        return flow.Tools(self.runner, self.prompter, PlainProgress(self.said.append), self.said.append,
                            self.tmp / "journal.jsonl")

    def asked(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(a.question, a.names) for a in self.prompter.asked]

    def steps(self, name: str, *, checks: bool = False) -> list[str]:
        """One host's steps, in order (its checks thread apart), without journal writes and the
        reads that ride along (the unchanged-since-the-plan guard: tests/unit/test_pipeline.py)."""
        skip = ("journal", "lock-holder", "running", "unchanged")
        return [c.step + ("*" if c.fresh else "") for c in self.runner.calls
                if c.target.address == name and c.step not in skip and c.checks == checks]

    def when(self, name: str, step: str, *, last: bool = False) -> int:
        """Where one host's first (or last) `step` came among every command the run sent."""
        found = [i for i, c in enumerate(self.runner.calls) if c.target.address == name and c.step == step]
        return found[-1] if last else found[0]

    def locked(self) -> list[str]:
        """The hosts whose lock was taken, in the order they were first locked."""
        return list(dict.fromkeys(c.target.address or "" for c in self.runner.calls if c.step == "lock"))

    def deployer(self) -> list[str]:
        """The deployer's own commands (eval, build, copy, hooks), in order."""
        return [c.step for c in self.runner.calls if c.target.address is None]

    def journal(self) -> list[tuple[str, str, str]]:
        """(host, action, outcome) of the deployer's journal, without the "started" records."""
        return [(r.host, r.action, r.outcome) for r in read_local(self.tmp / "journal.jsonl")
                if r.outcome != "started"]

    def text(self) -> str:
        return "\n".join(self.said)


def fleet_of(tmp: Path, *names: str, rebooting: bool = False, **fakes: FakeHost) -> Fleet:
    kind = RebootingHost if rebooting else FakeHost
    return Fleet(tmp, {n: fakes.get(n) or kind() for n in names})


DEFAULT = Policy()


def request(fleet_hosts: Sequence[Host], policy: Policy = DEFAULT, action: Action = Action.SWITCH,
            reason: str = "") -> engine.DeployRequest:
    return engine.DeployRequest(action, tuple(fleet_hosts), "/src/flake", policy=policy, reason=reason)


def outcomes(report_or_error: object) -> dict[str, str]:
    report = getattr(report_or_error, "report", report_or_error)
    return {r.host: r.outcome.value for r in report.results}  # type: ignore[attr-defined]


__all__ = ["DEFAULT", "NEW", "OLD", "CtrlCAt", "DownHost", "FakeHost", "Fleet", "RebootingHost", "TurnsUnhealthy",
           "fleet_of", "host", "hosts", "outcomes", "request"]
