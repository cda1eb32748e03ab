"""The pure parts of the recipes: lock-file changes, plan files, the traffic hook's quoting,
the choice of canaries."""

import json

import pytest

from nixtasks.actions import lockfile
from nixtasks.errors import UsageError
from nixtasks.fleet import engine, hooks
from nixtasks.models import Action, Host, Target
from nixtasks.recipes import canary, rolling, stage

LOCK = {"nodes": {"root": {"inputs": {"nixpkgs": "nixpkgs", "site": "site"}},
                  "nixpkgs": {"locked": {"rev": "a" * 40, "lastModified": 1700000000, "type": "github"}},
                  "site": {"locked": {"narHash": "sha256-OLDHASHxxxxxxxx", "lastModified": 1, "type": "path"}}},
        "root": "root", "version": 7}


def test_lock_changes_name_each_input_with_old_and_new():
    new = json.loads(json.dumps(LOCK))
    new["nodes"]["nixpkgs"]["locked"].update(rev="b" * 40, lastModified=1800000000)
    changed = lockfile.changes(json.dumps(LOCK), json.dumps(new))
    assert changed == [lockfile.InputChange("nixpkgs", "aaaaaaaaaaaa (2023-11-14 22:13)",
                                            "bbbbbbbbbbbb (2027-01-15 08:00)")]
    assert lockfile.changes(json.dumps(LOCK), json.dumps(LOCK)) == []
    assert lockfile.changes("", json.dumps(LOCK))[0].old == "(new)"
    with pytest.raises(Exception, match="not a lock file"):
        lockfile.nodes("{}")


def plan_text(**override: object) -> str:
    data = {"version": 1, "action": "switch", "git_revision": "c" * 40, "git_dirty": False, "created": "now",
            "hosts": {"web1": {"system": "/nix/store/" + "a" * 32 + "-nixos-system-web1", "running": "",
                               "generation": None}}}
    data.update(override)
    return json.dumps(data)


def test_a_plan_file_round_trips_and_bad_ones_are_one_clear_error():
    plan = stage.parse_plan(plan_text(), "p.json")
    assert plan.action is Action.SWITCH and plan.hosts["web1"].running == ""
    assert stage.parse_plan(json.dumps(plan.as_json()), "p.json") == plan
    for bad, message in ((plan_text(version=2), "not a version 1 plan"), ("[", "not a plan file"),
                         (plan_text(action="dry-build"), "not something apply does"),
                         (plan_text(hosts={"web1": {"system": "/etc/passwd", "running": "", "generation": None}}),
                          "not a store path"),
                         (plan_text(hosts={"-x": {}}), "host '-x' is not valid")):
        with pytest.raises(UsageError, match=message):
            stage.parse_plan(bad, "p.json")


def test_the_traffic_hook_quotes_what_it_fills_in():
    assert hooks.fill("lb --to {to} {hosts}", "blue", ["web1", "web 2"]) == "lb --to blue web1 'web 2'"
    assert hooks.fill("x {to}", "$(id)", []) == "x '$(id)'"


def hosts(*specs: tuple[str, bool]) -> tuple[Host, ...]:
    return tuple(Host(name, name, Target(name, "root"), canary=is_canary) for name, is_canary in specs)


def test_canaries_come_from_the_flag_or_the_inventory():
    req = engine.DeployRequest(Action.SWITCH, hosts(("web1", True), ("web2", False)), ".")
    assert canary.choose(req, ()) == ("web1",)
    assert canary.choose(req, ("web2",)) == ("web2",)
    with pytest.raises(UsageError, match="not in the selection"):
        canary.choose(req, ("db9",))
    with pytest.raises(UsageError, match="no canary host"):
        canary.choose(engine.DeployRequest(Action.SWITCH, hosts(("web2", False)), "."), ())


def test_rolling_means_one_host_at_a_time_unless_batches_are_given():
    from nixtasks.models import Policy

    assert rolling.policy(Policy()).batches == ("1",)
    assert rolling.policy(Policy(batches=("2", "50%"))).batches == ("2", "50%")
