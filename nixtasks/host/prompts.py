"""Approvals. The only module that imports `questionary`.

A deploy asks through a `Prompter`; with no TTY and no approval it refuses at once
instead of waiting on a prompt nobody sees."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Protocol

from ..errors import Refused

HOW_TO_APPROVE = "pass --yes, YES=1 to make, or set NIXTASKS_YES=1"


class Prompter(Protocol):
    can_ask: bool

    def confirm(self, question: str) -> bool: ...


class AlwaysYes:
    """--yes, YES=1 or NIXTASKS_YES=1 (or --dry-run, which changes nothing): say yes, and why."""

    can_ask = True

    def __init__(self, note: str = "yes (approved up front)") -> None:
        self.note = note

    def confirm(self, question: str) -> bool:
        print(f"{question} {self.note}", file=sys.stderr)
        return True


DRY_RUN = AlwaysYes("(not asked: dry run)")


class NoTerminal:
    """No TTY to ask on and no approval given: refuse, never hang."""

    can_ask = False

    def confirm(self, question: str) -> bool:
        raise Refused(f"{question.rstrip('?')}: not approved, and there is no terminal to ask on; "
                      f"{HOW_TO_APPROVE}. Nothing was changed")


class Scripted:
    """Answers from a list, for tests."""

    can_ask = True

    def __init__(self, answers: Iterable[bool]) -> None:
        self.answers = list(answers)
        self.questions: list[str] = []

    def confirm(self, question: str) -> bool:
        self.questions.append(question)
        return self.answers.pop(0)


class Questionary:
    can_ask = True

    def confirm(self, question: str) -> bool:
        import questionary  # imported here: `invoke --list` must stay fast

        answer = questionary.confirm(question, default=False).unsafe_ask()  # Ctrl-C raises
        return bool(answer)


def has_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def prompter_for(approved: bool) -> Prompter:
    if approved:
        return AlwaysYes()
    return Questionary() if has_terminal() else NoTerminal()
