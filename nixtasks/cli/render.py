"""What a person sees on a terminal: the live view of a fleet run (one line per host with
its stage and elapsed time), drawn with rich. Off a terminal the engine's plain lines are used."""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import Any

from ..fleet.progress import PlainProgress, Progress, label
from ..models import HostResult, Stage


class LiveProgress:
    """A rich Live table on stderr; the lines hosts print scroll above it."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, float, float | None]] = {}  # host: (stage, started, finished)
        self.lock = threading.Lock()
        self.live: Any = None

    def __enter__(self) -> LiveProgress:
        from rich.console import Console
        from rich.live import Live

        self.live = Live(get_renderable=self.table, console=Console(stderr=True), refresh_per_second=4,
                         redirect_stderr=True, transient=True)
        self.live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.live is not None:
            self.live.__exit__(kind, exc, tb)

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


class NoLive:
    def __enter__(self) -> NoLive:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def progress_for(echo: Any) -> tuple[Progress, Any]:
    """The live view on a terminal, plain lines elsewhere; the second value is its context."""
    if sys.stderr.isatty():
        live = LiveProgress()
        return live, live
    return PlainProgress(echo), NoLive()
