"""update-deploy as docs/recipes.md says, end to end: bare at a terminal (the plan with the new
systems on the screen before the one question, which names the changed hosts), refused in one
line without a terminal, and with --yes the inventory's default selection only."""

from __future__ import annotations

import json
import re
import sys

from tests.screen import DOWN, ENTER, SPACE, Terminal

from .test_recipes import RELEASES, assert_status_matches_head, first_deploy, records, release, set_motd

QUESTION = "Commit flake.lock (1 input(s) updated) and deploy it to web1, web2, db1, as a canary (web1 first)?"


def invoke_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "invoke", *args]


def test_bare_update_deploy_at_a_terminal_shows_the_plan_then_asks_once(fleet):
    first_deploy(fleet)
    old = {h: fleet.lab.current_system(h) for h in RELEASES}
    set_motd(fleet, '"Welcome to release two."')
    with Terminal(invoke_argv("update-deploy"), cwd=fleet.path, env=fleet.lab.env) as term:
        term.wait_for(QUESTION, timeout=240)  # needs the live view paused while it asks (the screen helper's fix)
        seen = term.scrollback()
        plan = seen.index("Plan: switch on 3 host(s)")
        assert seen.index("  site: ") < plan  # the lock's diff, then the build and the plan
        for host in RELEASES:
            assert plan < seen.index(f"    now:     {old[host]}") < seen.index(QUESTION)
        assert seen.count("    new:     /nix/store/") == 3 and seen.index("    new:     ") < seen.index(QUESTION)
        term.send(DOWN + ENTER)  # No / Yes, all 3 hosts / Choose hosts...
        assert term.wait_exit() == 0, term.scrollback()
        assert "approved with the update" in term.scrollback()  # the canary gates did not ask again
    assert fleet.git("log", "-1", "--format=%s").strip() == "chore: update flake inputs"
    assert fleet.git("show", "--name-only", "--format=", "HEAD").split() == ["flake.lock"]
    assert fleet.git("status", "--porcelain") == ""
    head = fleet.git("rev-parse", "HEAD").strip()
    assert f"git:      {head[:12]}" in seen[plan:seen.index(QUESTION)]  # the plan names the commit to come
    for host in RELEASES:  # the plan showed, and the hosts run, exactly what the new HEAD builds
        now = fleet.lab.current_system(host)
        assert now != old[host] and now == fleet.lab.profile(host) == fleet.build(host)
        assert f"    new:     {now}" in seen[plan:seen.index(QUESTION)]
    assert_status_matches_head(fleet, RELEASES)
    assert {r["host"] for r in records(fleet) if r["reason"].startswith("update-deploy ")} == set(RELEASES)
    assert {r["git_revision"] for r in records(fleet) if r["reason"].startswith("update-deploy ")} == {head}


def test_a_declined_update_deploy_leaves_head_and_the_lock_as_they_were(fleet):
    first_deploy(fleet)
    old = {h: fleet.lab.current_system(h) for h in RELEASES}
    set_motd(fleet, '"Welcome to release two."')
    lock, head = (fleet.path / "flake.lock").read_text(), fleet.git("rev-parse", "HEAD")
    with Terminal(invoke_argv("update-deploy"), cwd=fleet.path, env=fleet.lab.env) as term:
        term.wait_for(QUESTION, timeout=240)
        term.send(ENTER)  # No
        assert term.wait_exit() == 3, term.scrollback()
        assert "flake.lock restored; nothing was committed or deployed" in term.scrollback()
    assert fleet.git("rev-parse", "HEAD") == head and (fleet.path / "flake.lock").read_text() == lock
    assert fleet.git("status", "--porcelain") == ""
    assert {h: fleet.lab.current_system(h) for h in RELEASES} == old


