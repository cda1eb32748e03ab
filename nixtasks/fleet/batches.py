"""Batches as Ansible's `serial` makes them, and its failure threshold. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from ..models import BatchSize

T = TypeVar("T")


def split(items: Sequence[T], sizes: Sequence[BatchSize]) -> list[list[T]]:
    """Consecutive batches; the last size repeats until every item has a batch."""
    if not sizes:
        return [list(items)] if items else []
    batches: list[list[T]] = []
    start = 0
    while start < len(items):
        length = sizes[min(len(batches), len(sizes) - 1)].of(len(items))
        batches.append(list(items[start:start + length]))
        start += length
    return batches


def halts(failed: int, batch: int, max_fail_percentage: float) -> bool:
    """More than `max_fail_percentage` of the batch failed (equalling it does not halt)."""
    return batch > 0 and failed * 100 > max_fail_percentage * batch


def halting_count(batch: int, max_fail_percentage: float) -> int:
    """The fewest failed hosts that halt a batch of `batch` hosts (more than `batch`: it never halts)."""
    return next((failed for failed in range(batch + 1) if halts(failed, batch, max_fail_percentage)), batch + 1)
