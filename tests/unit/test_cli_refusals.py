"""The command line's refusals as a user types them, in-process through the `nixtasks`
program (the same tasks as `invoke`), with a temporary inventory: one `error:` line, its exit
code, and nothing run: no runner made, or one that was sent no command. No root, no lab."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from nixtasks.cli import program, session
from tests.recording import RecordingRunner

INVENTORY = """\
[hosts.web1]
tags = ["web", "blue"]
canary = true
[hosts.web2]
tags = ["web", "green"]
[hosts.db1]
tags = ["db"]
[blue_green]
groups = ["blue", "green"]
switch_traffic = "lb --to {to} {hosts}"
"""


@dataclass
class Ran:
    code: int
    errors: list[str]  # the `error:` lines on stderr
    stderr: str
    runners: list[RecordingRunner]

    @property
    def commands(self) -> int:
        return sum(len(r.calls) for r in self.runners)


@pytest.fixture
def nixtasks(tmp_path: Path, monkeypatch, capsys):
    """`nixtasks ARGS...` in a directory with INVENTORY; every runner it makes records, runs nothing."""
    (tmp_path / "nixtasks.toml").write_text(INVENTORY)
    monkeypatch.chdir(tmp_path)
    for name in ("NIXTASKS_INVENTORY", "NIXTASKS_YES", "NIXTASKS_REASON", "NIXTASKS_FLAKE", "NIXTASKS_BUILD_HOST",
                 "NIXTASKS_SUDO", "NIXTASKS_SSH_USER", "NIXTASKS_SSH_CONFIG", "NIXTASKS_ASK_SUDO_PASSWORD",
                 "NIXTASKS_SUDO_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NIXTASKS_JOURNAL", str(tmp_path / "journal.jsonl"))
    monkeypatch.setenv("NIXTASKS_PLAN_KEY", str(tmp_path / "plan-key"))
    made: list[RecordingRunner] = []

    class Recorded(RecordingRunner):
        def __init__(self, **_settings: object) -> None:
            super().__init__()
            made.append(self)

        def __enter__(self) -> Recorded:
            return self

        def __exit__(self, *_exc: object) -> None:
            return None

    monkeypatch.setattr(session, "ShRunner", Recorded)

    def run(*args: str) -> Ran:
        argv = ["nixtasks", *args]
        monkeypatch.setattr(sys, "argv", argv)  # the bare-flag check reads it, as from a shell
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            program.main(argv)
        err = capsys.readouterr().err
        return Ran(int(exited.value.code or 0), [line for line in err.splitlines() if line.startswith("error:")],
                   err, made)

    return run


def refused(ran: Ran, line: str, code: int = 2) -> None:
    """One error line, starting with `line`, the exit code, and no command sent anywhere."""
    assert (ran.code, len(ran.errors)) == (code, 1), ran.stderr
    assert ran.errors[0].startswith(f"error: {line}"), ran.errors
    assert "Traceback" not in ran.stderr
    assert ran.commands == 0
    assert not Path("journal.jsonl").exists()  # nothing was recorded: nothing was done


# --- options the parser or the option checks refuse: no runner is even made ----------------------


@pytest.mark.parametrize("args, line", [
    (("switch", "--bogus"), "No idea what '--bogus' is!; see `nixtasks --list`"),
    (("deploy-everything",), "No idea what 'deploy-everything' is!"),
    (("switch", "--host", "web1", "--parallel", "0"), "--parallel: 0 is too small; give at least 1"),
    (("switch", "--host", "web1", "--parallel", "many"), "--parallel: 'many' is not a whole number; e.g. --parallel 1"),
    (("switch", "--host", "web1", "--batch-size", "0"), "--batch-size"),
    (("switch", "--host", "web1", "--batch-size", "1,2"), "--batch-size: give one size like 5 or 20%; for several, "
                                                          "use --batches 1,5,20%"),
    (("switch", "--host", "web1", "--batch-size", "2", "--batches", "1,2"), "give --batch-size or --batches, not both"),
    (("switch", "--host", "web1", "--batches", "1,,2"), "--batches: '1,,2' has an empty item"),
    (("switch", "--host", "web1", "--pause", "inf"), "--pause: inf is not a finite number"),
    (("switch", "--host", "web1", "--pause", "nan"), "--pause: nan is not a finite number"),
    (("switch", "--host", "web1", "--confirm-timeout", "inf"), "--confirm-timeout: inf is not a finite number"),
    (("switch", "--host", "web1", "--max-fail-percentage", "nan"), "--max-fail-percentage: nan is not a finite "
                                                                   "number"),
    (("switch", "--host", "web1", "--max-fail-percentage", "101"), "--max-fail-percentage: 101 is too large; give "
                                                                   "at most 100"),
    (("switch", "--host", "web1", "--confirm-timeout", "0"), "--confirm-timeout: 0 is too small; give at least 1"),
    (("switch", "--host", "web1", "--copy-timeout", "nan"), "--copy-timeout: nan is not a finite number"),
    (("switch", "--host", "web1", "--activation-timeout", "999999999"), "--activation-timeout: 999999999 is too "
                                                                        "large; give at most 604800"),
    (("switch", "--host", "web1", "--max-jobs", "lots"), "--max-jobs: 'lots' is not a whole number"),
    (("switch", "--host", "web1", "--cores", "-1"), "--cores: -1 is too small; give at least 0"),
    (("switch", "--host", "web1", "--option", "=x"), "--option '=x': give NAME=VALUE"),
    (("switch", "--host", "web1", "--override-input", "nixpkgs"), "--override-input: give the input and a flake "
                                                                  "reference"),
    (("rollback", "--host", "web1", "--generation", "0"), "--generation: 0 is too small; give at least 1"),
    (("gc", "--host", "web1", "--keep", "many"), "--keep: 'many' is not a whole number"),
    (("gc", "--host", "web1", "--keep", "nan"), "--keep: 'nan' is not a whole number"),
    (("rollback", "--host", "web1", "--generation", "inf"), "--generation: 'inf' is not a whole number"),
    (("canary", "--all", "--soak", "inf"), "--soak: inf is not a finite number"),
    (("gc", "--host", "web1", "--parallel", "0"), "--parallel: 0 is too small"),
    (("canary", "--all", "--soak", "-1"), "--soak: -1 is too small; give at least 0"),
    (("emergency", "--host", "web1", "--follow", "nan"), "--follow: nan is not a finite number"),
    (("stage", "--host", "web1", "--action", "bad"), "--action 'bad': stage plans a switch, boot or test"),
    (("stage", "--host", "web1", "--action", "build"), "--action build: stage plans a switch, boot or test"),
    (("update-deploy", "--all", "--message", ""), "--message: one line of text"),
    (("switch", "--host"), "--host needs a value: --host NAME, or a comma list"),
    (("switch", "--host", "--yes"), "--host needs a value"),
    (("status", "--tag", "--json"), "--tag needs a value"),
    (("sudoers", "--user", "no body"), "--user"),
])
def test_a_bad_option_is_one_line_and_exit_2_before_any_runner(nixtasks, args, line):
    ran = nixtasks(*args)
    refused(ran, line)
    assert ran.runners == []


@pytest.mark.parametrize("task", ["canary", "rolling", "stage", "emergency"])
def test_a_recipe_without_a_selection_is_refused(nixtasks, task):
    ran = nixtasks(task, "--reason", "x", *(() if task == "stage" else ("--yes",)))  # stage never asks
    refused(ran, f"{task} needs hosts: --host NAME, --tag TAG or --all (make {task} HOSTS=... or TAG=...)")
    assert ran.runners == []


@pytest.mark.parametrize("args, line", [
    (("blue-green",), "blue-green needs --to GROUP, the idle group to deploy to (blue or green)"),
    (("blue-green", "--to", "purple"), "--to purple: not one of the groups in [blue_green] groups (blue, green)"),
])
def test_blue_green_needs_one_of_its_groups(nixtasks, args, line):
    ran = nixtasks(*args, "--yes")
    refused(ran, line)
    assert ran.runners == []


def test_blue_green_refuses_a_selection_of_its_own(nixtasks):
    ran = nixtasks("blue-green", "--to", "blue", "--yes", "--host", "web1")
    # invoke's parser already refuses --host, which blue-green does not take
    refused(ran, "No idea what '--host' is!")


def test_update_deploy_without_a_terminal_or_hosts_is_refused_with_exit_3(nixtasks):
    ran = nixtasks("update-deploy")
    refused(ran, "update-deploy needs an approval and there is no terminal to ask on; pass --yes and name the hosts",
            code=3)
    assert ran.runners == []


def test_update_deploy_with_yes_but_no_hosts_is_refused(nixtasks):
    ran = nixtasks("update-deploy", "--yes")
    refused(ran, "update-deploy --yes deploys without asking, so it does not pick the hosts itself; name the hosts")


def test_unlock_needs_a_host(nixtasks):
    refused(nixtasks("unlock", "--yes"), "unlock needs --host NAME (or --tag, --all): which host's lock")


def test_a_reason_of_two_lines_is_refused(nixtasks):
    refused(nixtasks("switch", "--host", "web1", "--yes", "--reason", "one\ntwo"),
            "--reason: control characters such as newlines are not allowed; give one line")


# --- selections: refused once the inventory is read, before any command -------------------------


@pytest.mark.parametrize("args, line", [
    (("--host", ""), "--host '' names no host; give --host NAME (hosts in nixtasks.toml: web1, web2, db1), or, to act "
                     "on this machine, leave out --host"),
    (("--host", " , "), "--host ' , ' names no host"),
    (("--host", "web1,,db1"), "--host 'web1,,db1' has an empty name in its list"),
    (("--tag", ""), "--tag '' names no tag; give --tag NAME (tags in nixtasks.toml: blue, db, green, web)"),
    (("--all", "--host", "web1"), "--all and --host web1 both select hosts (--all: every host in nixtasks.toml); give "
                                  "one of them"),
    (("--tag", "db", "--all"), "--all and --tag db both select hosts"),
    (("--tag", "web", "--target-host", "root@10.0.0.9"), "--target-host root@10.0.0.9 deploys one configuration to "
                                                         "one machine; give it with a single --host NAME, not with "
                                                         "--tag or --all"),
    (("--all", "--target-host", "root@10.0.0.9"), "--target-host root@10.0.0.9 deploys one configuration"),
    (("--target-host", "root@10.0.0.9"), "--target-host needs --host NAME (which configuration to deploy there)"),
    (("--host", "web1,web2", "--target-host", "root@10.0.0.9"), "--target-host names one machine; give a single "
                                                                "--host with it"),
    (("--tag", "nosuch"), "no host in nixtasks.toml has the tag(s) nosuch"),
])
def test_an_empty_or_conflicting_selection_is_refused_before_any_command(nixtasks, args, line):
    refused(nixtasks("switch", *args, "--yes"), line)


@pytest.mark.parametrize("args", [("switch", "--yes"), ("rolling", "--yes"), ("canary", "--yes"), ("gc", "--yes"),
                                  ("rollback", "--yes"), ("stage",), ("status",), ("history",), ("verify",),
                                  ("generations",), ("doctor",)])
def test_an_empty_host_is_never_this_machine_whatever_the_task(nixtasks, args):
    refused(nixtasks(*args, "--host", ""), "--host '' names no host")


# --- recipes that refuse inside, before their engine runs a command ------------------------------


def test_canary_of_a_host_outside_the_selection_is_refused(nixtasks):
    refused(nixtasks("canary", "--host", "web1,web2", "--canary", "db1", "--yes"),
            "--canary db1: not in the selection (web1, web2)")


def test_canary_without_a_canary_host_in_the_selection_is_refused(nixtasks):
    refused(nixtasks("canary", "--host", "db1", "--yes"), "no canary host in the selection: mark one with "
                                                          "`canary = true`")


def test_emergency_without_a_reason_is_refused(nixtasks):
    refused(nixtasks("emergency", "--host", "web1", "--yes"), 'emergency needs --reason "..." (REASON=... for make): '
                                                              "it goes into the journal")


# --- apply: its plan file, refused before any host is asked anything ------------------------------


def plan_file(path: Path, **change: object) -> Path:
    """A plan sealed with this deployer's key, then changed by `change` (a hand edit)."""
    from nixtasks.actions import seal

    data = {"version": 2, "action": "switch", "git_revision": "c" * 40, "git_dirty": False, "created": "now",
            "hosts": {"web1": {"system": "/nix/store/" + "a" * 32 + "-nixos-system-web1", "running": "",
                               "generation": None}}}
    data["seal"] = seal.seal(data, seal.load_key(seal.key_path(), make=True))
    for key, value in change.items():
        data["hosts"]["web1"][key] = value
    path.write_text(json.dumps(data))
    return path


