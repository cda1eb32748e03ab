"""A deploy's steps before the plan, with a recording runner: where the closure diff runs."""

from __future__ import annotations

import json

import pytest

from nixtasks.actions import closures
from nixtasks.errors import NixtasksError
from nixtasks.host.runner import Result
from nixtasks.models import LOCAL, Action, Command, Host, Target
from tests.recording import OK, RecordingRunner

OLD, NEW = "/nix/store/" + "a" * 32 + "-nixos-system-web1-1.0", "/nix/store/" + "b" * 32 + "-nixos-system-web1-1.1"
WEB1 = Host("web1", "web1", Target("web1", "root"))
DIFF = "nixos-system-web1: 1.0 → 1.1\n"


def diff_where(old_is_here: bool) -> tuple[str, list[Target]]:
    def respond(step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if target == LOCAL and not old_is_here:
            return Result(1, "", f"error: path '{OLD}' is not valid")
        return Result(0, DIFF, "")

    runner = RecordingRunner(respond)
    diff = closures.closure_diff(WEB1, OLD, closures.Built(NEW, LOCAL), runner)
    return diff, [c.target for c in runner.calls]


def test_the_diff_runs_here_when_this_machine_has_both_closures():
    assert diff_where(old_is_here=True) == (DIFF, [LOCAL])


def test_the_diff_runs_on_the_host_when_this_machine_lacks_what_it_runs():
    assert diff_where(old_is_here=False) == (DIFF, [LOCAL, WEB1.target])


def test_a_system_built_elsewhere_is_diffed_on_the_host_alone():
    runner = RecordingRunner(lambda step, cmd, target, fresh: Result(0, DIFF, ""))
    assert closures.closure_diff(WEB1, OLD, closures.Built(NEW, WEB1.target), runner) == DIFF
    assert [c.target for c in runner.calls] == [WEB1.target]


def test_nothing_to_diff_for_a_first_deploy_or_the_same_system():
    runner = RecordingRunner(lambda step, cmd, target, fresh: OK)
    assert closures.closure_diff(WEB1, "", closures.Built(NEW, LOCAL), runner) == ""
    assert closures.closure_diff(WEB1, NEW, closures.Built(NEW, LOCAL), runner) == ""
    assert runner.calls == []


def test_builds_get_gc_roots_here_and_on_a_build_host_for_the_length_of_the_run():
    builder = Target("builder", "root")
    web2 = Host("web2", "web2", Target("web2", "root"), build_host=builder)
    evaluated = ('{"web1": {"drv": "/nix/store/w1.drv", "out": "/nix/store/w1"}, '
                 '"web2": {"drv": "/nix/store/w2.drv", "out": "/nix/store/w2"}}')
    runner = RecordingRunner(lambda step, cmd, target, fresh: Result(0, evaluated if "eval" in cmd.argv else "", ""))
    runner.gc_roots, runner.build_host_roots = "/run/here/roots", "/tmp/nixtasks-roots-abc"
    req = closures.BuildRequest(Action.SWITCH, (WEB1, web2), "/flake")
    built = closures.build(req, runner, runner.echo).built
    assert built[("web2", builder)] == closures.Built("/nix/store/w2", builder)
    realised = {c.target: c.cmd.argv for c in runner.calls if c.cmd.argv[:2] == ("nix-store", "--realise")}
    assert realised[LOCAL][2:5] == ("--add-root", "/run/here/roots/0", "--indirect")
    assert realised[builder][2:5] == ("--add-root", "/tmp/nixtasks-roots-abc/1", "--indirect")


def test_a_build_leaves_result_one_host_or_result_name_each_and_copies_from_a_build_host(tmp_path):
    builder = Target("builder", "root")
    web2 = Host("web2", "web2", Target("web2", "root"), build_host=builder)
    built = {closures.key(WEB1): closures.Built(OLD, LOCAL), closures.key(web2): closures.Built(NEW, builder)}

    runner = RecordingRunner()
    closures.result_links([WEB1], built, tmp_path, runner, runner.echo)
    assert [c.cmd.argv for c in runner.calls] == [
        ("nix-store", "--realise", "--add-root", str(tmp_path / "result"), "--indirect", "--", OLD)]

    runner = RecordingRunner()
    closures.result_links([WEB1, web2], built, tmp_path, runner, runner.echo)
    assert [(c.target, c.cmd.argv[:4]) for c in runner.calls] == [
        (LOCAL, ("nix-store", "--realise", "--add-root", str(tmp_path / "result-web1"))),
        (LOCAL, ("nix", "--extra-experimental-features", "nix-command flakes", "copy")),  # from the build host
        (LOCAL, ("nix-store", "--realise", "--add-root", str(tmp_path / "result-web2")))]
    assert "ssh://root@builder" in runner.calls[1].cmd.argv


def test_keep_going_sets_aside_a_host_that_does_not_evaluate_or_build_with_nixs_error():
    """One evaluation for the fleet; each configuration alone only when it fails; a build with
    --keep-going, and the systems whose output is missing afterwards named with Nix's line."""
    db1, web2 = (Host(n, n, Target(n, "root")) for n in ("db1", "web2"))
    good = {"web1": {"drv": "/nix/store/w1.drv", "out": "/nix/store/w1"},
            "web2": {"drv": "/nix/store/w2.drv", "out": "/nix/store/w2"}}

    def respond(step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        argv = " ".join(cmd.argv)
        if "eval" in cmd.argv:
            if '"db1"' in argv:
                return Result(1, "", "error: undefined variable 'oops'\n\n       at /nix/store/x-source/db1.nix:3:5:\n")
            return Result(0, json.dumps({c: v for c, v in good.items() if f'"{c}"' in argv}), "")
        if cmd.argv[:2] == ("nix-store", "--realise"):
            assert "--keep-going" in cmd.argv
            return Result(1, "", "error: builder for '/nix/store/w2.drv' failed with exit code 1\n")
        if cmd.argv[0] == "xargs":  # which outputs are missing
            return Result(0, "/nix/store/w2\n", "")
        return OK

    runner = RecordingRunner(respond)
    req = closures.BuildRequest(Action.SWITCH, (WEB1, web2, db1), "/flake")
    builds = closures.build(req, runner, runner.echo, keep_going=True)
    assert builds.built == {("web1", LOCAL): closures.Built("/nix/store/w1", LOCAL)}
    assert builds.failed == {
        ("db1", LOCAL): "its evaluation failed: undefined variable 'oops'",
        ("web2", LOCAL): "its build failed: builder for '/nix/store/w2.drv' failed with exit code 1"}
    evaluations = [c for c in runner.calls if "eval" in c.cmd.argv]
    assert len(evaluations) == 4  # the fleet's once, then each configuration alone

    runner = RecordingRunner(respond)  # without --keep-going, the first failure stops everything, as before
    with pytest.raises(NixtasksError, match="undefined variable 'oops'"):
        closures.build(req, runner, runner.echo)


def test_keep_going_with_no_host_left_stops_before_anything_and_says_what_to_do(tmp_path):
    from nixtasks.actions.journal import Journal
    from nixtasks.errors import DeployFailed
    from nixtasks.fleet import engine

    runner = RecordingRunner()
    req = engine.DeployRequest(Action.SWITCH, (WEB1,), "/flake")
    failed = {closures.key(WEB1): "its evaluation failed: undefined variable 'oops'"}
    with pytest.raises(DeployFailed, match="no host's system could be made: web1: its evaluation failed") as stopped:
        engine.build_failures(req, failed, Journal(runner, tmp_path / "journal.jsonl"), 0.1, runner.echo)
    assert "--show-trace" in str(stopped.value) and stopped.value.report.results[0].outcome.value == "failed"
    assert runner.calls == []  # the host was not contacted: its record is the deployer's alone
