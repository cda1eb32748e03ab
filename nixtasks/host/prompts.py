"""Approvals. The only module that imports `questionary`.

A deploy asks through a `Prompter`; with no TTY and no approval it refuses at once
instead of waiting on a prompt nobody sees."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Protocol

from ..errors import Refused

HOW_TO_APPROVE = "pass --yes, YES=1 to make, or set NIXTASKS_YES=1"


class Prompter(Protocol):
    can_ask: bool

    def confirm(self, question: str) -> bool: ...

    def approve(self, question: str, names: Sequence[str]) -> tuple[str, ...]:
        """One question for many hosts: the names approved (all, a chosen subset, or none)."""


class AlwaysYes:
    """--yes, YES=1 or NIXTASKS_YES=1 (or --dry-run, which changes nothing): say yes, and why."""

    can_ask = True

    def __init__(self, note: str = "yes (approved up front)") -> None:
        self.note = note

    def confirm(self, question: str) -> bool:
        print(f"{question} {self.note}", file=sys.stderr)
        return True

    def approve(self, question: str, names: Sequence[str]) -> tuple[str, ...]:
        self.confirm(question)
        return tuple(names)


DRY_RUN = AlwaysYes("(not asked: dry run)")


class NoTerminal:
    """No TTY to ask on and no approval given: refuse, never hang."""

    can_ask = False

    def confirm(self, question: str) -> bool:
        raise Refused(f"{question.rstrip('?')}: not approved, and there is no terminal to ask on; "
                      f"{HOW_TO_APPROVE}. Nothing was changed")

    def approve(self, question: str, names: Sequence[str]) -> tuple[str, ...]:
        self.confirm(question)
        return ()


class Scripted:
    """Answers from a list, for tests: True, False, or (for `approve`) the names to approve."""

    can_ask = True

    def __init__(self, answers: Iterable[bool | Sequence[str]]) -> None:
        self.answers = list(answers)
        self.questions: list[str] = []

    def confirm(self, question: str) -> bool:
        self.questions.append(question)
        return bool(self.answers.pop(0))

    def approve(self, question: str, names: Sequence[str]) -> tuple[str, ...]:
        self.questions.append(question)
        answer = self.answers.pop(0)
        if isinstance(answer, bool):
            return tuple(names) if answer else ()
        return tuple(n for n in names if n in answer)


class Questionary:
    can_ask = True

    def confirm(self, question: str) -> bool:
        import questionary  # imported here: `invoke --list` must stay fast

        answer = questionary.confirm(question, default=False).unsafe_ask()  # Ctrl-C raises
        return bool(answer)

    def approve(self, question: str, names: Sequence[str]) -> tuple[str, ...]:
        if len(names) == 1:
            return tuple(names) if self.confirm(question) else ()
        import questionary

        every, some, none = f"Yes, all {len(names)} hosts", "Choose hosts...", "No"
        answer = questionary.select(question, choices=[none, every, some], default=none).unsafe_ask()
        if answer == every:
            return tuple(names)
        if answer != some:
            return ()
        chosen = questionary.checkbox("Which hosts?", choices=[questionary.Choice(n, checked=False) for n in names]
                                      ).unsafe_ask()
        return tuple(n for n in names if n in (chosen or ()))


PASSWORD_FILE_VARIABLE = "NIXTASKS_SUDO_PASSWORD_FILE"


def ask_password(question: str) -> str:
    """A hidden prompt on the terminal (nothing is echoed). Callers check for a terminal first:
    with none, they refuse instead of waiting on a prompt nobody sees."""
    import questionary

    answer = questionary.password(question).unsafe_ask()  # Ctrl-C raises
    return str(answer or "")


def has_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def prompter_for(approved: bool) -> Prompter:
    if approved:
        return AlwaysYes()
    return Questionary() if has_terminal() else NoTerminal()
