"""What a person sees on a terminal: the live view of a fleet run (one line per host with
its stage and elapsed time), drawn with rich. Off a terminal the engine's plain lines are used.

Only one thing draws on the terminal at a time: every question the engine asks goes through
the view's `asking` prompter, which takes the live view off the screen while the question is
open and draws it again after the answer."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any

from ..fleet.progress import PlainProgress, Progress, label
from ..host.prompts import Approval, Prompter
from ..models import HostResult, Stage


class LiveProgress:
    """A rich Live table on stderr; the lines hosts print scroll above it."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, float, float | None]] = {}  # host: (stage, started, finished)
        self.lock = threading.Lock()
        self.live: Any = None

    def __enter__(self) -> LiveProgress:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """A new Live each time: one started again would first move up over its last drawing
        and erase what was printed since (the question and its answer)."""
        from rich.console import Console
        from rich.live import Live

        self.live = Live(get_renderable=self.table, console=Console(stderr=True), refresh_per_second=4,
                         redirect_stderr=True, transient=True)
        self.live.start()

    def stop(self) -> None:
        """Its refresh ends and its area is cleared (transient)."""
        if self.live is not None:
            self.live.stop()
            self.live = None

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Off the screen while a question is open; back after the answer, also after Ctrl-C."""
        drawing = self.live is not None
        self.stop()
        try:
            yield
        finally:
            if drawing:
                self.start()

    def asking(self, prompter: Prompter) -> Prompter:
        return PausingPrompter(prompter, self.paused)

    def table(self) -> Any:
        from rich.table import Table

        table = Table(box=None, show_header=False, pad_edge=False)
        now = time.monotonic()
        with self.lock:
            for host, (stage, started, finished) in self.rows.items():
                table.add_row(host, stage, f"{(finished or now) - started:5.1f}s")
        return table

    def stage(self, host: str, stage: Stage | str) -> None:
        with self.lock:
            started = self.rows[host][1] if host in self.rows else time.monotonic()
            self.rows[host] = (label(stage), started, None)

    def done(self, result: HostResult) -> None:
        with self.lock:
            started = self.rows[result.host][1] if result.host in self.rows else time.monotonic()
            self.rows[result.host] = (result.outcome.value, started, time.monotonic())


class PausingPrompter:
    """Asks through `inner` with the live view paused, so the question is drawn alone and
    stays on the screen until it is answered."""

    def __init__(self, inner: Prompter, pause: Callable[[], AbstractContextManager[None]]) -> None:
        self.inner = inner
        self.pause = pause
        self.can_ask = inner.can_ask

    def confirm(self, question: str) -> bool:
        with self.pause():
            return self.inner.confirm(question)

    def approve(self, question: str, names: Sequence[str], *, preselect: bool = False) -> Approval:
        with self.pause():
            return self.inner.approve(question, names, preselect=preselect)


class NoLive:
    """Off a terminal: plain lines, nothing drawn over, so questions need no pause."""

    def __enter__(self) -> NoLive:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def asking(self, prompter: Prompter) -> Prompter:
        return prompter


def progress_for(echo: Any, *, logged: bool = False) -> tuple[Progress, LiveProgress | NoLive]:
    """The live view on a terminal, plain lines elsewhere (and when the lines go to a log); the
    second value is the view, a context that draws while the run lasts and wraps the prompter
    the run asks through."""
    if sys.stderr.isatty() and not logged:
        live = LiveProgress()
        return live, live
    return PlainProgress(echo), NoLive()
