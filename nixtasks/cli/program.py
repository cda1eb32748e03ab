"""The `nixtasks` command: the same tasks as `invoke` with nixtasks' tasks.py, without a
tasks.py, and with nixtasks' own rules for bad arguments (one `error:` line, exit 2).

    nixtasks switch --host web1
    nixtasks --version
    nixtasks --print-completion-script bash > /etc/bash_completion.d/nixtasks
"""

from __future__ import annotations

import sys

from invoke.exceptions import Exit, ParseError
from invoke.program import Program


class NixtasksProgram(Program):
    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise Exit(message=f"error: {exc}; see `nixtasks --list` and `nixtasks TASK --help`", code=2) from None


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("nixtasks")
    except PackageNotFoundError:  # pragma: no cover - a checkout that was never installed
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    from .tasks import ns

    program = NixtasksProgram(namespace=ns, version=version(), name="nixtasks", binary="nixtasks")
    program.run(argv if argv is not None else sys.argv)
