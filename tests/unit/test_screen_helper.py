"""The test terminal shows what a person would see: a line drawn over is gone."""

from __future__ import annotations

import sys

import pytest

from tests.screen import ENTER, Terminal


def test_a_line_redrawn_over_is_gone_from_the_screen():
    program = ("import sys; sys.stdout.write('question?'); sys.stdout.flush(); "
               "sys.stdout.write('\\r\\x1b[2Kprogress'); print()")
    with Terminal([sys.executable, "-c", program]) as term:
        assert term.wait_exit(30) == 0
        screen = term.wait_for("progress")
        assert "question?" not in screen


def test_typed_keys_reach_the_program_and_a_missing_text_fails():
    program = "answer = input('name? '); print('hello ' + answer)"
    with Terminal([sys.executable, "-c", program]) as term:
        term.wait_for("name?")
        term.send("web1" + ENTER)
        term.wait_for("hello web1")
        assert term.wait_exit(30) == 0
        with pytest.raises(AssertionError):
            term.wait_for("never printed", timeout=0.5)
