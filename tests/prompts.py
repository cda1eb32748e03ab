"""A prompter that answers from a list, for unit tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from nixtasks.host.prompts import Approval


class Scripted:
    """Answers from a list, for tests: True, False, or (for `approve`) the names picked in the
    checkbox (all of them is a yes, none a no)."""

    can_ask = True

    def __init__(self, answers: Iterable[bool | Sequence[str]]) -> None:
        self.answers = list(answers)
        self.questions: list[str] = []

    def confirm(self, question: str) -> bool:
        self.questions.append(question)
        return bool(self.answers.pop(0))

    def approve(self, question: str, names: Sequence[str], *, preselect: bool = False) -> Approval:
        self.questions.append(question)
        answer = self.answers.pop(0)
        if isinstance(answer, bool):
            return Approval(tuple(names) if answer else ())
        return Approval.of(answer, names)
