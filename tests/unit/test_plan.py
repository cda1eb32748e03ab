from nixtasks.actions import plan
from nixtasks.errors import Refused
from nixtasks.host.gitstate import parse_status
from nixtasks.host.prompts import NoTerminal
from nixtasks.models import Action, GitState, Host, HostPlan, HostResult, Outcome, Plan, Report, Target
from tests.prompts import Scripted

REMOTE = Host("web1", "web1", Target("web1", "root"))
LOCAL = Host("box", "box", Target(sudo=False))
CLEAN = GitState("a" * 40)
DIRTY = GitState("a" * 40, dirty=True, changes=(" M flake.nix",))


def test_remote_activation_always_needs_approval():
    for action in (Action.SWITCH, Action.BOOT, Action.TEST):
        assert plan.needs_approval(action, REMOTE, CLEAN)
    for action in (Action.BUILD, Action.DRY_BUILD, Action.DRY_ACTIVATE):
        assert not plan.needs_approval(action, REMOTE, DIRTY)


def test_local_activation_asks_only_when_dirty():
    assert not plan.needs_approval(Action.SWITCH, LOCAL, CLEAN)
    assert plan.needs_approval(Action.SWITCH, LOCAL, DIRTY)


def test_question_names_the_host_and_the_system():
    hp = HostPlan(REMOTE, Action.SWITCH, "/nix/store/abc-nixos-system-web1-1.1", None)
    assert plan.approval_question(hp) == "Switch web1 (root@web1) to nixos-system-web1-1.1?"


def test_rendered_plan_shows_target_action_paths_git_and_diff():
    hp = HostPlan(REMOTE, Action.SWITCH, "/nix/store/new-nixos-system-web1-1.1", "/nix/store/old-nixos-system-web1-1.0",
                  "nixtasks-webapp: 1.0 → 1.1\n", running_generation=3,
                  boot_system="/nix/store/old-nixos-system-web1-1.0", boot_generation=3)
    text = plan.render(Plan(Action.SWITCH, (hp,), DIRTY, ("warning: Git tree is dirty",), "hotfix"))
    for expected in ("web1 -> root@web1", "action:  switch",
                     "now:     /nix/store/old-nixos-system-web1-1.0 (generation 3, runs and boots)",
                     "new:     /nix/store/new-nixos-system-web1-1.1", "git:      aaaaaaaaaaaa (dirty)",
                     "nixtasks-webapp: 1.0 → 1.1", "reason:   hotfix", "Nix warned 1 time(s)"):
        assert expected in text


def test_git_lines_name_untracked_files():
    lines = plan.render_git(GitState("a", True, (" M hosts.json",), ("new.nix",)))
    assert "  new.nix" in lines and any("cannot see" in line for line in lines)


def test_parse_status():
    assert parse_status(" M a.nix\n?? b.nix\nA  c.nix\n") == ((" M a.nix", "A  c.nix"), ("b.nix",))
    # the links `build` leaves are not files the flake misses
    assert parse_status("?? result\n?? result-web1\n?? sub/result\n?? results.nix\n") == ((), ("results.nix",))


def test_report_rendering_and_failures():
    report = Report(Action.SWITCH, (HostResult("web1", Action.SWITCH, Outcome.FAILED, "/nix/store/x-sys", None,
                                               "boom"),))
    assert not report.ok and report.failed()[0].host == "web1"
    assert "web1  failed" in plan.render_report(report)


def test_no_terminal_refuses_and_says_how_to_approve():
    try:
        NoTerminal().confirm("Switch web1?")
    except Refused as exc:
        assert "--yes" in str(exc) and "YES=1" in str(exc) and exc.exit_code == 3
    else:
        raise AssertionError("NoTerminal must refuse")


def test_scripted_prompter_records_questions():
    prompter = Scripted([False])
    assert prompter.confirm("q?") is False and prompter.questions == ["q?"]
