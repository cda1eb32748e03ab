"""The pure parts of generations, rollback choice, gc, journal, status, space and sudoers."""

from pathlib import Path

import pytest

from nixtasks.actions import access, inspection, journal
from nixtasks.errors import InventoryError, UsageError
from nixtasks.host import facts as host_facts
from nixtasks.host import generations, space
from nixtasks.inventory import parse
from nixtasks.models import Check, GitState

LIST = """   1   2026-11-20 10:00:00
   2   2026-11-21 10:00:00
   3   2026-11-22 10:00:00   (current)
   4   2026-11-23 10:00:00
"""
DETAILS = "\n".join([
    "gen\t1\t/nix/store/a-sys\t1.0\tabc\t/nix/store/k1-linux/bzImage",
    "gen\t2\t/nix/store/b-sys\t1.1\t\t/nix/store/k1-linux/bzImage",
    "gen\t3\t/nix/store/c-sys\t1.2\tdef\t/nix/store/k2-linux/bzImage",
    "gen\t4\t/nix/store/d-sys\t1.3\tghi\t/nix/store/k2-linux/bzImage",
    "running\t/nix/store/d-sys",
    "booted-kernel\t/nix/store/k2-linux/bzImage",
])


def gens():
    return generations.parse(LIST, DETAILS)


def test_generations_newest_first_with_running_and_boot():
    found = gens()
    assert found.numbers == [4, 3, 2, 1]
    assert [(g.number, g.running, g.boots) for g in found.generations] == [
        (4, True, False), (3, False, True), (2, False, False), (1, False, False)]
    assert found.get(1).version == "1.0" and found.get(1).revision == "abc"


def test_rollback_target_is_the_one_before_the_boot_generation():
    assert generations.choose_target("web1", gens(), None)[0].number == 2
    assert generations.choose_target("web1", gens(), 4)[0].number == 4


def test_missing_generation_lists_the_real_ones():
    with pytest.raises(UsageError, match="web1: there is no generation 42; it has 1, 2, 3, 4"):
        generations.choose_target("web1", gens(), 42)
    only = generations.parse("   7   2026-11-20 10:00:00   (current)\n", "gen\t7\t/nix/store/x\t1\t\t\n")
    with pytest.raises(UsageError, match="no generation older than the current one \\(7\\)"):
        generations.choose_target("web1", only, None)


def test_kernel_change_is_noticed():
    found = gens()
    assert generations.kernel_changes(found, found.get(1))
    assert not generations.kernel_changes(found, found.get(3))


def test_gc_never_deletes_the_running_or_booting_generation():
    assert [g.number for g in generations.to_delete(gens(), keep=1)] == [2, 1]
    assert generations.to_delete(gens(), keep=4) == []
    with pytest.raises(UsageError):
        generations.to_delete(gens(), keep=0)


def test_profile_link_number():
    assert generations.generation_of_profile_link("system-42-link\n") == 42
    assert generations.generation_of_profile_link("/nix/var/nix/profiles/system-7-link") == 7
    assert generations.generation_of_profile_link("nonsense") is None


def test_damaged_or_hostile_journal_lines_are_skipped_and_control_characters_never_printed():
    good = journal.new_record("web1", "switch", "ok", reason="\x1b[31mred")
    bad = [
        '{"id":"a","time":1,"operator":"x","host":"web1","action":null,"outcome":"ok"}',
        good.line().replace('"host": "web1"', '"host": ["web1"]'),
        good.line().replace('"before_generation": null', '"before_generation": "1"'),
    ]
    assert journal.parse_lines("\n".join([*bad, good.line()])) == [good]
    assert "\x1b" not in journal.render([good])


def test_path_info_json_before_and_after_nix_2_19():
    assert space.nar_sizes('{"/nix/store/a": {"narSize": 7}}') == {"/nix/store/a": 7}


def test_journal_merge_keeps_one_copy_sorted_and_skips_damaged_lines(tmp_path: Path):
    first = journal.new_record("web1", "switch", "ok", reason="a; $(id)")
    second = journal.new_record("web1", "rollback", "ok")
    path = tmp_path / "j.jsonl"
    journal.append_local(path, first)
    journal.append_local(path, second)
    host_text = second.line() + "\nnot json\n{\"foo\": 1}\n"
    merged = journal.merge(journal.read_local(path), journal.parse_lines(host_text))
    assert [r.id for r in merged] == [first.id, second.id]
    assert merged[0].reason == "a; $(id)"  # kept as data, one JSON line
    assert "\n" not in first.line()


def test_facts_and_drift():
    facts = host_facts.parse_facts("running\t/nix/store/a\nprofile\tsystem-3-link\nprofile-path\t/nix/store/a\n"
                                "revision\tabc\nfailed\tbroken.service\nstate\tdegraded\n")
    assert (facts.generation, facts.failed_units, facts.state) == (3, ("broken.service",), "degraded")
    assert inspection.compare(facts, "/nix/store/a") == "up to date"
    assert inspection.compare(facts, "/nix/store/b") == "drifted"
    assert inspection.compare(facts, None) == "unknown"
    assert inspection.revision_state(facts, GitState("abc")) == "matches HEAD"
    assert inspection.revision_state(facts, GitState("xyz")).startswith("differs")