def test_apply_refuses_a_plan_edited_after_stage(nixtasks, tmp_path):
    plan = plan_file(tmp_path / "plan.json", system="/nix/store/" + "b" * 32 + "-nixos-system-web1")
    ran = nixtasks("apply", str(plan), "--yes")
    refused(ran, f"{plan}: not applied, it is not the plan that was staged: hosts.web1 was changed after stage. "
                 "Nothing was changed on any host")
    assert ran.runners == []


def test_apply_refuses_a_selection_of_its_own(nixtasks, tmp_path):
    plan = plan_file(tmp_path / "plan.json")
    refused(nixtasks("apply", str(plan), "--yes", "--host", "web1"), "No idea what '--host' is!")


def test_apply_of_a_missing_plan_file_says_how_to_make_one(nixtasks):
    ran = nixtasks("apply", "missing.json", "--yes")
    refused(ran, "missing.json: cannot read the plan (No such file or directory); make one with `invoke stage`")
    assert ran.runners == []


def test_the_harness_sees_commands_when_a_task_does_run(nixtasks):
    """What `refused` relies on: a task that gets past its checks sends commands to the runner."""
    ran = nixtasks("switch", "--host", "web1", "--yes")
    assert ran.commands > 0 and len(ran.runners) == 1, ran.stderr
