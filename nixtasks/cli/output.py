"""Where nixtasks' lines go: standard error, or standard output when that is a log."""

from __future__ import annotations

import sys

LOG: list[bool] = []  # set by a run whose output goes to a log (see `output_to_log`)


def echo(line: str) -> None:
    stream = sys.stdout if LOG else sys.stderr
    stream.write(line + "\n")  # one write: lines of parallel hosts never interleave
    stream.flush()


def output_to_log(as_json: bool) -> None:
    """`invoke switch | tee deploy.log` at a terminal: the plan, the hosts' lines and the report
    go to standard output, which the log (and, through tee, the terminal) gets, in plain lines;
    the questions go to the terminal itself. Only then: standard error is the terminal and
    standard output is not, and carries no JSON report. A script that captures both (`> log
    2>&1`, CI) keeps everything on standard error as before."""
    if not as_json and sys.stderr.isatty() and not sys.stdout.isatty() and not LOG:
        LOG.append(True)
