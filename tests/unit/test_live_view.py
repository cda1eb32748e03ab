"""The live view and a question never draw at once: while the question is open, the live
view is off the screen; after the answer (or Ctrl-C) it is drawn again. Asserted on the
screen of a real pty, as a person sees it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.screen import CTRL_C, DOWN, ENTER, SPACE, Terminal

REPO = Path(__file__).resolve().parents[2]
PROGRAM = Path(__file__).with_name("programs") / "live_question.py"


def asking(kind: str) -> Terminal:
    return Terminal([sys.executable, str(PROGRAM), kind], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def asked_while_drawing(term: Terminal, question: str, seconds: float) -> str:
    """The live view draws its rows, then the question is on the screen with no key pressed,
    and stays there for `seconds`: the screen then."""
    term.wait_for(r"web\d\s+copying", regex=True)
    term.wait_for(question, timeout=10)
    return term.holds(question, seconds)


def test_the_question_stays_on_the_screen_and_the_live_view_resumes_after_the_answer():
    with asking("confirm") as term:
        screen = asked_while_drawing(term, "Switch web1 (root@web1) to nixos-system-web1-1.1? (y/N)", 2)
        assert "copying" not in term.text(), screen  # one thing at a time: the rows are off the screen
        term.send("y")  # questionary's confirm takes y without Enter
        screen = term.wait_for(r"web1\s+answered True", regex=True, timeout=10)
        assert "Switch web1 (root@web1) to nixos-system-web1-1.1? Yes" in screen  # above the live view
        term.send(ENTER)
        assert term.wait_exit(30) == 0


def test_the_live_view_resumes_after_ctrl_c_at_the_question():
    with asking("confirm") as term:
        asked_while_drawing(term, "Switch web1 (root@web1) to nixos-system-web1-1.1?", 1)
        term.send(CTRL_C)
        term.wait_for(r"web1\s+answered interrupted", regex=True, timeout=10)
        term.send(ENTER)
        assert term.wait_exit(30) == 0


def test_the_select_and_the_checkbox_for_many_hosts_stay_on_the_screen():
    with asking("approve") as term:
        screen = asked_while_drawing(term, "Switch web1, web2 (2 hosts)?", 2)
        for choice in ("No", "Yes, all 2 hosts", "Choose hosts..."):
            assert choice in screen, screen
        term.send(DOWN + DOWN)
        term.wait_for("» Choose hosts...", timeout=10)
        term.send(ENTER)
        screen = term.wait_for("Which hosts?", timeout=10)
        screen = term.holds("Which hosts?", 2)
        assert "web1" in screen and "web2" in screen and "copying" not in screen, screen
        term.send(SPACE)
        term.send(ENTER)
        term.wait_for(r"web1\s+answered web1\s", regex=True, timeout=10)
        term.send(ENTER)
        assert term.wait_exit(30) == 0
