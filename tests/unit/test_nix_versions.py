"""What nixtasks reads from Nix, as Nix 2.8 (Debian 12, the deployer and most lab hosts) and
Nix 2.26 (Debian 13, the lab's db1) really print it. The fixtures were captured from lab hosts
deploying the example fleet (tests/unit/fixtures/README.md says how)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nixtasks.actions import access, collection, plan
from nixtasks.host import generations, nixversion, space
from nixtasks.host.runner import Result
from nixtasks.models import Command, Host, Target
from tests.recording import RecordingRunner

FIXTURES = Path(__file__).parent / "fixtures"
VERSIONS = {"2.8": (2, 8, 0), "2.26": (2, 26, 3)}


def fixture(version: str, name: str) -> str:
    return (FIXTURES / f"nix-{version}" / name).read_text()


@pytest.mark.parametrize("version", VERSIONS)
def test_the_version_line(version):
    assert nixversion.parse(fixture(version, "version")) == VERSIONS[version]
    assert nixversion.parse("nix (Nix) 2.3") == (2, 3, 0)
    assert nixversion.parse("bash: nix: command not found") is None


@pytest.mark.parametrize("version", VERSIONS)
def test_path_info_json_gives_every_path_of_the_closure_with_its_size(version):
    """A list of objects with "path" before Nix 2.19; an object keyed by path since."""
    sizes = space.nar_sizes(fixture(version, "path-info.json"))
    listed = [line.split()[0] for line in fixture(version, "path-info-closure").splitlines()]
    assert sorted(sizes) == sorted(listed) and len(sizes) > 1
    assert all(size > 0 for size in sizes.values())


def test_both_path_info_shapes_give_the_same_sizes_for_the_same_closure():
    assert space.nar_sizes(fixture("2.8", "path-info.json")) == space.nar_sizes(fixture("2.26", "path-info.json"))


@pytest.mark.parametrize("version", VERSIONS)
def test_list_generations(version):
    found = generations.parse(fixture(version, "list-generations"), "")
    assert found.numbers == [2, 1]
    assert [g.boots for g in found.generations] == [True, False]
    assert all(len(g.date) == 19 for g in found.generations)


@pytest.mark.parametrize("version", VERSIONS)
def test_diff_closures_summary(version):
    diff = fixture(version, "diff-closures")
    assert "nixtasks-webapp: 1.0 → 1.1" in plan.diff_summary(diff)


@pytest.mark.parametrize("version", VERSIONS)
def test_what_gc_freed(version):
    freed = collection.FREED.search(fixture(version, "gc"))
    assert freed and freed[0].endswith("freed") and "store paths deleted" in freed[0]


@pytest.mark.parametrize(("version", "argv"), [
    ("2.8", ("nix", "--extra-experimental-features", "nix-command", "show-config")),
    ("2.26", ("nix", "--extra-experimental-features", "nix-command", "config", "show")),
])
def test_nix_settings_are_read_without_a_deprecation_warning(version, argv):
    """Nix 2.20 renamed `show-config` to `config show` and warns on the old name; 2.8 has no new one."""
    assert nixversion.config_show(nixversion.parse(fixture(version, "version"))) == argv
    assert "deprecated" in fixture("2.26", "show-config.stderr")


def doctor_of(version_line: str) -> list[access.Finding]:
    def respond(step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        answers = {("id", "-un"): "deploy\n", ("id", "-Gn"): "deploy nix-users\n",
                   ("nix", "--version"): version_line, ("df", "-Pk"): "F 1024-blocks Used Available C M\nx 9 9 "
                   "99999999 1% /\n"}
        if cmd.argv[-2:] in (("config", "show"), ("nix-command", "show-config")):
            return Result(0, "trusted-users = root deploy\n", "")
        return Result(0, answers.get(cmd.argv[:2], ""), "")

    host = Host(name="db1", config="db1", target=Target(address="db1", user="deploy", sudo=True))
    return access.doctor_host(host, RecordingRunner(respond))


@pytest.mark.parametrize("version", VERSIONS)
def test_the_doctor_reports_the_version_and_misses_nothing_on_tested_versions(version):
    nix = [f for f in doctor_of(fixture(version, "version")) if f.check == "nix"]
    assert [(f.ok, f.detail) for f in nix] == [(True, f"Nix {nixversion.text(VERSIONS[version])}")]


def test_the_doctor_warns_of_each_feature_an_old_nix_lacks():
    findings = doctor_of("nix (Nix) 2.3.16\n")
    warned = [f for f in findings if f.check == "nix" and not f.ok]
    assert warned and all(f.warning and f.fix == "upgrade Nix to 2.4 or newer" for f in warned)
    assert any("`nix store diff-closures`" in f.detail and "closure diff" in f.detail for f in warned)
    assert next(f for f in findings if f.check == "copy trust").ok  # still read, with `show-config`


def test_the_doctor_says_when_nix_is_missing_or_not_nix():
    def answering(stdout: str, code: int) -> list[access.Finding]:
        runner = RecordingRunner(lambda step, cmd, target, fresh: Result(code, stdout, "")
                                 if cmd.argv == ("nix", "--version") else Result(0, "root\n", ""))
        return [f for f in access.doctor_host(Host(name="h", config="h", target=Target(address="h")), runner)
                if f.check == "nix"]

    assert [(f.ok, f.warning, f.detail) for f in answering("", 127)] == [(False, False, "nix is not installed")]
    assert [(f.ok, f.warning) for f in answering("hello\n", 0)] == [(False, True)]


def test_the_deployer_needs_flakes():
    assert [f.fatal for f in nixversion.missing((2, 3, 16), nixversion.DEPLOYER_FEATURES)] == [True]
    assert nixversion.missing((2, 8, 0), nixversion.DEPLOYER_FEATURES) == []
