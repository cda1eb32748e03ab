"""rolling: the engine's batches with the seed's defaults: one host at a time, health checks
after each, halt on the first failure."""

from __future__ import annotations

from dataclasses import replace

from ..fleet import engine, flow
from ..models import BatchSize, Policy, Report


def policy(base: Policy) -> Policy:
    """One host per batch unless batches were given; any failure halts."""
    return replace(base, batches=base.batches or (BatchSize(1),))


def rolling(req: engine.DeployRequest, tools: flow.Tools) -> Report:
    return engine.deploy(replace(req, policy=policy(req.policy)), tools)


def go_out(prep: engine.Prepared, tools: flow.Tools) -> Report:
    """Changes approved already (update-deploy's one question), out one host at a time."""
    results, interrupted = engine.activate(engine.with_policy(prep, policy(prep.request.policy)), prep.changes, tools)
    return flow.finish(engine.report(prep, results, interrupted), tools.echo)
