"""The project's errors: each renders as one line, `error: ...`, and has an exit code."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Report

# Exit codes (documented in the README).
EXIT_FAILED = 1  # a command or a deploy step failed
EXIT_USAGE = 2  # bad arguments or inventory; nothing was changed
EXIT_REFUSED = 3  # not approved (declined, or no TTY and no --yes); nothing was changed
EXIT_INTERRUPTED = 130


class NixtasksError(Exception):
    """Base error. `str(err)` is what went wrong and what to do next."""

    exit_code = EXIT_FAILED

    @property
    def line(self) -> str:
        return f"error: {self}"


class UsageError(NixtasksError):
    exit_code = EXIT_USAGE


class InventoryError(UsageError):
    def __init__(self, source: str, key: str, expected: str) -> None:
        self.source, self.key, self.expected = source, key, expected
        super().__init__(f"{source}: {key}: {expected}")


class Refused(NixtasksError):
    exit_code = EXIT_REFUSED


def describe(argv: tuple[str, ...]) -> str:
    """A short name for a command: `nix copy`, `switch-to-configuration switch`, `nix-env`."""
    words = [w for w in argv if not w.startswith("-") and w not in ("nix-command flakes", "nix-command")]
    for i, word in enumerate(words):
        if word.endswith("/bin/switch-to-configuration"):
            return " ".join(["switch-to-configuration", *words[i + 1:i + 2]])
    if not words:
        return "command"
    if words[0] == "nix" and len(words) > 1:
        return f"nix {words[1]}"
    return words[0].rsplit("/", 1)[-1]


class CommandFailed(NixtasksError):
    def __init__(self, where: str, argv: tuple[str, ...], exit_code: int, detail: str = "",
                 message: str | None = None) -> None:
        self.where, self.argv, self.returncode, self.detail = where, argv, exit_code, detail
        tail = f": {detail}" if detail else ""
        super().__init__(message or f"{where}: `{describe(argv)}` failed with exit code {exit_code}{tail}")


class HostUnreachable(CommandFailed):
    """`ssh`: the command that reaches the host as nixtasks does (its ssh config and options,
    user@address), for the person to try by hand."""

    def __init__(self, where: str, argv: tuple[str, ...], detail: str = "", message: str | None = None, *,
                 ssh: str = "") -> None:
        super().__init__(where, argv, 255, detail, message or f"{where}: cannot reach the host over ssh "
                         f"({detail or 'exit 255'}); check it is up and try `{ssh or 'ssh ' + where}`")


class DeployFailed(NixtasksError):
    def __init__(self, message: str, report: Report) -> None:
        super().__init__(message)
        self.report = report


class Interrupted(NixtasksError):
    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str, report: Report | None = None) -> None:
        super().__init__(message)
        self.report = report
