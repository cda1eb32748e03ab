"""The pure parts of the recipes: lock-file changes, plan files, the traffic hook's quoting,
the choice of canaries."""

import json
from pathlib import Path

import pytest

from nixtasks.actions import lockfile, seal
from nixtasks.errors import UsageError
from nixtasks.fleet import engine, hooks
from nixtasks.inventory import parse_sizes
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


KEY = bytes(range(32))
SYSTEM = "/nix/store/" + "a" * 32 + "-nixos-system-web1"
OLDER = "/nix/store/" + "b" * 32 + "-nixos-system-web1"


def staged(**override: object) -> dict:
    data = {"version": 2, "action": "switch", "git_revision": "c" * 40, "git_dirty": False, "created": "now",
            "hosts": {"web1": {"system": SYSTEM, "running": "", "generation": None},
                      "web2": {"system": SYSTEM.replace("web1", "web2"), "running": "", "generation": 3}}}
    data.update(override)
    return data


def sealed(data: dict, key: bytes = KEY) -> str:
    return json.dumps({**data, "seal": seal.seal(data, key)})


def test_a_sealed_plan_round_trips_and_bad_ones_are_one_clear_error():
    plan = stage.parse_plan(sealed(staged()), "p.json", KEY)
    assert plan.action is Action.SWITCH and plan.hosts["web1"].running == "" and plan.hosts["web2"].generation == 3
    for bad, message in ((json.dumps(staged(version=1)), "not a version 2 plan"), ("[", "not a plan file"),
                         (sealed(staged(action="dry-build")), "not something apply does"),
                         (sealed(staged(hosts={"web1": {"system": "/etc/passwd", "running": "", "generation": None}})),
                          "not a store path"),
                         (sealed(staged(hosts={"-x": {}})), "host '-x' is not valid")):
        with pytest.raises(UsageError, match=message):
            stage.parse_plan(bad, "p.json", KEY)


def test_an_edited_plan_names_what_changed_and_is_refused():
    """One host's system swapped for an older real one: refused, naming that host."""
    text = sealed(staged())
    edited = json.loads(text)
    edited["hosts"]["web1"]["system"] = OLDER
    with pytest.raises(UsageError, match=r"hosts\.web1 was changed after stage") as refused:
        stage.parse_plan(json.dumps(edited), "p.json", KEY)
    assert "web2" not in str(refused.value) and "Nothing was changed" in str(refused.value)
    # sealed again elsewhere, with another key: the seal names its key, not this deployer's
    resealed = sealed({k: v for k, v in edited.items() if k != "seal"}, key=bytes(32))
    with pytest.raises(UsageError, match="sealed with another key"):
        stage.parse_plan(resealed, "p.json", KEY)
    # a forged part, the key id copied: the digest does not match
    forged = json.loads(text)
    forged["git_revision"] = "d" * 40
    with pytest.raises(UsageError, match="git_revision was changed"):
        stage.parse_plan(json.dumps(forged), "p.json", KEY)
    added = json.loads(text)
    added["hosts"]["db1"] = {"system": SYSTEM, "running": "", "generation": None}
    del added["hosts"]["web2"]
    with pytest.raises(UsageError, match="hosts.db1 was added after stage; hosts.web2 was removed after stage"):
        stage.parse_plan(json.dumps(added), "p.json", KEY)
    with pytest.raises(UsageError, match="it has no seal"):
        stage.parse_plan(json.dumps(staged()), "p.json", KEY)
    odd = json.loads(text)
    odd["seal"]["parts"]["action"] = "é" * 64  # not a digest at all: refused, not a crash
    with pytest.raises(UsageError, match="action was changed"):
        stage.parse_plan(json.dumps(odd), "p.json", KEY)


def test_a_part_of_another_plan_sealed_with_the_same_key_does_not_match():
    """Splicing: web1's entry (and its digest) from an older plan, put into a newer one."""
    older = json.loads(sealed(staged(hosts={"web1": {"system": OLDER, "running": "", "generation": None}})))
    newer = json.loads(sealed(staged()))
    newer["hosts"]["web1"] = older["hosts"]["web1"]
    newer["seal"]["parts"]["hosts.web1"] = older["seal"]["parts"]["hosts.web1"]
    with pytest.raises(UsageError, match=r"hosts\.web1 was changed after stage"):
        stage.parse_plan(json.dumps(newer), "p.json", KEY)


def test_the_plan_key_is_made_private_once_and_refused_when_others_may_read_it(tmp_path):
    path = tmp_path / "state" / "plan-key"
    with pytest.raises(UsageError, match="no plan key on this deployer"):
        seal.load_key(path, make=False)
    key = seal.load_key(path, make=True)
    assert len(key) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert seal.load_key(path, make=True) == key == seal.load_key(path, make=False)
    path.chmod(0o644)
    with pytest.raises(UsageError, match="others may read the plan key; chmod 600"):
        seal.load_key(path, make=False)
    assert seal.key_path({"XDG_STATE_HOME": "/s"}) == Path("/s/nixtasks/plan-key")
    assert seal.key_path({"NIXTASKS_PLAN_KEY": "/k"}) == Path("/k")


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

    assert rolling.policy(Policy()).batches == parse_sizes("1")
    assert rolling.policy(Policy(batches=parse_sizes("2,50%"))).batches == parse_sizes("2,50%")
