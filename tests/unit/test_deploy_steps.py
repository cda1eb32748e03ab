"""A deploy's steps before the plan, with a recording runner: where the closure diff runs."""

from __future__ import annotations

from nixtasks.actions import deploy
from nixtasks.host.recording import OK, RecordingRunner
from nixtasks.host.runner import Result
from nixtasks.models import LOCAL, Action, Command, Host, Target

OLD, NEW = "/nix/store/" + "a" * 32 + "-nixos-system-web1-1.0", "/nix/store/" + "b" * 32 + "-nixos-system-web1-1.1"
WEB1 = Host("web1", "web1", Target("web1", "root"))
DIFF = "nixos-system-web1: 1.0 → 1.1\n"


def diff_where(old_is_here: bool) -> tuple[str, list[Target]]:
    def respond(step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if target == LOCAL and not old_is_here:
            return Result(1, "", f"error: path '{OLD}' is not valid")
        return Result(0, DIFF, "")

    runner = RecordingRunner(respond)
    diff = deploy.closure_diff(WEB1, OLD, deploy.Built(NEW, LOCAL), runner)
    return diff, [c.target for c in runner.calls]


def test_the_diff_runs_here_when_this_machine_has_both_closures():
    assert diff_where(old_is_here=True) == (DIFF, [LOCAL])


def test_the_diff_runs_on_the_host_when_this_machine_lacks_what_it_runs():
    assert diff_where(old_is_here=False) == (DIFF, [LOCAL, WEB1.target])


def test_a_system_built_elsewhere_is_diffed_on_the_host_alone():
    runner = RecordingRunner(lambda step, cmd, target, fresh: Result(0, DIFF, ""))
    assert deploy.closure_diff(WEB1, OLD, deploy.Built(NEW, WEB1.target), runner) == DIFF
    assert [c.target for c in runner.calls] == [WEB1.target]


def test_nothing_to_diff_for_a_first_deploy_or_the_same_system():
    runner = RecordingRunner(lambda step, cmd, target, fresh: OK)
    assert deploy.closure_diff(WEB1, "", deploy.Built(NEW, LOCAL), runner) == ""
    assert deploy.closure_diff(WEB1, NEW, deploy.Built(NEW, LOCAL), runner) == ""
    assert runner.calls == []


def test_builds_get_gc_roots_here_and_on_a_build_host_for_the_length_of_the_run():
    builder = Target("builder", "root")
    web2 = Host("web2", "web2", Target("web2", "root"), build_host=builder)
    evaluated = ('{"web1": {"drv": "/nix/store/w1.drv", "out": "/nix/store/w1"}, '
                 '"web2": {"drv": "/nix/store/w2.drv", "out": "/nix/store/w2"}}')
    runner = RecordingRunner(lambda step, cmd, target, fresh: Result(0, evaluated if "eval" in cmd.argv else "", ""))
    runner.gc_roots, runner.build_host_roots = "/run/here/roots", "/tmp/nixtasks-roots-abc"
    req = deploy.BuildRequest(Action.SWITCH, (WEB1, web2), "/flake")
    built = deploy.build(req, runner, runner.echo)
    assert built[("web2", builder)] == deploy.Built("/nix/store/w2", builder)
    realised = {c.target: c.cmd.argv for c in runner.calls if c.cmd.argv[:2] == ("nix-store", "--realise")}
    assert realised[LOCAL][2:5] == ("--add-root", "/run/here/roots/0", "--indirect")
    assert realised[builder][2:5] == ("--add-root", "/tmp/nixtasks-roots-abc/1", "--indirect")


def test_a_build_leaves_result_one_host_or_result_name_each_and_copies_from_a_build_host(tmp_path):
    builder = Target("builder", "root")
    web2 = Host("web2", "web2", Target("web2", "root"), build_host=builder)
    built = {deploy.key(WEB1): deploy.Built(OLD, LOCAL), deploy.key(web2): deploy.Built(NEW, builder)}

    runner = RecordingRunner()
    deploy.result_links([WEB1], built, tmp_path, runner, runner.echo)
    assert [c.cmd.argv for c in runner.calls] == [
        ("nix-store", "--realise", "--add-root", str(tmp_path / "result"), "--indirect", "--", OLD)]

    runner = RecordingRunner()
    deploy.result_links([WEB1, web2], built, tmp_path, runner, runner.echo)
    assert [(c.target, c.cmd.argv[:4]) for c in runner.calls] == [
        (LOCAL, ("nix-store", "--realise", "--add-root", str(tmp_path / "result-web1"))),
        (LOCAL, ("nix", "--extra-experimental-features", "nix-command flakes", "copy")),  # from the build host
        (LOCAL, ("nix-store", "--realise", "--add-root", str(tmp_path / "result-web2")))]
    assert "ssh://root@builder" in runner.calls[1].cmd.argv
