"""rolling: the engine's batches with the seed's defaults: one host at a time, health checks
after each, halt on the first failure."""

from __future__ import annotations

from dataclasses import replace

from ..fleet import engine
from ..models import BatchSize, Policy, Report


def policy(base: Policy) -> Policy:
    """One host per batch unless batches were given; any failure halts."""
    return replace(base, batches=base.batches or (BatchSize(1),))


def rolling(req: engine.DeployRequest, tools: engine.Tools) -> Report:
    return engine.deploy(replace(req, policy=policy(req.policy)), tools)


def go_out(prep: engine.Prepared, tools: engine.Tools) -> Report:
    """Changes approved already (update-deploy's one question), out one host at a time."""
    results, interrupted = engine.activate(engine.with_policy(prep, policy(prep.request.policy)), prep.changes, tools)
    return engine.finish(engine.report(prep, results, interrupted), tools.echo)