def test_flake_at_head_only_for_a_dirty_local_tree(tmp_path: Path):
    flake = tmp_path / "fleet"
    flake.mkdir()
    dirty = GitState("f" * 40, dirty=True)
    expected = f"git+file://{tmp_path}?rev={'f' * 40}&dir=fleet"
    assert inspection.flake_at_head(str(flake), dirty, str(tmp_path)) == expected
    assert inspection.flake_at_head(str(flake), GitState("f" * 40), str(tmp_path)) == str(flake)
    assert inspection.flake_at_head("github:me/fleet", dirty, None) == "github:me/fleet"


def test_space():
    assert space.available_bytes("Filesystem 1024-blocks Used Available Capacity Mounted on\n"
                                 "tmpfs 2048 2044 4 100% /nix/store\n") == 4096
    assert space.shortage("tiny", "/nix/store", 10_000, 4096, "invoke gc") == (
        "tiny: /nix/store has 4.0 KiB free, but the new system needs 9.8 KiB there; nothing was copied. "
        "Free space with `invoke gc`")
    assert space.shortage("tiny", "/nix/store", 100, 4096, "x") is None
    assert space.nar_sizes('[{"path": "/nix/store/a", "narSize": 5}]') == {"/nix/store/a": 5}


def test_sudoers_snippet_uses_anchored_regexes_never_wildcards():
    text = access.sudoers("deploy")
    store = "/nix/store/[0-9a-z]{32}-[-+._?0-9A-Za-z\\=]+"
    assert "deploy ALL=(root) NOPASSWD: NIXTASKS" in text
    assert "/usr/bin/env ^-i PATH\\=/run/wrappers/bin\\:" in text
    assert f"nix-env -p /nix/var/nix/profiles/system --set {store}$" in text
    assert "--switch-generation [0-9]+$" in text and "--delete-generations [0-9]+( [0-9]+)*$" in text
    assert "dd of\\=/var/lib/nixtasks/journal[.]jsonl oflag\\=append conv\\=notrunc status\\=none$" in text
    assert (f"--unit\\=nixtasks-switch-to-configuration --property\\=ExecStopPost\\=-/bin/sh -c "
            f"'mkdir -p /run/nixtasks && \\: > /run/nixtasks/activation-done' {store}/bin/switch-to-configuration "
            "(switch|boot|test|dry-activate)$") in text
    assert "*" not in text.replace("[0-9]+( [0-9]+)*", "")
    assert access.literal("a,b:c=d(e).") == "a\\,b\\:c\\=d[(]e[)][.]"


def test_health_checks_in_the_inventory(tmp_path: Path):
    inv = parse({"defaults": {"checks": [{"http": "http://{address}/health", "contains": "ok", "retries": 2}]},
                 "hosts": {"web1": {"checks": [{"unit": "nginx.service"}]}}}, "nixtasks.toml", tmp_path)
    assert inv.defaults.checks == (Check("http", "http://{address}/health", contains="ok", retries=2),)
    assert inv.hosts["web1"].checks == (Check("unit", "nginx.service"),)


@pytest.mark.parametrize("check, message", [
    ({"http": "ftp://x"}, "hosts.web1.checks[0].http: expected a URL starting with http://"),
    ({"unit": "-x"}, "hosts.web1.checks[0].unit: expected a systemd unit name"),
    ({"unit": "a", "command": "b"}, "hosts.web1.checks[0]: expected exactly one of http, unit or command"),
    ({"http": "http://x", "retries": 0}, "hosts.web1.checks[0].retries: expected a whole number from 1 to 100"),
    ({"http": "http://x", "timeout": -1}, "hosts.web1.checks[0].timeout: expected seconds, more than 0"),
    ({"http": "http://x", "retry": 2}, "hosts.web1.checks[0].retry: unknown key"),
])
def test_bad_health_checks(tmp_path: Path, check, message):
    with pytest.raises(InventoryError) as err:
        parse({"hosts": {"web1": {"checks": [check]}}}, "nixtasks.toml", tmp_path)
    assert str(err.value).startswith(f"nixtasks.toml: {message}")


def test_every_sudoers_pattern_stays_within_what_sudo_matches():
    """sudo does not match a command against an argument pattern of much more than 1000
    characters (the watchdog's arm stopped matching at about 1030, and the deploy user could not
    arm it). Each pattern keeps a margin, so a few more characters in a script are not the end."""
    for line in access.sudoers("deploy").splitlines():
        if " ^" in line:
            pattern = line.split(" ^", 1)[1].rstrip(" ,\\")
            assert len(pattern) <= 990, line[:120]
