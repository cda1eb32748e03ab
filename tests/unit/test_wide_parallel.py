"""`--parallel N` above the usual widths (models.READS_AT_ONCE, WORK_AT_ONCE) widens the probes
and the per-host work before the plan too: whoever activates 40 hosts at once does not want
them probed 32 and copied 16 at a time first (the engine at 1,000 hosts spent 2 of its 13 s
there; benchmarks/engine-scale). A barrier that opens only when all 40 hosts are in the same
step at once proves the width without timing anything."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from nixtasks.fleet import engine
from nixtasks.host.runner import Result
from nixtasks.models import READS_AT_ONCE, WORK_AT_ONCE, Command, Policy, Target
from tests.fakes import FakeHost

from .flows import Fleet, hosts, outcomes, request

HOSTS = 40  # more than either usual width


@dataclass
class MeetsTheOthers(FakeHost):
    """Answers its first probe and its first query before the copy only once every host of the
    fleet is waiting in the same step (a broken barrier fails the host's step)."""

    barriers: dict[str, threading.Barrier] = field(default_factory=dict)
    met: set[str] = field(default_factory=set)

    def __call__(self, step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if step in self.barriers and step not in self.met:
            self.met.add(step)
            try:
                self.barriers[step].wait()
            except threading.BrokenBarrierError:
                return Result(1, "", f"error: {step} never met the other hosts")
        return super().__call__(step, cmd, target, fresh)


def test_a_parallel_wider_than_the_usual_widths_probes_and_prepares_every_host_at_once(tmp_path):
    assert max(READS_AT_ONCE, WORK_AT_ONCE) < HOSTS
    # A generous timeout: it only ends a run that could never meet (a width below 40).
    barriers = {step: threading.Barrier(HOSTS, timeout=20) for step in ("facts", "xargs -r")}
    names = [f"h{i:02d}" for i in range(HOSTS)]
    fleet = Fleet(tmp_path, {n: MeetsTheOthers(barriers=barriers) for n in names})
    report = engine.deploy(request(hosts(*names), Policy(parallel=HOSTS)), fleet.tools(True))
    assert set(outcomes(report).values()) == {"ok"}
    assert all(f.met == {"facts", "xargs -r"} for f in fleet.fakes.values())


def test_the_usual_widths_stay_for_a_narrower_parallel():
    assert Policy(parallel=1).widened(READS_AT_ONCE) == READS_AT_ONCE
    assert Policy(parallel=10).widened(WORK_AT_ONCE) == WORK_AT_ONCE
    assert Policy(parallel=100).widened(WORK_AT_ONCE) == 100
