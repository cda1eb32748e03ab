"""lab/soak's invariants, on made-up reports and host states: each one catches what it is for."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SOAK = Path(__file__).resolve().parents[2] / "lab" / "soak"


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("lab_soak", str(SOAK))
    spec = importlib.util.spec_from_loader("lab_soak", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["lab_soak"] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


OLD, NEW, OTHER = (f"/nix/store/{c * 32}-nixos-system-web1-soak-{n}" for c, n in (("a", 0), ("b", 1), ("c", 9)))


def entry(outcome: str, before: str = OLD, after: str = NEW, gen_before: int = 1, gen_after: int = 2) -> dict:
    return {"host": "web1", "outcome": outcome, "message": "", "system_before": before, "system_after": after,
            "generation_before": gen_before, "generation_after": gen_after}


def deploy(soak: ModuleType, kind: str, *entries: dict, code: int = 0, interrupted: bool = False,
           name: str = "soak-r1-d1", hosts: tuple[str, ...] = ("web1",)):
    d = soak.Deploy(name, kind, list(hosts), [])
    d.code = code
    ok = all(e["outcome"] == "ok" for e in entries) and not interrupted
    d.report = {"action": d.action, "ok": ok, "interrupted": interrupted, "hosts": list(entries)}
    return d


def state(soak: ModuleType, running: str, boot: str, generation: int) -> object:
    return soak.HostState(running=running, boot=boot, generation=generation)


def test_an_ok_switch_must_run_and_boot_the_new_system(soak):
    d = deploy(soak, "switch", entry("ok"))
    before = state(soak, OLD, OLD, 1)
    assert soak.check_state("web1", [(d, entry("ok"))], before, state(soak, NEW, NEW, 2), NEW, False) == []
    problems = soak.check_state("web1", [(d, entry("ok"))], before, state(soak, OLD, NEW, 2), NEW, False)
    assert problems and problems[0].startswith("running is nixos-system-web1-soak-0, but soak-r1-d1 (switch), ok,")


def test_a_rollback_must_leave_what_ran_before_and_its_generation(soak):
    rolled = entry("rolled back", after=OLD, gen_after=1)
    d = deploy(soak, "switch", rolled, code=1)
    before = state(soak, OLD, OLD, 1)
    assert soak.check_state("web1", [(d, rolled)], before, state(soak, OLD, OLD, 1), NEW, False) == []
    problems = soak.check_state("web1", [(d, rolled)], before, state(soak, OLD, OLD, 2), NEW, False)
    assert problems == ["boot generation is 2, but generation_before: soak-r1-d1 (switch), rolled back, says 1"]


def test_a_boot_leaves_the_running_system_and_a_test_the_boot_entry(soak):
    before = state(soak, OLD, OLD, 1)
    boot = deploy(soak, "boot", entry("ok"))
    assert soak.check_state("web1", [(boot, entry("ok"))], before, state(soak, OLD, NEW, 2), NEW, False) == []
    assert soak.check_state("web1", [(boot, entry("ok"))], before, state(soak, NEW, NEW, 2), NEW, False)
    test = deploy(soak, "test", entry("ok", gen_after=1))
    assert soak.check_state("web1", [(test, entry("ok", gen_after=1))], before, state(soak, NEW, OLD, 1), NEW,
                            False) == []
    assert soak.check_state("web1", [(test, entry("ok", gen_after=1))], before, state(soak, NEW, NEW, 2), NEW, False)


def test_locked_needs_another_deploy_and_changes_nothing(soak):
    locked = entry("locked", after=OLD)
    d = deploy(soak, "switch", locked, code=1)
    before = state(soak, OLD, OLD, 1)
    problems = soak.check_state("web1", [(d, locked)], before, state(soak, OLD, OLD, 1), NEW, False)
    assert problems == ["soak-r1-d1 reports it locked, but no other deploy of the round had it"]
    other = deploy(soak, "switch", entry("ok"), name="soak-r1-d2")
    assert soak.check_state("web1", [(d, locked), (other, entry("ok"))], before, state(soak, NEW, NEW, 2), NEW,
                            False) == []


def test_a_failed_host_runs_what_the_report_says(soak):
    failed = entry("failed", after=OTHER)
    d = deploy(soak, "switch", failed, code=1)
    problems = soak.check_state("web1", [(d, failed)], state(soak, OLD, OLD, 1), state(soak, OLD, OLD, 1), NEW, False)
    assert problems == ["running is nixos-system-web1-soak-0, but system_after: soak-r1-d1 (switch), failed, says "
                        "nixos-system-web1-soak-9"]


def test_a_host_powered_off_runs_its_boot_profile(soak):
    failed = entry("failed", after=None)
    d = deploy(soak, "switch", failed, code=1)
    before = state(soak, OLD, OLD, 1)
    assert soak.check_state("web1", [(d, failed)], before, state(soak, NEW, NEW, 2), NEW, True, True) == []
    assert soak.check_state("web1", [(d, failed)], before, state(soak, OLD, OLD, 1), NEW, True, True) == []
    assert soak.check_state("web1", [(d, failed)], before, state(soak, OLD, NEW, 2), NEW, True, True)
    assert soak.check_state("web1", [(d, failed)], before, state(soak, OTHER, OTHER, 2), NEW, True, True)
    # off before the deploy: it could change nothing
    assert soak.check_state("web1", [(d, failed)], before, state(soak, NEW, NEW, 2), NEW, True, False)


def test_the_exit_code_says_whether_every_host_is_ok(soak):
    assert soak.check_exit(deploy(soak, "switch", entry("ok"))) == []
    assert soak.check_exit(deploy(soak, "switch", entry("rolled back"), code=0))[0].startswith("exit 0, but")
    assert soak.check_exit(deploy(soak, "switch", entry("ok"), code=1))[0].startswith("exit 1, but")
    assert soak.check_exit(deploy(soak, "switch", entry("ok"), code=130, interrupted=True)) == []
    bare = soak.Deploy("soak-r1-d1", "switch", ["web1"], [])
    bare.code = 0
    assert soak.check_exit(bare) == ["exited 0 without a report"]
    bare.code, bare.interrupted_running = 1, True
    assert soak.check_exit(bare)[0].startswith("SIGINT reached it while it ran, but it exited 1")


def test_one_record_per_host_per_deploy_in_each_place(soak):
    d = deploy(soak, "switch", entry("ok"))
    record = {"reason": "soak-r1-d1", "host": "web1", "outcome": "ok"}
    started = {**record, "outcome": "started"}
    assert soak.check_records(d, entry("ok"), "web1", [record], [started, record], [started, record], off=False) == []
    problems = soak.check_records(d, entry("ok"), "web1", [record, record], [record], [], off=False)
    assert problems == ["2 records in history (ok, ok), not 1 (ok)",
                        "0 records in the host's journal (none), not 1 (ok)"]
    problems = soak.check_records(d, entry("ok"), "web1", [started, record], [record], [record], off=False)
    assert problems == ["history keeps the activation's 'started' record beside 'ok'"]
    skipped = entry("skipped")
    assert soak.check_records(d, skipped, "web1", [], [], [], off=False) == [
        "0 records in history (none), not 1 (skipped)", "0 records in the deployer's journal (none), not 1 (skipped)"]


def test_a_host_whose_build_failed_has_no_record_of_its_own(soak):
    d = deploy(soak, "switch", entry("failed"), code=1)
    failed = {**entry("failed", after=OLD), "message": "its build failed: builder exited 1"}
    record = {"reason": "soak-r1-d1", "host": "web1", "outcome": "failed"}
    assert soak.check_records(d, failed, "web1", [record], [record], [], off=False) == []
    assert soak.check_records(d, failed, "web1", [record], [record], [record], off=False) == [
        "1 records in the host's journal (failed), not 0 (failed)"]
    record = {**record, "outcome": "not started"}
    for before in ("during the build", "before the plan"):  # stopped before anything touched the host
        stopped = {**entry("not started", after=None), "message": f"interrupted {before}; nothing changed"}
        assert soak.check_records(d, stopped, "web1", [record], [record], [], off=False) == []


def test_a_rollback_puts_back_a_running_system_other_than_the_boot_entry(soak):
    """After a test (or a boot), R0 != B0: a failed switch's rollback restores both, still different."""
    rolled = entry("rolled back", before=OLD, after=OLD, gen_before=3, gen_after=3)
    d = deploy(soak, "switch", rolled, code=1)
    before = state(soak, OLD, OTHER, 3)
    assert soak.check_state("web1", [(d, rolled)], before, state(soak, OLD, OTHER, 3), NEW, False) == []
    assert soak.check_state("web1", [(d, rolled)], before, state(soak, OTHER, OTHER, 3), NEW, False)
