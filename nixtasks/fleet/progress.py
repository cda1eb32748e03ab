"""How the engine tells where each host is. Plain lines prefixed with the host here; the
live view on a terminal (rich) is in cli/render.py."""

from __future__ import annotations

from typing import Protocol

from ..models import Echo, HostResult, Stage


class Progress(Protocol):
    def stage(self, host: str, stage: Stage | str) -> None: ...

    def done(self, result: HostResult) -> None: ...


def label(stage: Stage | str) -> str:
    return stage.value if isinstance(stage, Stage) else stage


class PlainProgress:
    """One line per step: `[web1] activation`, then `[web1] ok (2.1 s)`."""

    def __init__(self, echo: Echo) -> None:
        self.echo = echo

    def stage(self, host: str, stage: Stage | str) -> None:
        self.echo(f"[{host}] {label(stage)}")

    def done(self, result: HostResult) -> None:
        self.echo(f"[{result.host}] {result.outcome.value} ({result.duration:.1f} s)")
