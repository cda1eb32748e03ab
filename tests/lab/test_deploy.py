"""Single-host actions end to end: make and invoke against lab hosts, no mocks."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from nixtasks.host.runner import ShRunner
from nixtasks.models import LOCAL, Command, Target
from tests.screen import DOWN, ENTER, SPACE, Terminal

from .conftest import STATE, labctl


def unchanged(fleet, host: str) -> None:
    assert fleet.lab.current_system(host) == ""
    assert fleet.lab.profile(host) == ""


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error: ")]


def test_make_switch_as_root_then_a_new_release(fleet, root_host):
    host = root_host
    proc = fleet.make(f"host/{host}/switch", "YES=1")
    assert proc.returncode == 0, proc.stderr
    first = fleet.build(host)
    assert fleet.lab.current_system(host) == first == fleet.lab.profile(host)
    status, body = fleet.lab.health(host)
    assert (status, json.loads(body)) == (200, {"status": "ok", "host": host, "release": "1.0"})
    assert f"[{host}] " in proc.stderr  # streamed lines carry the host's name

    fleet.set_knobs(host, release="1.1")
    proc = fleet.invoke("switch", "--host", host, "--yes", "--reason", "release 1.1")
    assert proc.returncode == 0, proc.stderr
    second = fleet.build(host)
    assert second != first and fleet.lab.current_system(host) == second
    assert '"release": "1.1"' in fleet.lab.health(host)[1]
    assert f"now:     {first}" in proc.stderr and f"new:     {second}" in proc.stderr
    assert "1.0 → 1.1" in proc.stderr  # the closure diff, shown before the approval
    assert "reason:   release 1.1" in proc.stderr


def test_several_hosts_in_one_command_each_get_their_own_system(fleet):
    """Regression: nix build --json lists results in its own order; web2 once got db1's system."""
    proc = fleet.invoke("switch", "--host", "web2,db1", "--host", "web1", "--yes")
    assert proc.returncode == 0, proc.stderr
    for host in ("web1", "web2", "db1"):
        assert fleet.lab.current_system(host) == fleet.build(host)
        assert json.loads(fleet.lab.health(host)[1])["host"] == host
    assert proc.stderr.count("Plan: switch on 3 host(s)") == 1


