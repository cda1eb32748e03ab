"""Approvals. The only module that imports `questionary`.

A deploy asks through a `Prompter`; with no TTY and no approval it refuses at once
instead of waiting on a prompt nobody sees."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import Refused

HOW_TO_APPROVE = "pass --yes, YES=1 to make, or set NIXTASKS_YES=1"


@dataclass(frozen=True)
class Approval:
    """The answer to one question about many hosts: yes (all of them), no (none), or a subset
    chosen in the checkbox, whose other hosts are "not selected" rather than declined."""

    hosts: tuple[str, ...] = ()  # the hosts approved
    subset: bool = False  # chosen one by one: the hosts left out were not selected

    @classmethod
    def of(cls, chosen: Iterable[str], names: Sequence[str]) -> Approval:
        """A checkbox's answer: a subset, all of them (a yes), or none (a no)."""
        wanted = set(chosen)
        picked = tuple(n for n in names if n in wanted)
        return cls(picked, subset=0 < len(picked) < len(names))


NO = Approval()  # a no: none of the hosts


class Prompter(Protocol):
    can_ask: bool

    def confirm(self, question: str) -> bool: ...

    def approve(self, question: str, names: Sequence[str], *, preselect: bool = False) -> Approval:
        """One question for many hosts: all of them, a chosen subset, or none. `preselect`:
        the subset checkbox starts with every host checked."""


class AlwaysYes:
    """--yes, YES=1 or NIXTASKS_YES=1 (or --dry-run, which changes nothing): say yes, and why."""

    can_ask = True

    def __init__(self, note: str = "yes (approved up front)") -> None:
        self.note = note

    def confirm(self, question: str) -> bool:
        print(f"{question} {self.note}", file=sys.stderr)
        return True

    def approve(self, question: str, names: Sequence[str], *, preselect: bool = False) -> Approval:
        self.confirm(question)
        return Approval(tuple(names))


DRY_RUN = AlwaysYes("(not asked: dry run)")


class NoTerminal:
    """No TTY to ask on and no approval given: refuse, never hang."""

    can_ask = False

    def confirm(self, question: str) -> bool:
        raise Refused(f"{question.rstrip('?')}: not approved, and there is no terminal to ask on; "
                      f"{HOW_TO_APPROVE}. Nothing was changed")

    def approve(self, question: str, names: Sequence[str], *, preselect: bool = False) -> Approval:
        self.confirm(question)
        return NO


_TERMINAL: dict[str, Any] = {}


def terminal_io() -> dict[str, Any]:
    """Where questions are asked: on standard input and output when both are the terminal;
    when the output goes elsewhere (`invoke switch | tee deploy.log`), on the controlling
    terminal itself, so the question is seen and the pipe gets the plan and the report."""
    if sys.stdout.isatty():
        return {}
    if not _TERMINAL:
        from prompt_toolkit.input import create_input
        from prompt_toolkit.output import create_output

        # Kept open for the run's questions; two handles, since a terminal cannot seek.
        reading = open("/dev/tty", encoding="utf-8")  # noqa: SIM115
        writing = open("/dev/tty", "w", encoding="utf-8")  # noqa: SIM115
        _TERMINAL.update(input=create_input(reading), output=create_output(writing))
    return dict(_TERMINAL)


class Questionary:
    can_ask = True

    def confirm(self, question: str) -> bool:
        import questionary  # imported here: `invoke --list` must stay fast

        answer = questionary.confirm(question, default=False, **terminal_io()).unsafe_ask()  # Ctrl-C raises
        return bool(answer)

    def approve(self, question: str, names: Sequence[str], *, preselect: bool = False) -> Approval:
        if len(names) == 1:
            return Approval(tuple(names) if self.confirm(question) else ())
        import questionary

        every, some, none = f"Yes, all {len(names)} hosts", "Choose hosts...", "No"
        answer = questionary.select(question, choices=[none, every, some], default=none,
                                    **terminal_io()).unsafe_ask()
        if answer == every:
            return Approval(tuple(names))
        if answer != some:
            return NO
        chosen = questionary.checkbox("Which hosts? (space checks or unchecks one, enter goes on)",
                                      choices=[questionary.Choice(n, checked=preselect) for n in names],
                                      **terminal_io()).unsafe_ask()
        return Approval.of(chosen or (), names)


PASSWORD_FILE_VARIABLE = "NIXTASKS_SUDO_PASSWORD_FILE"


def ask_password(question: str) -> str:
    """A hidden prompt on the terminal (nothing is echoed). Callers check for a terminal first:
    with none, they refuse instead of waiting on a prompt nobody sees."""
    import questionary

    answer = questionary.password(question, **terminal_io()).unsafe_ask()  # Ctrl-C raises
    return str(answer or "")


def has_terminal() -> bool:
    """A person to ask: standard input is a terminal, and so is the output, or the controlling
    terminal can be opened to ask on (the output is piped to a log). Never without a terminal
    on standard input: `invoke ... </dev/null` under a terminal is a script, not a person."""
    if not sys.stdin.isatty():
        return False
    if sys.stdout.isatty():
        return True
    try:
        os.close(os.open("/dev/tty", os.O_RDWR))
    except OSError:
        return False
    return True


def prompter_for(approved: bool) -> Prompter:
    if approved:
        return AlwaysYes()
    return Questionary() if has_terminal() else NoTerminal()
