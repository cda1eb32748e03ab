"""A terminal for tests: a program in a pseudo-terminal behind a terminal emulator (pyte), so
that a test asserts what a person sees on the screen, not which bytes went by. A prompt that
is drawn and then overwritten by a progress line is gone from the screen, as it is for a person.

    with Terminal(["make", "host/web1/switch"], cwd=repo, env=env) as term:
        term.wait_for("Switch web1")        # on the screen now, no key pressed
        term.send("y" + ENTER)
        assert term.wait_exit() == 0
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType

import pyte

ENTER = "\r"
DOWN = "\x1b[B"
UP = "\x1b[A"
SPACE = " "
CTRL_C = "\x03"


class AnsweringScreen(pyte.HistoryScreen):
    """Answers the program's cursor position requests as a real terminal does (prompt_toolkit
    asks, and without an answer waits, then prints a warning no person would see)."""

    answer: Callable[[str], object] = staticmethod(lambda data: None)

    def write_process_input(self, data: str) -> None:
        self.answer(data)


def controlling_terminal() -> None:
    """In the child: a session of its own whose controlling terminal is the pty (its standard
    input), as a shell's in a terminal window: /dev/tty is this terminal."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """`argv` on a pty of `cols` x `rows`, as the controlling terminal of its own session."""

    def __init__(self, argv: Sequence[str], *, cwd: str | os.PathLike[str] | None = None,
                 env: Mapping[str, str] | None = None, cols: int = 120, rows: int = 40) -> None:
        self.cols, self.rows = cols, rows
        self.screen = AnsweringScreen(cols, rows, history=20000, ratio=0.5)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self._lock = threading.Lock()
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        environment = {**(env if env is not None else os.environ), "TERM": "xterm-256color",
                       "COLUMNS": str(cols), "LINES": str(rows)}
        self.proc = subprocess.Popen(list(argv), cwd=cwd, env=environment, stdin=slave, stdout=slave, stderr=slave,
                                     preexec_fn=controlling_terminal, close_fds=True)
        os.close(slave)
        self.master = master
        self.screen.answer = lambda data: os.write(master, data.encode())
        self._reader = threading.Thread(target=self._pump, name="terminal-reader", daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every writer closed the pty
                return
            if not data:
                return
            with self._lock:
                self.raw += data
                self.stream.feed(data)

    # -- what a person sees -------------------------------------------------------------------

    def text(self) -> str:
        """The visible screen now, trailing blanks cut."""
        with self._lock:
            return "\n".join(line.rstrip() for line in self.screen.display).rstrip("\n")

    def scrollback(self) -> str:
        """What scrolled off the top, then the visible screen: all a person could scroll back to."""
        with self._lock:
            gone = ["".join(line[x].data for x in range(self.cols)).rstrip() for line in self.screen.history.top]
            shown = [line.rstrip() for line in self.screen.display]
        return "\n".join([*gone, *shown]).rstrip("\n")

    def wait_for(self, pattern: str, timeout: float = 30.0, *, regex: bool = False) -> str:
        """Until `pattern` (text, or a regular expression) is on the visible screen; the screen."""
        deadline = time.monotonic() + timeout
        found = (lambda s: re.search(pattern, s) is not None) if regex else (lambda s: pattern in s)
        while True:
            screen = self.text()
            if found(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"not on the screen after {timeout:g} s: {pattern!r}\n--- screen ---\n{screen}")
            if self.proc.poll() is not None:
                time.sleep(0.2)  # the last output may still be in the pty
                screen = self.text()
                if found(screen):
                    return screen
                raise AssertionError(f"exited {self.proc.returncode} before {pattern!r} was on the screen\n"
                                     f"--- screen ---\n{screen}")
            time.sleep(0.05)

    def holds(self, pattern: str, seconds: float) -> str:
        """`pattern` stays on the visible screen for `seconds` (no redraw may take it away)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            screen = self.text()
            if pattern not in screen:
                raise AssertionError(f"{pattern!r} left the screen\n--- screen ---\n{screen}")
            time.sleep(0.05)
        return self.text()

    # -- what a person does ---------------------------------------------------------------------

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait_exit(self, timeout: float = 300.0) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def close(self) -> None:
        """The program's whole session is killed by its process group id (never by name)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        with contextlib.suppress(OSError):
            os.close(self.master)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
