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
    if not words:
        return "command"
    if "systemd-run" in words[0]:
        words = [w for w in words[1:] if "switch-to-configuration" in w or w in words[-1:]]
    name = words[0].rsplit("/", 1)[-1]
    return f"{name} {words[1]}" if name == "nix" and len(words) > 1 else \
        f"{name} {words[-1]}" if name == "switch-to-configuration" else name


class CommandFailed(NixtasksError):
    def __init__(self, where: str, argv: tuple[str, ...], exit_code: int, detail: str = "") -> None:
        self.where, self.argv, self.returncode, self.detail = where, argv, exit_code, detail
        what = describe(argv)
        tail = f": {detail}" if detail else ""
        super().__init__(f"{where}: `{what}` failed with exit code {exit_code}{tail}")


class HostUnreachable(CommandFailed):
    def __init__(self, where: str, argv: tuple[str, ...], detail: str = "") -> None:
        super().__init__(where, argv, 255, detail)
        self.args = (f"{where}: cannot reach the host over ssh ({detail or 'exit 255'}); "
                     f"check it is up and try `ssh {where}`",)


class DeployFailed(NixtasksError):
    def __init__(self, message: str, report: Report) -> None:
        super().__init__(message)
        self.report = report
