"""The scheduling policy: a pure function, the same one for ``run`` and ``plan``.

``schedule(ready, machine, running) -> placements``: no I/O, no clock. The
engine calls it whenever something changes; the planner calls it on a virtual
clock; the property tests call it directly.

Order among ready tasks: priority (high first), then the longest remaining
critical path (by estimates), then file order. Placement is best fit on GPUs
(see :meth:`Ledger.fit`). Starvation of large tasks is prevented with EASY
backfilling: the first task in order that does not fit gets a reservation at
the *shadow time*, the earliest moment enough running tasks will have ended
(by their remaining estimates). Later tasks may start now only if they end
before the shadow time, or if they fit beside the reservation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rota.core.resources import Ledger, Machine, Placement, Request


@dataclass(frozen=True)
class Candidate:
    """A ready task as the policy sees it."""

    name: str
    request: Request
    priority: int = 0
    rank_s: float = 0.0  # longest remaining critical path, seconds
    estimate_s: float | None = None
    order: int = 0  # file order, the last tie-breaker


@dataclass(frozen=True)
class Running:
    """A task holding resources, with its expected remaining time (None: unknown)."""

    placement: Placement
    remaining_s: float | None = None


def sort_key(c: Candidate) -> tuple[int, float, int]:
    return (-c.priority, -c.rank_s, c.order)


def schedule(
    ready: Sequence[Candidate],
    machine: Machine,
    running: Sequence[Running] = (),
    *,
    presorted: bool = False,
) -> list[Placement]:
    """Decide which ready tasks start now and where. Never oversubscribes."""
    if not ready:
        return []
    ledger = Ledger.for_machine(machine, (r.placement for r in running))
    ordered = ready if presorted else sorted(ready, key=sort_key)
    min_cpus = min(c.request.cpus for c in ordered)
    any_cpu_only = any(c.request.gpus == 0 for c in ordered)
    min_gpu_bytes = min(
        (c.request.gpu_memory_bytes or 0 for c in ordered if c.request.gpus), default=0
    )
    placed: list[Placement] = []
    placed_est: list[tuple[float | None, Placement]] = []
    shadow_s = math.inf
    shadow: Ledger | None = None
    for c in ordered:
        if ledger.cpus < min_cpus:
            break
        if c.request.gpus and not _gpu_room(ledger, c.request):
            # Cheap reject: no GPU has room; when only GPU tasks remain and no GPU can
            # take even the smallest of them, nothing further can be placed.
            if not any_cpu_only and not _gpu_room(ledger, Request(gpus=1, gpu_memory_bytes=min_gpu_bytes)):
                if shadow is not None or any(placed):
                    break
            if shadow is not None:
                continue
        if shadow is None:
            p = ledger.fit(c.name, c.request)
            if p is not None:
                ledger.book(p)
                placed.append(p)
                placed_est.append((c.estimate_s, p))
                continue
            shadow_s, shadow = _reserve(c, ledger, running, placed_est)
            continue
        p = ledger.fit(c.name, c.request)
        if p is None:
            continue
        ends_before = c.estimate_s is not None and math.isfinite(shadow_s) and c.estimate_s <= shadow_s
        if not ends_before:
            p = ledger.fit(c.name, c.request, also=shadow)
            if p is None:
                continue
            shadow.book(p)
        ledger.book(p)
        placed.append(p)
    return placed


def _gpu_room(ledger: Ledger, req: Request) -> bool:
    """Whether at least one GPU could take one share of ``req`` (a necessary condition)."""
    need = req.gpu_memory_bytes
    for idx, free in ledger.gpu_free.items():
        if free >= (ledger.gpu_total[idx] if need is None else need):
            return True
    return False


def _reserve(
    c: Candidate,
    ledger: Ledger,
    running: Sequence[Running],
    placed_est: Sequence[tuple[float | None, Placement]],
) -> tuple[float, Ledger]:
    """Shadow time for ``c`` and the ledger left at that time once ``c`` is booked."""
    future = ledger.copy()
    events = [(r.remaining_s, r.placement) for r in running] + list(placed_est)
    events.sort(key=lambda e: math.inf if e[0] is None else e[0])
    t = 0.0
    for remaining, p in events:
        future.release(p)
        t = math.inf if remaining is None else max(t, remaining)
        fit = future.fit(c.name, c.request)
        if fit is not None:
            future.book(fit)
            return t, future
    # Cannot fit even on the emptied machine (load-time validation should prevent this):
    # reserve nothing so the rest of the queue is not blocked by an impossible task.
    return math.inf, ledger.copy()
