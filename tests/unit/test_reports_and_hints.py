"""What a person reads when something is not as planned: a sudo that wants a password, an
unreachable host (status, verify, --skip-unreachable, the ssh command to try), the checks'
labels and the plan's promises per action."""

from __future__ import annotations

import pytest

from nixtasks.actions import checks, inspection
from nixtasks.errors import DeployFailed, HostUnreachable, NixtasksError
from nixtasks.fleet import engine, flow, selection
from nixtasks.host.facts import FACTS_SCRIPT, Facts, facts_command, parse_facts, read_facts
from nixtasks.host.runner import Result, failure_of
from nixtasks.models import Action, Check, Command, Host, HostResult, Outcome, Policy, Report, Target
from tests.recording import RecordingRunner

DEPLOY = Host("web2", "web2", Target("10.0.0.12", "deploy", sudo=True))
ROOT = Host("web1", "web1", Target("10.0.0.11", "root"))
LOST = Result(255, "", "ssh: connect to host 10.0.0.12 port 22: Connection timed out\n")


def facts_runner(stdout: str) -> RecordingRunner:
    return RecordingRunner(lambda step, cmd, target, fresh: Result(0, stdout, "") if step == "facts" else
                           Result(1, "", "unexpected"))


# --- 7: a sudo that wants a password is found by the first read, before anything changes ----------------


def test_the_first_read_asks_sudo_without_a_password_only_where_sudo_is_used():
    assert facts_command().argv == ("sh", "-c", FACTS_SCRIPT)
    assert facts_command(sudo_probe=True).argv == ("sh", "-c", FACTS_SCRIPT, "nixtasks-facts", "sudo-probe")
    assert "sudo -n env -i PATH=" in FACTS_SCRIPT and "--list-generations" in FACTS_SCRIPT
    runner = facts_runner("running\t/nix/store/x\nsudo\tpassword\n")
    assert read_facts(DEPLOY, runner, sudo_probe=True).sudo_wants_password
    read_facts(ROOT, runner, sudo_probe=True)  # root: no sudo, no probe
    read_facts(DEPLOY, runner)  # later reads: no probe (it would fill the host's auth log)
    assert [c.cmd.argv[3:] for c in runner.calls] == [("nixtasks-facts", "sudo-probe"), (), ()]
    assert not parse_facts("running\t/nix/store/x\n").sudo_wants_password


def test_a_host_whose_sudo_wants_a_password_stops_the_run_in_one_line_saying_how_to_give_it():
    good, wanting = Facts(reachable=True), Facts(reachable=True, sudo_wants_password=True)
    selection.sudo_ready([(ROOT, good), (DEPLOY, good)])  # nothing to say
    with pytest.raises(NixtasksError) as err:
        selection.sudo_ready([(ROOT, good), (DEPLOY, wanting)])
    line = err.value.line
    assert line.startswith("error: web2 (deploy@10.0.0.12): sudo there wants a password and none was given; "
                           "nothing was changed on any host.")
    assert "--ask-sudo-password" in line and "NIXTASKS_SUDO_PASSWORD_FILE" in line
    assert line.endswith("invoke sudoers --user deploy") and "\n" not in line
    assert "lock" not in line and "unlock" not in line and err.value.exit_code == 1


# --- 14: unreachable hosts ----------------------------------------------------------------------


def test_the_unreachable_hint_is_the_ssh_command_nixtasks_runs():
    err = failure_of(Command(("true",)), DEPLOY.target, "web2", LOST, ("-F", "/etc/lab/ssh config", "-p", "2222"))
    assert isinstance(err, HostUnreachable)
    assert str(err) == ("web2: cannot reach the host over ssh (ssh: connect to host 10.0.0.12 port 22: Connection "
                        "timed out); check it is up and try `ssh -F '/etc/lab/ssh config' -p 2222 deploy@10.0.0.12`")
    plain = failure_of(Command(("true",)), ROOT.target, "web1", LOST)
    assert str(plain).endswith("try `ssh root@10.0.0.11`")


def test_verify_names_an_unreachable_host_once():
    runner = RecordingRunner(lambda step, cmd, target, fresh: LOST)
    verdict = inspection.verify_host(DEPLOY, None, runner)
    assert verdict.problems[0].startswith("cannot reach the host over ssh (ssh: connect")
    assert inspection.render_verdicts([verdict]).splitlines()[:2] == [
        "web2: PROBLEMS", f"  - {verdict.problems[0]}"]


