"""Several commands in one ssh round trip: the remote line (run here by a real `sh`, as the
login shell on a host would run it) and how its output is split back into results."""

from __future__ import annotations

import shlex
import subprocess

from nixtasks.host import commands
from nixtasks.host.runner import Result, split_batch
from nixtasks.models import Command, Target

HOST = Target("web1", "deploy", sudo=True)
MARKER = "@@nixtasks-0123456789abcdef@@"


def run_remote(cmds: list[Command]) -> Result:
    """What the host does with the batch: ssh hands everything after `--`, joined by spaces,
    to the login shell."""
    argv = commands.ssh_batch_argv(cmds, Target("web1", "root"), ("-o", "BatchMode=yes"), MARKER)
    remote = " ".join(argv[argv.index("--") + 1:])
    proc = subprocess.run(["sh", "-c", remote], input="".join(c.stdin for c in cmds), text=True,
                          capture_output=True, timeout=10)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_each_command_keeps_its_own_sudo_and_quoting():
    argv = commands.ssh_batch_argv([Command(("systemd-run", "a b"), sudo=True), Command(("cat", "x;y"))], HOST,
                                   ("-o", "BatchMode=yes"), MARKER)
    assert argv[:5] == ("ssh", "-o", "BatchMode=yes", "deploy@web1", "--") and len(argv) == 6
    assert shlex.split(argv[-1])[:2] == ["sh", "-c"]
    script = shlex.split(argv[-1])[2]
    assert "sudo -n env -i" in script and script.count("sudo -n") == 1  # only the command that needs root
    assert "x;y" in script and "a b" in script


def test_results_are_split_per_command_and_stdin_reaches_only_its_command():
    results = split_batch(run_remote([Command(("cat",)), Command(("printf", "no newline")),
                                      Command(("cat",), stdin="for the third\n")]), MARKER, 3)
    assert results == [Result(0, "", ""), Result(0, "no newline", ""), Result(0, "for the third\n", "")]


def test_the_first_failure_ends_the_batch_with_its_status_and_stderr():
    raw = run_remote([Command(("echo", "one")), Command(("sh", "-c", "echo half; echo broke >&2; exit 3")),
                      Command(("touch", "/nonexistent/never"))])
    assert raw.exit_code == 3
    results = split_batch(raw, MARKER, 3)
    assert results == [Result(0, "one\n", ""), Result(3, "half\n", "broke\n")]


def test_a_batch_cut_off_before_its_first_marker_fails_as_ssh_did():
    results = split_batch(Result(255, "", "ssh: connect to host web1 port 22: Connection refused\n"), MARKER, 2)
    assert results == [Result(255, "", "ssh: connect to host web1 port 22: Connection refused\n", cut_off=True)]


def test_a_status_line_cut_in_half_is_no_status():
    """ssh gave up while the marker line was on its way: the host may have gone on."""
    cut = Result(255, f"one\n{MARKER}0 0\npartial{MARKER}1", "Timeout, server web1 not responding.\n")
    results = split_batch(cut, MARKER, 3)
    assert [(r.exit_code, r.cut_off) for r in results] == [(0, False), (255, True)]
    assert results[1].stdout == "partial"


def test_a_marker_printed_by_a_command_without_the_secret_is_output():
    results = split_batch(run_remote([Command(("echo", "@@nixtasks-other@@0 0"))]), MARKER, 1)
    assert results == [Result(0, "@@nixtasks-other@@0 0\n", "")]


def test_on_this_machine_a_batch_runs_in_turn_and_stops_at_the_first_failure():
    from nixtasks.host.runner import ShRunner
    from nixtasks.models import LOCAL

    cmds = [Command(("echo", "one")), Command(("false",)), Command(("echo", "three"))]
    with ShRunner(echo=lambda line: None) as runner:
        assert [r.exit_code for r in runner.run_all(cmds, LOCAL, check=False)] == [0, 1]
        assert [r.stdout for r in runner.run_all(cmds, LOCAL, check=False, keep_going=True)] == ["one\n", "", "three\n"]


def test_keep_going_runs_every_command_of_a_remote_batch():
    argv = commands.ssh_batch_argv([Command(("false",)), Command(("echo", "after"))], Target("web1", "root"),
                                   (), MARKER, keep_going=True)
    proc = subprocess.run(["sh", "-c", " ".join(argv[argv.index("--") + 1:])], text=True, capture_output=True,
                          timeout=10)
    results = split_batch(Result(proc.returncode, proc.stdout, proc.stderr), MARKER, 2, keep_going=True)
    assert [(r.exit_code, r.stdout) for r in results] == [(1, ""), (0, "after\n")]


def streamed(cmds: list[Command], quiet: int) -> tuple[list[str], list[int], Result]:
    """A batch run by the real runner's executor (here, by `sh`), streamed with `quiet` commands
    first: the lines shown, and how many had been shown when `after_quiet` was called."""
    from nixtasks.host.runner import ShRunner

    shown: list[str] = []
    told: list[int] = []
    argv = commands.ssh_batch_argv(cmds, Target("web1", "root"), (), MARKER)
    with ShRunner(echo=shown.append) as runner:
        raw = runner._execute(("sh", "-c", " ".join(argv[argv.index("--") + 1:])), "web1", marker=MARKER,
                              quiet_steps=quiet, after_quiet=lambda: told.append(len(shown)))
    return shown, told, raw


def test_a_streamed_batch_shows_nothing_of_its_quiet_commands_and_tells_when_they_passed():
    # the lock's take and the facts (nixtasks' own), then the activation, whose output is the operator's
    shown, told, raw = streamed([Command(("echo", "lock")), Command(("echo", "facts")),
                                 Command(("sh", "-c", "echo activating; echo warning >&2"))], quiet=2)
    assert [line for line in shown if line != "[web1] warning"] == ["[web1] activating"] and "[web1] warning" in shown
    assert told == [0]  # at once, before the activation said anything
    assert [r.stdout for r in split_batch(raw, MARKER, 3)] == ["lock\n", "facts\n", "activating\n"]


def test_a_quiet_command_that_fails_ends_the_batch_unseen_and_untold():
    shown, told, raw = streamed([Command(("sh", "-c", "echo held by another >&2; exit 75")),
                                 Command(("echo", "facts")), Command(("echo", "activating"))], quiet=2)
    assert shown == [] and told == []
    assert [r.exit_code for r in split_batch(raw, MARKER, 3)] == [75]


def test_on_this_machine_the_quiet_commands_run_in_turn_unseen_and_then_tell():
    from nixtasks.host.runner import ShRunner
    from nixtasks.models import LOCAL

    shown: list[str] = []
    told: list[int] = []
    cmds = [Command(("echo", "lock")), Command(("echo", "activating"))]
    with ShRunner(echo=shown.append) as runner:
        results = runner.run_all(cmds, LOCAL, label="here", stream=True, quiet=1,
                                 after_quiet=lambda: told.append(len(shown)))
    assert [r.stdout for r in results] == ["lock\n", "activating\n"]
    assert shown == ["[here] activating"] and told == [0]
