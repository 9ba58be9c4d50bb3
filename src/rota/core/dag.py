"""A DAG's bookkeeping, shared by ``rota run`` and ``rota plan``: pure, no I/O.

The run (:mod:`rota.engine.runstate`) keys tasks by name; the simulator
(:mod:`rota.plan.simulate`) by index. Both count a task's *waiting needs* and,
when a task is done, release its dependents with :func:`needs_met`; when one can
never succeed (failed in a run, unschedulable in a plan), :func:`blocked` finds
every task that transitively needs it. One implementation, so plan and run
cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

K = TypeVar("K")
K_in = TypeVar("K_in", contravariant=True)


class Counts(Protocol[K_in]):
    """Waiting needs by task: a list by index (the simulator), a view of the run's tasks (the engine)."""

    def __getitem__(self, key: K_in, /) -> int: ...

    def __setitem__(self, key: K_in, value: int, /) -> None: ...


def needs_met(dependents: Iterable[K], unmet: Counts[K]) -> list[K]:
    """Count one more done need for each of ``dependents`` (a done task's); return those left with none.

    ``dependents`` has one entry per ``needs`` entry, as ``unmet`` counts them.
    """
    out = []
    for u in dependents:
        left = unmet[u] - 1
        unmet[u] = left
        if left == 0:
            out.append(u)
    return out


def blocked(dependents: Callable[[K], Iterable[K]], roots: Iterable[K], alive: Callable[[K], bool]) -> list[tuple[K, K]]:
    """Every task that transitively needs one of ``roots`` and is still ``alive`` (may yet run),
    as ``(task, the need it was reached through)`` pairs, each task once, depth first (the last
    root first). Pure: the caller marks them (skipped in a run, blocked in a plan)."""
    out: list[tuple[K, K]] = []
    seen: set[K] = set()
    stack = list(roots)
    while stack:
        i = stack.pop()
        for u in dependents(i):
            if u not in seen and alive(u):
                seen.add(u)
                out.append((u, i))
                stack.append(u)
    return out
