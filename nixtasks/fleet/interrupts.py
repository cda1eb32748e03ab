"""Ctrl-C in a run: what the run knows of each host as it goes (the ledger), and the waits that
turn a Ctrl-C into the run's stop flag. Where a Ctrl-C lands outside those waits, the exception
goes up to one place, `flow.reported`, which makes the report from the ledger."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field
from typing import TypeVar

from ..actions.journal import Journal
from ..host.runner import Runner
from ..models import Action, Echo, Host
from .pipeline import Change

T = TypeVar("T")
R = TypeVar("R")

BEFORE_THE_PLAN = "interrupted before the plan; nothing changed"
BEFORE_IT_STARTED = "interrupted before it started"
STOPPING = ("interrupted: no new host starts; the hosts under way finish their activation and checks (or are "
            "rolled back)")


@dataclass
class Ledger:
    """One run's hosts, its journal (which keeps each host's settled result and the oks held
    back), the plan's changes, and the run's stop flag (set by every Ctrl-C the run notes)."""

    stop: threading.Event = field(default_factory=threading.Event)
    hosts: tuple[Host, ...] = ()
    action: Action | str = ""  # the report's: the action, or the recipe (blue-green, emergency)
    verb: str = ""  # the journal's
    journal: Journal | None = None
    changes: dict[str, Change] = field(default_factory=dict)
    planned: bool = False  # the plan was shown: a host not reached is "not started", on the host too

    def begin(self, hosts: Sequence[Host], action: Action | str, journal: Journal) -> None:
        self.hosts, self.action, self.journal = tuple(hosts), action, journal
        self.verb = action.value if isinstance(action, Action) else action

    def plan(self, journal: Journal, changes: Sequence[Change]) -> None:
        self.journal, self.planned = journal, True
        self.changes.update((c.host.name, c) for c in changes)


def wait_all(futures: list[Future[R]], stop: threading.Event, echo: Echo) -> list[R]:
    """Wait for every future; Ctrl-C meanwhile is noted in `stop`, not raised: what runs finishes."""
    while True:
        try:
            wait_for(futures)
            break
        except KeyboardInterrupt:
            if not stop.is_set():
                echo(STOPPING)
            stop.set()
    return [f.result() for f in futures]


def shielded(work: Callable[[], R], stop: threading.Event, echo: Echo) -> R:
    """Run `work` to its end even through Ctrl-C (batches, rollbacks, reboots, journal records):
    the main thread only waits, and the interruption is noted in `stop` for `work` and the caller."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return wait_all([pool.submit(work)], stop, echo)[0]


def all_or_stop(work: Callable[[T], R], items: Sequence[T], workers: int, runner: Runner) -> list[R]:
    """Like a pool's map, for steps that change nothing a host runs (copies, closure diffs): on
    Ctrl-C the commands under way are stopped and no more start; then it goes on up."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(work, item) for item in items]
        try:
            return [f.result() for f in futures]
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            runner.stop_all()
            raise
