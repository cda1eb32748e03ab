"""What an answer approves, through the engine with the recording runner: a subset chosen in the
checkbox goes out and exits 0, the others are "not selected" (reported and journalled); a no
is a decline (exit 3). And update-deploy's order: the lock diff, the commit made beside the
branch, the build of that commit and the plan, then the one question, then the branch moved to
the commit, then the chosen hosts, with nothing built or asked twice."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from nixtasks import inventory
from nixtasks.actions.journal import read_local
from nixtasks.cli.options import Options
from nixtasks.cli.recipe_tasks import update_deploy_selection
from nixtasks.errors import NixtasksError, Refused, UsageError
from nixtasks.fleet import engine, flow, operations
from nixtasks.fleet.progress import PlainProgress
from nixtasks.host.prompts import AlwaysYes, Approval, NoTerminal
from nixtasks.host.runner import Result
from nixtasks.models import Action, Command, Host, Policy, Target
from nixtasks.recipes import update_deploy
from tests.fakes import NEW, FakeHost
from tests.prompts import Scripted
from tests.recording import OK, RecordingRunner

HOSTS = tuple(Host(n, n, Target(n, "root"), canary=n == "web1") for n in ("web1", "web2", "db1"))
OLD_LOCK = json.dumps({"nodes": {"root": {"inputs": {"nixpkgs": "nixpkgs"}},
                                 "nixpkgs": {"locked": {"rev": "a" * 40, "lastModified": 1700000000}}},
                       "root": "root", "version": 7})
NEW_LOCK = OLD_LOCK.replace("a" * 40, "b" * 40)
PARENT = "c0ffee" + "0" * 34  # HEAD before the update
REVISION = "beef" + "1" * 36  # the commit of the new lock


class Fleet:
    """The deployer's side (git, nix) answered here, each host by its own FakeHost; what is
    said and asked is collected in one list, in order."""

    def __init__(self, flake: Path, hosts: dict[str, FakeHost]) -> None:
        self.flake, self.hosts = flake, hosts
        self.said: list[str] = []
        self.head_moved = False  # someone committed while update-deploy asked
        self.runner = RecordingRunner(self.respond)

    def respond(self, step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if target.address is not None:
            if step == "lock":
                self.said.append(f"<{target.address} locked>")
            return self.hosts[target.address](step, cmd, target, fresh)
        argv = cmd.argv
        if "--is-inside-work-tree" in argv:
            return Result(128, "", "fatal: not a git repository")
        if "--show-toplevel" in argv:
            return Result(0, f"{self.flake}\n", "")
        if "flake" in argv and "update" in argv:
            (self.flake / "flake.lock").write_text(NEW_LOCK)
            self.said.append("<flake update>")
        elif "eval" in argv:
            self.said.append(f"<eval {next(a for a in argv if a.endswith('#nixosConfigurations'))}>")
            return Result(0, json.dumps({h: {"drv": f"/nix/store/{h}.drv", "out": NEW} for h in self.hosts}), "")
        elif "--realise" in argv:
            self.said.append("<build>")
        elif "path-info" in argv:
            return Result(0, "{}", "")
        elif "write-tree" in argv:
            return Result(0, "7ree" * 10 + "\n", "")
        elif "commit-tree" in argv:
            self.said.append(f"<commit-tree {' '.join(argv[argv.index('commit-tree') + 1:])}>")
            return Result(0, REVISION + "\n", "")
        elif "update-ref" in argv:
            self.said.append(f"<update-ref {' '.join(argv[-3:])}>")
            return Result(128, "", "fatal: cannot lock ref") if self.head_moved else OK
        elif "reset" in argv:
            self.said.append(f"<reset {argv[-1]}>")
        elif "--verify" in argv:
            return Result(0, PARENT + "\n", "")
        return OK

    def tools(self, answers: list[object], tmp_path: Path) -> flow.Tools:
        prompter = Scripted(answers)  # type: ignore[arg-type]
        asked = prompter.approve

        def approve(question: str, names, *, preselect: bool = False) -> Approval:
            self.said.append(f"<asked: {question}>" + (" (preselected)" if preselect else ""))
            return asked(question, names, preselect=preselect)

        prompter.approve = approve  # type: ignore[method-assign]
        return flow.Tools(self.runner, prompter, PlainProgress(self.said.append), self.said.append,
                            tmp_path / "journal.jsonl")


def fleet_of(tmp_path: Path, **running: str) -> Fleet:
    flake = tmp_path / "flake"
    flake.mkdir()
    (flake / "flake.lock").write_text(OLD_LOCK)
    fakes = {h.name: FakeHost() for h in HOSTS}
    for name, system in running.items():
        fakes[name] = FakeHost(generations={1: system}, running=system)
    return Fleet(flake, fakes)


def request(fleet: Fleet, hosts: tuple[Host, ...] = HOSTS) -> engine.DeployRequest:
    return engine.DeployRequest(Action.SWITCH, hosts, str(fleet.flake))


def outcomes(report_or_error) -> dict[str, str]:
    report = getattr(report_or_error, "report", report_or_error)
    return {r.host: r.outcome.value for r in report.results}


# --- the subset outcome ------------------------------------------------------------------------


def test_a_chosen_subset_goes_out_and_exits_0_the_others_are_not_selected(tmp_path):
    fleet = fleet_of(tmp_path)
    report = engine.deploy(request(fleet, HOSTS[:2]), fleet.tools([["web1"]], tmp_path))
    assert outcomes(report) == {"web2": "not selected", "web1": "ok"}
    assert report.ok  # what was approved went out fine
    assert fleet.hosts["web1"].running == NEW and fleet.hosts["web2"].running != NEW
    assert not [c for c in fleet.runner.calls if c.target.address == "web2" and c.step == "lock"]
    journal = {(r.host, r.outcome) for r in read_local(tmp_path / "journal.jsonl") if r.outcome != "started"}
    assert journal == {("web2", "not selected"), ("web1", "ok")}
    assert "web2  not selected" in "\n".join(fleet.said)  # in the report table


def test_a_no_is_still_a_decline_that_exits_3_and_changes_nothing(tmp_path):
    fleet = fleet_of(tmp_path)
    with pytest.raises(Refused) as refused:
        engine.deploy(request(fleet, HOSTS[:2]), fleet.tools([False], tmp_path))
    assert refused.value.exit_code == 3 and "not approved for web1, web2" in str(refused.value)
    assert all(f.running != NEW for f in fleet.hosts.values())
    assert {r.outcome for r in read_local(tmp_path / "journal.jsonl")} == {"declined"}


def test_answers_tell_a_subset_from_a_yes_and_a_no():
    names = ["web1", "web2"]
    assert Approval.of(["web2"], names) == Approval(("web2",), subset=True)
    assert Approval.of(["web2", "web1"], names) == Approval(("web1", "web2"))  # everyone: a plain yes
    assert Approval.of([], names) == Approval()  # nobody: a plain no
    assert AlwaysYes("").approve("q?", names) == Approval(("web1", "web2"))
    with pytest.raises(Refused):
        NoTerminal().approve("q?", names)


def test_a_subset_at_gc_leaves_the_others_not_selected(tmp_path):
    fleet = fleet_of(tmp_path)
    report = operations.gc(HOSTS[:2], 3, engine.Policy(), fleet.tools([["web2"]], tmp_path))
    assert outcomes(report)["web1"] == "not selected" and report.ok


# --- update-deploy ---------------------------------------------------------------------------


def said_index(said: list[str], text: str) -> int:
    return next(i for i, line in enumerate(said) if text in line)


def test_update_deploy_shows_the_plan_then_asks_once_then_commits_and_deploys(tmp_path, capsys):
    fleet = fleet_of(tmp_path, db1=NEW)  # db1 already runs what the new lock builds
    report = update_deploy.update_deploy(request(fleet), fleet.tools([True], tmp_path))
    said = "\n".join(fleet.said).splitlines()
    asked = [line for line in said if line.startswith("<asked")]
    assert asked == ["<asked: Commit flake.lock (1 input(s) updated) and deploy it to web1, web2, as a canary "
                     "(web1 first)?> (preselected)"]  # once, naming the hosts whose system changes
    question = said_index(said, "<asked")
    made = said_index(said, f"<commit-tree {'7ree' * 10} -p {PARENT} -m chore: update flake inputs>")
    assert said_index(said, "<flake update>") < said_index(said, "nixpkgs: aaaaaaaaaaaa") < made
    # the systems are built from that commit, not from the working tree
    assert made < said_index(said, f"<eval git+file://{fleet.flake}?rev={REVISION}#nixosConfigurations>")
    assert sum(line.startswith("<eval") for line in said) == 1
    assert made < said_index(said, "<build>") < question
    assert said_index(said, "Plan: switch on 2 host(s)") < said_index(said, f"  git:      {REVISION[:12]}") < question
    assert said_index(said, f"    new:     {NEW}") < question
    assert said_index(said, "db1: up to date") < question and said.count("<build>") == 1
    locks = said_index(said, "<web1 locked>"), said_index(said, "<web2 locked>")
    moved = said_index(said, f"<update-ref HEAD {REVISION} {PARENT}>")  # only from the commit's parent
    assert question < moved < said_index(said, "<reset flake.lock>") < locks[0] < locks[1]  # the canary first
    assert (fleet.flake / "flake.lock").read_text() == NEW_LOCK
    assert "Canary: switch web1 first (1 host)? (approved with the update)" in capsys.readouterr().err
    assert outcomes(report) == {"db1": "ok", "web1": "ok", "web2": "ok"}
    assert fleet.hosts["web1"].running == fleet.hosts["web2"].running == NEW
    records = read_local(tmp_path / "journal.jsonl")
    assert {(r.host, r.reason) for r in records} == {(h, f"update-deploy {REVISION[:12]}") for h in ("web1", "web2")}
    assert {(r.git_revision, r.git_dirty) for r in records} == {(REVISION, False)}


def test_update_deploy_of_a_chosen_subset_deploys_only_those_as_a_rolling_deploy(tmp_path):
    fleet = fleet_of(tmp_path)
    report = update_deploy.update_deploy(request(fleet), fleet.tools([["web2", "db1"]], tmp_path))
    assert outcomes(report) == {"web1": "not selected", "web2": "ok", "db1": "ok"} and report.ok
    assert not any("Canary" in line for line in fleet.said)  # the canary web1 was left out
    assert fleet.hosts["web1"].running != NEW and fleet.hosts["db1"].running == NEW


def test_an_update_whose_canary_cannot_be_reached_stops_before_the_question(tmp_path):
    fleet = fleet_of(tmp_path)
    fleet.hosts["web1"].fail.add("facts")
    req = replace(request(fleet), policy=Policy(skip_unreachable=True))
    with pytest.raises(NixtasksError, match="the canary web1 cannot be reached"):
        update_deploy.update_deploy(req, fleet.tools([True], tmp_path))
    assert not any(line.startswith("<asked") for line in fleet.said)
    assert (fleet.flake / "flake.lock").read_text() == OLD_LOCK and not moved(fleet)


def test_a_declined_update_restores_the_lock_and_commits_nothing(tmp_path):
    fleet = fleet_of(tmp_path)
    with pytest.raises(Refused) as refused:
        update_deploy.update_deploy(request(fleet), fleet.tools([False], tmp_path))
    assert "nothing was committed or deployed" in str(refused.value)
    assert any(line.startswith("<commit-tree") for line in fleet.said)  # made, built, then left to git gc
    assert (fleet.flake / "flake.lock").read_text() == OLD_LOCK and not moved(fleet)
    assert all(f.running != NEW for f in fleet.hosts.values())


def test_an_update_approved_after_head_moved_commits_and_deploys_nothing(tmp_path):
    fleet = fleet_of(tmp_path)
    fleet.head_moved = True
    with pytest.raises(NixtasksError, match=f"HEAD is no longer {PARENT[:12]}.*nothing was committed or deployed"):
        update_deploy.update_deploy(request(fleet), fleet.tools([True], tmp_path))
    assert (fleet.flake / "flake.lock").read_text() == OLD_LOCK
    assert not any(line.startswith("<reset") for line in fleet.said)
    assert all(f.running != NEW for f in fleet.hosts.values())


def moved(fleet: Fleet) -> bool:
    """Whether anything tried to move the branch or the index."""
    return any(line.startswith(("<update-ref", "<reset")) for line in fleet.said)


# --- update-deploy's selection ------------------------------------------------------------------


def selection(tmp_path: Path, text: str, monkeypatch, *, terminal: bool, **opts: object) -> Options:
    (tmp_path / "nixtasks.toml").write_text('[hosts.web1]\ntags = ["web"]\n[hosts.db1]\n' + text)
    monkeypatch.setattr("nixtasks.host.prompts.has_terminal", lambda: terminal)
    monkeypatch.delenv("NIXTASKS_YES", raising=False)
    return update_deploy_selection(Options(**opts), inventory.load(env={}, cwd=tmp_path))  # type: ignore[arg-type]


def test_update_deploy_takes_its_default_selection_from_the_inventory(tmp_path, monkeypatch):
    chosen = selection(tmp_path, '[recipes.update-deploy]\ntags = ["web"]\n', monkeypatch, terminal=False, yes=True)
    assert chosen.tags == ("web",) and not chosen.all_hosts
    assert selection(tmp_path, "", monkeypatch, terminal=True).all_hosts  # asked on a terminal: every host
    assert selection(tmp_path, "", monkeypatch, terminal=True, hosts=("db1",)).hosts == ("db1",)
    with pytest.raises(UsageError, match=r"--yes deploys without asking.*\[recipes.update-deploy\] tags"):
        selection(tmp_path, "", monkeypatch, terminal=False, yes=True)
    with pytest.raises(Refused, match="no terminal to ask on; pass --yes and name the hosts"):
        selection(tmp_path, "", monkeypatch, terminal=False)


@pytest.mark.parametrize("text, message", [
    ('[recipes.update-deploy]\ntag = ["web"]\n', "recipes.update-deploy.tag: unknown key; expected one of hosts, tags"),
    ('[recipes.canary]\ntags = ["web"]\n', "recipes.canary: unknown key; expected one of update-deploy"),
    ('[recipes.update-deploy]\ntags = []\n', "recipes.update-deploy.tags: expected a non-empty list of tags"),
    ('[recipes.update-deploy]\n', "recipes.update-deploy: expected hosts = [...] or tags = [...]"),
])
def test_a_bad_recipes_table_is_one_line(tmp_path, text, message):
    (tmp_path / "nixtasks.toml").write_text(text)
    with pytest.raises(UsageError) as err:
        inventory.load(env={}, cwd=tmp_path)
    assert str(err.value).startswith(f"nixtasks.toml: {message}") and "\n" not in err.value.line