def test_switch_as_deploy_user_with_sudo(fleet):
    proc = fleet.invoke("switch", "--host", "web2", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert fleet.lab.current_system("web2") == fleet.build("web2")
    assert fleet.lab.health("web2")[0] == 200


def test_boot_sets_profile_only_and_the_next_boot_runs_it(fleet):
    proc = fleet.make("host/db1/boot", "YES=1")
    assert proc.returncode == 0, proc.stderr
    path = fleet.build("db1")
    assert fleet.lab.profile("db1") == path
    assert fleet.lab.current_system("db1") == ""
    labctl("reboot", "db1")
    assert fleet.lab.current_system("db1") == path


def test_test_activates_without_touching_the_profile(fleet):
    proc = fleet.invoke("test", "--host", "web1", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert fleet.lab.current_system("web1") == fleet.build("web1")
    assert fleet.lab.profile("web1") == ""


def test_dry_activate_build_and_dry_build_change_nothing(fleet):
    proc = fleet.invoke("dry-activate", "--host", "web1")
    assert proc.returncode == 0, proc.stderr
    assert "would start" in proc.stderr
    proc = fleet.invoke("build", "--host", "web1")
    assert proc.returncode == 0, proc.stderr
    assert "nixos-system-web1-1.0" in proc.stderr
    proc = fleet.make("host/web1/dry-build")
    assert proc.returncode == 0, proc.stderr
    unchanged(fleet, "web1")


def test_dry_run_prints_commands_and_changes_nothing(fleet):
    proc = fleet.invoke("switch", "--host", "web1", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "would run on web1:" in proc.stderr and "switch-to-configuration switch" not in proc.stderr
    # a switch: the test activation, then (after the confirmation and checks) profile and boot entry
    said = proc.stderr
    assert said.index("switch-to-configuration test") < said.index("--set /nix/store/") < \
        said.index("switch-to-configuration boot"), said
    unchanged(fleet, "web1")
    path = fleet.build("web1")
    assert fleet.lab.exec("web1", "test", "-e", path, check=False).returncode != 0  # not even copied


@pytest.mark.parametrize(("host", "builder"), [("web1", "db1"), ("db1", "web1")],
                         ids=["on-nix-2.26-for-nix-2.8", "on-nix-2.8-for-nix-2.26"])
def test_build_on_another_lab_host(fleet, host, builder):
    """The derivation goes to the build host, is realised there, and the result goes from there
    to the target (through this deployer): in both directions between Nix 2.8 and Nix 2.26. It
    has a GC root there for the length of the run, gone when the run ends."""
    proc = fleet.invoke("switch", "--host", host, "--build-host", f"root@{builder}", "--yes", "--verbose")
    assert proc.returncode == 0, proc.stderr
    path = fleet.build(host)
    assert fleet.lab.current_system(host) == path
    assert fleet.lab.exec(builder, "test", "-e", path, check=False).returncode == 0  # realised there
    assert f"[build@root@{builder}]" in proc.stderr
    realise = next(line for line in proc.stderr.splitlines() if line.startswith("+ ssh") and "--realise" in line)
    assert "--add-root /tmp/nixtasks-roots-" in realise and "--indirect" in realise
    left = fleet.lab.exec(builder, "sh", "-c", "ls -d /tmp/nixtasks-roots-* 2>/dev/null", check=False).stdout
    assert left == ""  # removed at the end of the run
    assert fleet.lab.health(host)[0] == 200


def test_no_approval_and_no_terminal_refuses_at_once(fleet):
    proc = fleet.make("host/web1/switch")
    assert proc.returncode != 0
    errors = error_lines(proc)
    assert len(errors) == 1 and "--yes" in errors[0] and "YES=1" in errors[0], proc.stderr
    assert "building" not in proc.stderr  # refused before anything ran
    unchanged(fleet, "web1")
    proc = fleet.invoke("switch", "--host", "web1")
    assert proc.returncode == 3


def test_one_question_for_the_fleet_and_a_chosen_subset(fleet):
    with Terminal([sys.executable, "-m", "invoke", "switch", "--host", "web1,web2"], cwd=fleet.path,
                  env=fleet.lab.env) as term:
        term.wait_for("Switch web1, web2 (2 hosts)?", timeout=120)
        term.send(DOWN + DOWN + ENTER)  # No / Yes, all 2 hosts / Choose hosts...
        term.wait_for("Which hosts?")
        term.send(SPACE + ENTER)  # tick the first host, web1, only
        code = term.wait_exit()
        seen = term.scrollback()
    assert code == 0, seen  # what was picked went out fine; the other host was not selected
    assert re.search(r"^web2\s+not selected\s", seen, re.MULTILINE), seen  # in the report table
    assert fleet.lab.current_system("web1") == fleet.build("web1"), seen
    unchanged(fleet, "web2")
    journal = Path(fleet.lab.env["NIXTASKS_JOURNAL"]).read_text().splitlines()
    assert {r["host"]: r["outcome"] for r in map(json.loads, journal)} == {"web1": "ok", "web2": "not selected"}


def test_failing_activation_exits_non_zero_with_the_hosts_error(fleet):
    fleet.set_knobs("web1", fail_activation=True)
    proc = fleet.invoke("switch", "--host", "web1", "--yes")
    assert proc.returncode == 1, proc.stderr
    errors = error_lines(proc)
    assert len(errors) == 1 and errors[0].startswith("error: web1: failed: switch failed (exit 2)"), proc.stderr
    assert "Activation script snippet 'nixtasks-fail' failed" in errors[0]  # the failing line, not the last one
    assert "nothing to roll back to" in errors[0]  # the host ran no system before


def test_batches_of_one_stop_at_the_first_failure(fleet):
    fleet.set_knobs("web1", fail_activation=True)
    proc = fleet.invoke("switch", "--host", "web1,web2,db1", "--yes", "--batch-size", "1")
    assert proc.returncode == 1, proc.stderr
    for host in ("web2", "db1"):
        assert fleet.lab.current_system(host) == "" and fleet.lab.profile(host) == "", proc.stderr
    assert proc.stderr.count("not started: batch 1 failed") == 2


def test_unreachable_host_is_one_clear_error(fleet):
    fleet.lab.exec("db1", "ip", "link", "set", "lab0", "down")
    proc = fleet.invoke("switch", "--host", "db1", "--yes")
    fleet.lab.exec("db1", "ip", "link", "set", "lab0", "up")
    assert proc.returncode == 1
    assert len(error_lines(proc)) == 1 and "cannot reach" in error_lines(proc)[0], proc.stderr


def test_hostile_input_is_refused_or_quoted(fleet):
    marker = fleet.lab.workspace / "pwned"
    for target in (f"host/web1;touch {marker}/switch", f"host/$(touch {marker})/switch", "host/web1/switch;id"):
        proc = fleet.make(target, "YES=1")
        assert proc.returncode != 0 and "error" in proc.stderr.lower(), proc.stderr
    for name in ("web1;id", "$(id)", "`id`", "'x'"):
        proc = fleet.make(f"host/{name}/switch", "YES=1")
        assert proc.returncode == 2 and "not a valid host name" in proc.stderr, proc.stderr
    proc = fleet.invoke("switch", "--host", "web1", "--target-host", f"-oProxyCommand=touch {marker}", "--yes")
    assert proc.returncode == 2 and "not a valid ssh target" in proc.stderr
    proc = fleet.make("host/web1/dry-activate", f"REASON=$(touch {marker}); `touch {marker}` $(shell touch {marker})")
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    unchanged(fleet, "web1")


def test_hostile_arguments_reach_the_host_verbatim(lab):
    """Over real ssh + sudo: every argument arrives as one word and runs nothing."""
    words = ("a; touch /tmp/pwned", "$(touch /tmp/pwned)", "`id`", "two words", "it's", 'say "hi"', "new\nline", "")
    with ShRunner(ssh_config=str(STATE / "ssh/config")) as runner:
        for target in (Target("web2", "deploy", sudo=True), Target("web1", "root")):
            out = runner.run(Command(("printf", "[%s]", *words), sudo=True), target).stdout
            assert out == "".join(f"[{w}]" for w in words)
        assert lab.exec("web1", "test", "-e", "/tmp/pwned", check=False).returncode != 0
        assert runner.run(Command(("true",)), LOCAL).ok


def test_local_actions_on_a_lab_host(fleet):
    """`make switch` and friends run on the machine itself: here, inside web1."""
    fleet.seed_host("web1")
    make = ["make", "-C", str(fleet.path), f"INVOKE={sys.executable} -m invoke"]
    for action in ("build", "dry-build", "dry-activate"):
        proc = fleet.lab.exec("web1", *make, action, check=False)
        assert proc.returncode == 0, proc.stderr
    unchanged(fleet, "web1")
    proc = fleet.lab.exec("web1", *make, "test", check=False)
    assert proc.returncode == 0, proc.stderr
    path = fleet.build("web1")
    assert fleet.lab.current_system("web1") == path and fleet.lab.profile("web1") == ""
    proc = fleet.lab.exec("web1", *make, "boot", check=False)
    assert proc.returncode == 0, proc.stderr
    assert fleet.lab.profile("web1") == path
    proc = fleet.lab.exec("web1", *make, "switch", check=False)
    assert proc.returncode == 0, proc.stderr
    assert fleet.lab.health("web1")[0] == 200


def test_local_switch_asks_when_the_tree_is_dirty(fleet):
    fleet.seed_host("web1")
    (fleet.path / "hosts.json").write_text((fleet.path / "hosts.json").read_text().replace('"1.0"', '"1.2"'))
    proc = fleet.lab.exec("web1", "make", "-C", str(fleet.path), f"INVOKE={sys.executable} -m invoke", "switch",
                          check=False)
    assert proc.returncode != 0 and "no terminal to ask on" in proc.stderr, proc.stderr
    assert "uncommitted change" in proc.stderr
    unchanged(fleet, "web1")


def test_local_rollback_and_generations_on_a_lab_host(fleet):
    fleet.seed_host("web1")
    make = ["make", "-C", str(fleet.path), f"INVOKE={sys.executable} -m invoke"]
    assert fleet.lab.exec("web1", *make, "switch", check=False).returncode == 0
    first = fleet.build("web1")
    fleet.set_knobs("web1", release="1.1")
    assert fleet.lab.exec("web1", *make, "switch", check=False).returncode == 0
    assert '"release": "1.1"' in fleet.lab.health("web1")[1]
    proc = fleet.lab.exec("web1", "sh", "-c", f"cd {fleet.path} && {sys.executable} -m invoke generations --json",
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert [g["number"] for g in json.loads(proc.stdout)["web1"]] == [2, 1]
    proc = fleet.lab.exec("web1", *make, "rollback", check=False)  # this machine: no approval asked
    assert proc.returncode == 0, proc.stderr
    assert fleet.lab.current_system("web1") == first and '"release": "1.0"' in fleet.lab.health("web1")[1]


def transient_notices(fleet, host: str) -> list[str]:
    journal = fleet.lab.exec(host, "journalctl", "-b", "--no-pager", "-q", "-o", "cat").stdout
    return [line for line in journal.splitlines() if "/run/systemd/transient/" in line]


def test_deploys_leave_no_transient_unit_notices_in_the_host_journal(fleet):
    """systemd before 258 logs "Failed to open /run/systemd/transient/<unit>" for every later
    load of a transient unit's name that lived through a daemon-reload (as the activation does):
    nixtasks' lock, watchdog and activation units must not leave any (it logged about seven
    per deploy)."""
    host = "web1"
    assert fleet.invoke("switch", "--host", host, "--yes").returncode == 0
    for release in ("1.1", "1.2"):  # with the watchdog armed, confirmed and disarmed each time
        fleet.set_knobs(host, release=release)
        proc = fleet.invoke("switch", "--host", host, "--yes")
        assert proc.returncode == 0, proc.stderr
    assert fleet.invoke("rollback", "--host", host, "--yes").returncode == 0
    assert fleet.invoke("status", "--host", host).returncode == 0
    assert fleet.invoke("gc", "--host", host, "--keep", "2", "--yes").returncode == 0
    assert fleet.lab.current_system(host) == fleet.lab.profile(host) != ""
    # Before: 52 such lines for these five operations. Now none in most runs; about one run in
    # four shows one (a load of a watchdog or lock name in the instant before systemd rebuilds
    # its map: see "Not there yet" in docs/limitations.md), so one is tolerated and counted.
    assert len(transient_notices(fleet, host)) <= 1, transient_notices(fleet, host)
    held = fleet.lab.exec(host, "systemctl", "list-units", "--all", "--plain", "--no-legend", "nixtasks-lock.service",
                          "nixtasks-watchdog.*", "nixtasks-switch-to-configuration.service").stdout
    assert held.strip() == ""  # no lock, watchdog or activation unit left behind


def verbose_commands(stderr: str) -> list[str]:
    """The commands `--verbose` printed: from a `+ ` line to where the shell's quoting closes
    (a script in a command spans lines, inside its quotes)."""
    lines, found = stderr.splitlines(), []
    for i, line in enumerate(lines):
        if line.startswith("+ "):
            command = line[2:]
            for more in lines[i + 1:]:
                try:
                    shlex.split(command)
                    break
                except ValueError:  # a quote still open: the command goes on
                    command += "\n" + more
            found.append(command)
    return found


def test_verbose_prints_each_command_once_as_a_line_that_runs_it(fleet):
    proc = fleet.invoke("switch", "--host", "web1", "--yes", "--verbose")
    assert proc.returncode == 0, proc.stderr
    shown = verbose_commands(proc.stderr)
    assert all(command.count(" -F ") <= 1 for command in shown)  # the lab's NIX_SSHOPTS repeats the inventory's
    copies = [command for command in shown if " copy --to ssh://root@web1 " in command]
    assert len(copies) == 1 and copies[0].startswith("NIX_SSHOPTS=")  # what nix reaches the host with
    # Pasted into a shell, a command that reads the host runs as it did, with the same words on
    # the host (over a connection of its own: the run's control socket is gone with the run).
    facts = [command for command in shown if command.startswith("ssh ") and "profile-path" in command]
    again = subprocess.run(["sh", "-c", facts[-1]], text=True, capture_output=True, env=fleet.lab.env, timeout=60)
    assert f"running\t{fleet.build('web1')}\n" in again.stdout, again.stderr


def test_build_leaves_a_result_link_that_is_a_gc_root(fleet):
    proc = fleet.make("host/web1/build")
    assert proc.returncode == 0, proc.stderr
    result = fleet.path / "result"
    assert result.is_symlink() and os.readlink(result) == fleet.build("web1")
    roots = subprocess.run(["nix-store", "--gc", "--print-roots"], text=True, capture_output=True,
                           env=fleet.lab.env, check=True).stdout
    assert f"{result} -> {fleet.build('web1')}" in roots
    assert fleet.lab.current_system("web1") == ""  # build activates nothing
    proc = fleet.invoke("build", "--host", "web1,web2")
    assert proc.returncode == 0, proc.stderr
    for host in ("web1", "web2"):
        assert os.readlink(fleet.path / f"result-{host}") == fleet.build(host)
    assert "not tracked" not in fleet.invoke("build", "--host", "db1", "--no-link").stderr
    assert not (fleet.path / "result-db1").exists() and os.readlink(result) == fleet.build("web1")


def test_nix_options_reach_the_evaluation_and_build_and_show_in_the_plan(fleet, tmp_path):
    """--override-input, --option, --max-jobs, --cores, -L and --impure, as nixos-rebuild users
    give them: the switched host runs what the overridden input makes."""
    site = tmp_path / "site"
    shutil.copytree(fleet.path / "site", site)
    flake = site / "flake.nix"
    flake.write_text(flake.read_text().replace('siteName = "nixtasks-lab"', 'siteName = "overridden-site"'))
    proc = fleet.invoke("switch", "--host", "web1", "--yes", "--override-input", f"site=path:{site}",
                        "--option", "max-silent-time=600", "--max-jobs", "2", "--cores", "1", "-L", "--impure")
    assert proc.returncode == 0, proc.stderr
    plan = next(line for line in proc.stderr.splitlines() if line.startswith("  nix:"))
    for given in (f"--override-input site path:{site}", "--option max-silent-time 600", "--max-jobs 2", "--cores 1",
                  "--impure", "--print-build-logs"):
        assert given in plan
    with urllib.request.urlopen(f"http://{fleet.lab.address('web1')}/", timeout=5) as page:
        assert "overridden-site" in page.read().decode()
    assert fleet.lab.current_system("web1") != fleet.build("web1")  # not what the flake alone builds


@pytest.mark.parametrize(("given", "says"), [
    (("--option", "no-such-setting=1"), "--option no-such-setting: Nix has no setting named 'no-such-setting'"),
    (("--override-input", "nope=path:/var/empty"), "--override-input nope path:/var/empty: the flake has no input"),
    (("--max-jobs", "many"), "--max-jobs: 'many' is not a whole number"),
])
def test_a_bad_nix_option_is_one_line_and_nothing_is_built(fleet, given, says):
    proc = fleet.invoke("switch", "--host", "web1", "--yes", *given)
    assert proc.returncode == 2, proc.stderr
    assert len(error_lines(proc)) == 1 and says in error_lines(proc)[0]
    assert "Traceback" not in proc.stderr and "[build]" not in proc.stderr
    unchanged(fleet, "web1")
