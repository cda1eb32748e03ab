"""rolling: the engine's batches with the seed's defaults: one host at a time, health checks
after each, halt on the first failure."""

from __future__ import annotations

from dataclasses import replace

from ..fleet import engine
from ..models import Policy, Report


def policy(base: Policy) -> Policy:
    """One host per batch unless batches were given; any failure halts."""
    return replace(base, batches=base.batches or ("1",))


def rolling(req: engine.DeployRequest, tools: engine.Tools) -> Report:
    return engine.deploy(replace(req, policy=policy(req.policy)), tools)
