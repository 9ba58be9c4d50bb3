"""Interval arithmetic shared by the planner and the report (pure)."""

from __future__ import annotations

from collections.abc import Iterable


def union_length(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length covered by the union of ``[a, b)`` intervals."""
    it = iter(sorted(intervals))
    first = next(it, None)
    if first is None:
        return 0.0
    total = 0.0
    cur_a, cur_b = first
    for a, b in it:
        if a > cur_b:  # a gap: the current run ends
            total += cur_b - cur_a
            cur_a, cur_b = a, b
        elif b > cur_b:
            cur_b = b
    return total + (cur_b - cur_a)
