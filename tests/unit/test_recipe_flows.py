"""What every recipe shares: a failure before the plan (the build, a copy, an unreachable host,
Ctrl-C while building) stops it before any question, lock or activation, with the same error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from nixtasks.errors import CommandFailed, HostUnreachable, Interrupted, Refused
from nixtasks.fleet import engine, flow, reboot
from nixtasks.host.prompts import NoTerminal
from nixtasks.models import Action
from nixtasks.recipes import blue_green, canary, emergency, rolling, stage

from .flows import NEW, OLD, DownHost, Fleet, fleet_of, host, request

NAMES = ("web1", "web2")
HOSTS = tuple(host(n, canary=n == "web1", tags=("blue",)) for n in NAMES)
Recipe = Callable[[engine.DeployRequest, flow.Tools], object]

RECIPES: dict[str, Recipe] = {
    "rolling": rolling.rolling,
    "canary": lambda req, tools: canary.canary(req, tools),
    "blue-green": lambda req, tools: blue_green.blue_green(req, tools, "blue", "lb {to}", 5),
    "emergency": lambda req, tools: emergency.emergency(req, tools, 0),
    "stage": lambda req, tools: stage.stage(req, tools, tools.journal_path.parent / "plan.json"),  # type: ignore
}


def break_build(fleet: Fleet) -> None:
    fleet.build_fails = True


def break_copy(fleet: Fleet) -> None:
    fleet.uncopyable = {"web2"}


def cut_off(fleet: Fleet) -> None:
    fleet.fakes["web2"] = DownHost()


def interrupt_build(fleet: Fleet) -> None:
    fleet.interrupt_build = True


@pytest.fixture(autouse=True)
def plan_key(tmp_path, monkeypatch):
    monkeypatch.setenv("NIXTASKS_PLAN_KEY", str(tmp_path / "plan-key"))
    monkeypatch.setattr(reboot, "POLL", 0)


@pytest.mark.parametrize("name", RECIPES)
@pytest.mark.parametrize("breaks, error, message", [
    (break_build, CommandFailed, "^build: `nix-store` failed with exit code 1: builder for"),
    (break_copy, CommandFailed, "^web2: `nix copy` failed with exit code 1: cannot add path to the store"),
    (cut_off, HostUnreachable, "^web2: cannot reach the host over ssh .*; nothing was changed on any host"),
    (interrupt_build, Interrupted, "^interrupted during the build; nothing was changed on any host$"),
])
def test_a_failure_before_the_plan_stops_every_recipe_before_any_question_or_lock(tmp_path, name, breaks, error,
                                                                                   message):
    fleet = fleet_of(tmp_path, *NAMES)
    breaks(fleet)
    with pytest.raises(error, match=message):
        RECIPES[name](request(HOSTS, reason="fix"), fleet.tools(True, True))
    assert fleet.prompter.asked == [] and fleet.locked() == []
    assert not any(s.startswith("activate") for n in NAMES for s in fleet.steps(n))
    assert not (tmp_path / "plan.json").exists()


def test_the_recipes_here_are_every_one_that_builds():
    """A recipe added to nixtasks/recipes/ is added here too (update-deploy and apply have their own)."""
    from pathlib import Path

    import nixtasks.recipes

    modules = {p.stem.replace("_", "-") for p in Path(nixtasks.recipes.__file__).parent.glob("*.py")}
    assert modules - {"--init--", "update-deploy"} == set(RECIPES)


ASKING: dict[str, Recipe] = {
    **{name: RECIPES[name] for name in ("rolling", "canary", "blue-green", "emergency")},
    "apply": lambda req, tools: stage.apply(req, tools, stage.StagedPlan(
        Action.SWITCH, None, False, "now", {n: stage.StagedHost(NEW, OLD, 1) for n in NAMES})),
}


VERBS = {"rolling": "switch", "canary": "switch", "blue-green": "boot", "emergency": "test", "apply": "switch"}


@pytest.mark.parametrize("name", ASKING)
def test_without_a_terminal_every_recipe_that_asks_refuses_before_it_probes_or_builds(tmp_path, name):
    fleet = fleet_of(tmp_path, *NAMES)
    tools = replace(fleet.tools(), prompter=NoTerminal())
    with pytest.raises(Refused, match=f"^{VERBS[name]} on web1, web2 needs an approval and there is no terminal to "
                                      "ask on; pass --yes") as refused:
        ASKING[name](request(HOSTS, reason="fix"), tools)
    assert refused.value.exit_code == 3 and fleet.runner.calls == []
    assert {(host, outcome) for host, _action, outcome in fleet.journal()} == {(n, "refused") for n in NAMES}
