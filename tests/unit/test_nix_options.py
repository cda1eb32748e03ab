"""Nix options from the command line: parsed at the edge, passed on as nixos-rebuild passes them."""

from __future__ import annotations

import pytest

from nixtasks.actions import closures
from nixtasks.cli.options import nix_flags
from nixtasks.errors import UsageError
from nixtasks.host.runner import Result
from nixtasks.models import LOCAL, Action, Command, Host, NixFlags, Target
from tests.recording import RecordingRunner

WEB1 = Host("web1", "web1", Target("web1", "root"))
BUILT = Host("web2", "web2", Target("web2", "root"), build_host=Target("builder", "root"))
EVAL = ('{"web1": {"drv": "/nix/store/a.drv", "out": "/nix/store/a"}, '
        '"web2": {"drv": "/nix/store/b.drv", "out": "/nix/store/b"}}')


def test_options_are_name_value_pairs_given_either_way():
    flags = nix_flags(option=["substituters=", "max-silent-time 60", "extra-substituters=http://c a=b"],
                      override_input=["site=path:/src/site", "nixpkgs github:NixOS/nixpkgs/abc"], impure=True,
                      print_build_logs=True, max_jobs="4", cores="2")
    assert flags.options == (("substituters", ""), ("max-silent-time", "60"), ("extra-substituters", "http://c a=b"))
    assert flags.for_build() == ("--option", "substituters", "", "--option", "max-silent-time", "60",
                                 "--option", "extra-substituters", "http://c a=b", "--max-jobs", "4", "--cores", "2")
    assert flags.for_eval()[len(flags.for_build()):] == (
        "--impure", "--override-input", "site", "path:/src/site", "--override-input", "nixpkgs",
        "github:NixOS/nixpkgs/abc", "--print-build-logs")
    assert nix_flags(max_jobs="auto").for_build() == ("--max-jobs", "auto")
    assert str(NixFlags()) == ""


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"option": ["=1"]}, "--option '=1': give NAME=VALUE"),
    ({"option": ["--eval-store x"]}, "give NAME=VALUE"),
    ({"override_input": ["site"]}, "--override-input: give the input and a flake reference"),
    ({"max_jobs": "many"}, "--max-jobs: 'many' is not a whole number"),
    ({"cores": "-1"}, "--cores"),
])
def test_a_bad_nix_option_is_one_line(kwargs, says):
    with pytest.raises(UsageError, match=None) as raised:
        nix_flags(**kwargs)
    assert says in str(raised.value) and "\n" not in str(raised.value)


def build_with(flags: NixFlags, respond=None) -> RecordingRunner:
    runner = RecordingRunner(respond or (lambda step, cmd, target, fresh: Result(0, EVAL, "")))
    inventory = ("--option", "sandbox", "false")
    req = closures.BuildRequest(Action.SWITCH, (WEB1, BUILT), "/flake", nix_options=inventory, nix_flags=flags)
    closures.build(req, runner, runner.echo)
    return runner


def test_the_evaluation_gets_all_the_build_what_it_takes_and_the_build_host_only_the_command_lines():
    flags = NixFlags(override_inputs=(("site", "path:/s"),), impure=True, print_build_logs=True, max_jobs="2")
    runner = build_with(flags)
    by_program = {(c.cmd.argv[0], c.target): c.cmd.argv for c in runner.calls if "copy" not in c.cmd.argv}
    evaluation = by_program[("nix", LOCAL)]
    assert "--impure" in evaluation and "--print-build-logs" in evaluation and "--max-jobs" in evaluation
    assert evaluation[evaluation.index("--override-input"):][:3] == ("--override-input", "site", "path:/s")
    here = by_program[("nix-store", LOCAL)]
    assert here[here.index("--option"):here.index("--")] == ("--option", "sandbox", "false", "--max-jobs", "2")
    there = by_program[("nix-store", BUILT.build_host)]
    assert "--max-jobs" in there and "sandbox" not in there and "--impure" not in there  # the inventory's are ours


def test_an_unknown_setting_or_an_override_of_no_input_stops_before_anything_is_built():
    def knows(step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if "show-config" in cmd.argv:
            return Result(0, '{"substituters": {}, "max-jobs": {}}', "")
        return Result(0, EVAL, "")

    with pytest.raises(UsageError, match="--option substitutors: Nix has no setting named 'substitutors'"):
        build_with(NixFlags(options=(("substitutors", ""),)), knows)
    assert build_with(NixFlags(options=(("extra-substituters", "x"),)), knows).calls  # extra- of a known one

    def warns(step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        return Result(0, EVAL, "")

    runner = RecordingRunner(warns)
    runner.warnings.append("warning: the flag '--override-input nope path:/tmp' does not match any input")
    with pytest.raises(UsageError, match="the flake has no input named 'nope'; nothing was built"):
        closures.refuse_unmatched_overrides(NixFlags(override_inputs=(("nope", "path:/tmp"),)), runner.warnings)