def row(host: str, reachable: bool, units: tuple[str, ...] = (), error: str = "") -> inspection.StatusRow:
    return inspection.StatusRow(host, reachable, 1 if reachable else None, "", "unknown", "unknown", units, error)


def test_status_does_not_know_an_unreachable_hosts_failed_units_and_says_so():
    up, down = row("web1", True), row("web2", False, error="web2: cannot reach the host over ssh (timed out)")
    assert up.as_json()["failed_units"] == [] and down.as_json()["failed_units"] is None
    assert inspection.failed_units_cell(up) == "none" and inspection.failed_units_cell(down) == "unknown"
    assert inspection.unreachable_error([up]) == ""
    assert inspection.unreachable_error([up, down]) == (
        "web2: cannot reach the host over ssh (timed out); so its system and failed units are unknown")
    other = row("db1", False, error="db1: cannot reach the host over ssh (refused)")
    assert inspection.unreachable_error([down, up, other]).startswith("web2, db1 cannot be reached (web2: cannot")


def result(host: str, outcome: Outcome, message: str = "") -> HostResult:
    return HostResult(host=host, action=Action.SWITCH, outcome=outcome, message=message)


def test_a_deploy_that_skipped_an_unreachable_host_shows_its_report_and_does_not_exit_0():
    shown: list[str] = []
    report = Report(Action.SWITCH, (result("web2", Outcome.SKIPPED, "unreachable: timed out"),
                                    result("web1", Outcome.OK)))
    with pytest.raises(DeployFailed) as err:
        flow.finish(report, shown.append)
    assert "web2  skipped" in shown[0] and "web1  ok" in shown[0]
    assert err.value.exit_code == 1 and err.value.report is report
    assert str(err.value).startswith("skipped as unreachable (--skip-unreachable): web2; nothing was changed there")
    failed = Report(Action.SWITCH, (result("web2", Outcome.SKIPPED), result("web1", Outcome.ROLLED_BACK, "bad")))
    with pytest.raises(DeployFailed) as err:
        flow.finish(failed, shown.append)
    assert str(err.value) == "web1: rolled back: bad; skipped as unreachable: web2"


# --- 14: check labels and the plan's promises -------------------------------------------------


def test_an_http_check_reads_as_the_url_it_requested():
    check = Check("http", "http://{address}/health?host={host}", retries=1, interval=0)
    runner = RecordingRunner(lambda step, cmd, target, fresh: Result(0, "oops\n500", ""))
    ok, detail = checks.run_check(check, ROOT, "10.0.0.11", runner)
    assert not ok and detail == "answered 500, expected 200 (after 1 tries)"
    assert checks.label(check, ROOT, "10.0.0.11") == "check http http://10.0.0.11/health?host=web1"
    assert checks.label(Check("unit", "nginx.service"), ROOT, "") == "check unit nginx.service"


def test_the_plan_says_what_each_action_really_does():
    policy = Policy()
    switch = engine.describe_policy(policy, ["web1", "web2"], Action.SWITCH)
    assert "checks:   after each host's activation" in switch and "a failed host is rolled back" in switch
    assert "watchdog: a remote host reverts by itself" in switch
    effect = [line for line in switch.splitlines() if line.startswith("  effect:")]
    assert effect == ["  effect:   each host activates the new system with switch-to-configuration test; it becomes "
                      "the boot entry (profile, boot loader) only after the watchdog's confirmation and the checks: a "
                      "host restarted before that boots what it booted before"]
    assert engine.describe_policy(policy, ["web1", "web2"], Action.TEST) == switch.replace(effect[0] + "\n", "")
    bare = engine.describe_policy(Policy(watchdog=False, checks=False), ["web1"], Action.SWITCH)
    assert "boot entry (profile, boot loader) only after the activation: a host" in bare
    boot = engine.describe_policy(policy, ["web1", "web2"], Action.BOOT)
    assert "effect:   only the boot entry is set: each host runs what it runs now until it reboots" in boot
    assert "checks:   none: they would test the system that runs now" in boot
    assert "watchdog: none: nothing is activated now" in boot
    dry = engine.describe_policy(policy, ["web1", "web2"], Action.DRY_ACTIVATE)
    assert "effect:   none: each host only says what an activation would change" in dry
    assert "checks:" not in dry and "watchdog:" not in dry and "rolled back" not in dry