def test_uncommitted_changes_stay_out_of_what_update_deploy_builds(fleet):
    first_deploy(fleet)
    set_motd(fleet, '"Welcome to release two."')
    hosts_json = fleet.path / "hosts.json"
    data = json.loads(hosts_json.read_text())
    data["defaults"]["release"] = "9.9"  # not committed: not part of the commit, so not deployed
    hosts_json.write_text(json.dumps(data, indent=2) + "\n")
    proc = fleet.invoke("update-deploy", "--all", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "uncommitted change(s) stay out of the commit and of what is deployed" in proc.stderr
    assert fleet.git("status", "--porcelain").split() == ["M", "hosts.json"]  # still there, still uncommitted
    assert [release(fleet, h) for h in RELEASES] == ["1.0"] * 3
    assert_status_matches_head(fleet, RELEASES)  # status evaluates the flake at HEAD when the tree is dirty


def test_update_deploy_of_the_hosts_left_checked(fleet):
    first_deploy(fleet)
    old = {h: fleet.lab.current_system(h) for h in RELEASES}
    set_motd(fleet, '"Welcome to release two."')
    with Terminal(invoke_argv("update-deploy"), cwd=fleet.path, env=fleet.lab.env) as term:
        term.wait_for(QUESTION, timeout=240)
        term.send(DOWN + DOWN + ENTER)  # Choose hosts...: every changed host starts checked
        term.wait_for("Which hosts?")
        term.send(DOWN + DOWN + SPACE + ENTER)  # uncheck db1
        assert term.wait_exit() == 0, term.scrollback()
        seen = term.scrollback()
    assert re.search(r"^db1\s+not selected\s", seen, re.MULTILINE), seen
    assert fleet.lab.current_system("db1") == old["db1"]
    for host in ("web1", "web2"):
        assert fleet.lab.current_system(host) != old[host]
    assert fleet.git("log", "-1", "--format=%s").strip() == "chore: update flake inputs"


def test_update_deploy_without_a_terminal_or_yes_is_refused_in_one_line(fleet):
    first_deploy(fleet)
    old = {h: fleet.lab.current_system(h) for h in RELEASES}
    set_motd(fleet, '"Welcome to release two."')
    lock, head = (fleet.path / "flake.lock").read_text(), fleet.git("rev-parse", "HEAD")
    proc = fleet.invoke("update-deploy")
    assert proc.returncode == 3, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no terminal" in errors[0] and "--yes" in errors[0], proc.stderr
    assert (fleet.path / "flake.lock").read_text() == lock and fleet.git("rev-parse", "HEAD") == head
    assert fleet.git("status", "--porcelain") == ""
    assert {h: fleet.lab.current_system(h) for h in RELEASES} == old
    proc = fleet.invoke("update-deploy", "--yes")  # --yes alone: it does not pick the hosts itself
    assert proc.returncode == 2 and "[recipes.update-deploy] tags" in proc.stderr, proc.stderr
    assert (fleet.path / "flake.lock").read_text() == lock and {h: fleet.lab.current_system(h) for h in RELEASES} == old


def test_update_deploy_yes_deploys_the_inventorys_default_selection_only(fleet):
    first_deploy(fleet)
    old = {h: fleet.lab.current_system(h) for h in RELEASES}
    with (fleet.path / "nixtasks.toml").open("a") as inventory:
        inventory.write('\n[recipes.update-deploy]\ntags = ["web"]\n')
    fleet.git("commit", "-qam", "update-deploy: the web hosts by default")
    set_motd(fleet, '"Welcome to release two."')
    proc = fleet.invoke("update-deploy", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    deployed = {h["host"]: h["system_after"] for h in json.loads(proc.stdout)["hosts"]}
    assert set(deployed) == {"web1", "web2"}
    for host in ("web1", "web2"):
        assert fleet.lab.current_system(host) == deployed[host] == fleet.build(host) != old[host]
    assert fleet.lab.current_system("db1") == old["db1"]
    assert fleet.git("log", "-1", "--format=%s").strip() == "chore: update flake inputs"
    assert_status_matches_head(fleet, ("web1", "web2"))
