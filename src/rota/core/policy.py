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

Bookings for what rota did not start (``Running.outside``: GPU memory of a
colleague's process, an unhealthy GPU) have no end the policy could wait for.
A task that cannot fit until they go away gets no reservation (as a task that
can never fit): a reservation with no end would keep tasks that fit now from
starting for as long as the colleague's process stays. It is placed, as any
task, once the memory is freed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rota.core.resources import Ledger, Machine, Placement, Request


@dataclass(frozen=True, init=False)
class Candidate:
    """A ready task as the policy sees it."""

    name: str
    request: Request
    priority: int = 0
    rank_s: float = 0.0  # longest remaining critical path, seconds
    estimate_s: float | None = None
    order: int = 0  # file order, the last tie-breaker

    def __init__(
        self, name: str, request: Request, priority: int = 0, rank_s: float = 0.0,
        estimate_s: float | None = None, order: int = 0,
    ) -> None:
        # Hand-written for speed, as Placement's (see there).
        d = self.__dict__
        d["name"], d["request"], d["priority"], d["rank_s"], d["estimate_s"], d["order"] = (
            name, request, priority, rank_s, estimate_s, order)


@dataclass(frozen=True)
class Running:
    """A task holding resources, with its expected remaining time (None: unknown).

    ``outside``: a booking for what rota did not start (a foreign process's GPU
    memory, an unhealthy GPU): no end is known, and no reservation waits for it.
    """

    placement: Placement
    remaining_s: float | None = None
    outside: bool = False


def sort_key(c: Candidate) -> tuple[int, float, int]:
    return (-c.priority, -c.rank_s, c.order)


def schedule(
    ready: Sequence[Candidate],
    machine: Machine,
    running: Sequence[Running] = (),
    *,
    presorted: bool = False,
    free: Ledger | None = None,
    requests: Iterable[Request] | None = None,
) -> list[Placement]:
    """Decide which ready tasks start now and where. Never oversubscribes.

    ``presorted``: ``ready`` is already in :func:`sort_key` order. ``free``: the
    caller's ledger of ``machine`` minus every running placement, if it keeps
    one (the planner does); it is copied, never changed, and saves booking
    ``running`` again. Then ``running`` is read only for the reservation.
    ``requests``: the distinct requests of ``ready`` (a superset will do), if
    the caller keeps them (the engine does): once the machine is full a call
    then costs O(placed + distinct requests), not a scan of every ready task.
    """
    if not ready:
        return []
    if free is None:
        ledger = Ledger.for_machine(machine, (r.placement for r in running))
    else:
        ledger = free.copy()
    ordered = ready if presorted else sorted(ready, key=sort_key)
    placed: list[Placement] = []
    placed_est: list[tuple[float | None, Placement]] = []
    shadow_s = math.inf
    shadow: Ledger | None = None
    # Within one call the ledger (and the shadow ledger) only shrink, so a request
    # that did not fit once cannot fit later in the call: remember it, skip the fit.
    no_fit: set[Request] = set()
    no_fit_shadow: set[Request] = set()
    floor: _Floor | None = None
    for c in ordered:
        req = c.request
        if shadow is None:
            p = None if no_fit and req in no_fit else ledger.fit(c.name, req)
            if p is not None:
                ledger.book(p)
                placed.append(p)
                placed_est.append((c.estimate_s, p))
                continue
            no_fit.add(req)
            floor = floor or _Floor(ordered, requests)
            if floor.nothing_fits(ledger):
                break
            shadow_s, shadow = _reserve(c, ledger, running, placed_est)
            continue
        if req in no_fit:
            continue
        p = ledger.fit(c.name, req)
        if p is None:
            no_fit.add(req)
            floor = floor or _Floor(ordered, requests)
            if floor.nothing_fits(ledger):
                break
            continue
        ends_before = c.estimate_s is not None and math.isfinite(shadow_s) and c.estimate_s <= shadow_s
        if not ends_before:
            if req in no_fit_shadow:
                continue
            p = ledger.fit(c.name, req, also=shadow)
            if p is None:
                no_fit_shadow.add(req)
                continue
            shadow.book(p)
        ledger.book(p)
        placed.append(p)
    return placed


class _Floor:
    """The least any of ``ordered`` asks for, to stop early once nothing more can fit.

    Read from ``requests`` (the distinct requests of ``ordered``, or more) when given.
    """

    def __init__(self, ordered: Sequence[Candidate], requests: Iterable[Request] | None = None) -> None:
        self.cpus: float = math.inf
        self.memory: float = math.inf
        self.gpu_bytes: float = math.inf  # least per-GPU booking of a GPU request with gpu_memory
        self.any_cpu_only = self.any_whole = False
        if requests is None:
            # Tasks expanded from one template share one Request object: look at each once.
            requests = {id(c.request): c.request for c in ordered}.values()
        for r in requests:
            self.cpus = min(self.cpus, r.cpus)
            self.memory = min(self.memory, r.memory_bytes)
            if not r.gpus:
                self.any_cpu_only = True
            elif r.gpu_memory_bytes is None:
                self.any_whole = True
            else:
                self.gpu_bytes = min(self.gpu_bytes, r.gpu_memory_bytes)

    def nothing_fits(self, ledger: Ledger) -> bool:
        """True only if no request of ``ordered`` fits ``ledger`` (a sufficient test, not exact)."""
        if ledger.cpus < self.cpus or ledger.memory_bytes < self.memory:
            return True
        if self.any_cpu_only:
            return False
        for idx, free in ledger.gpu_free.items():
            if self.any_whole and free == ledger.gpu_total[idx]:
                return False
            if free >= self.gpu_bytes:
                return False
        return True


def _reserve(
    c: Candidate,
    ledger: Ledger,
    running: Sequence[Running],
    placed_est: Sequence[tuple[float | None, Placement]],
) -> tuple[float, Ledger]:
    """Shadow time for ``c`` and the ledger left at that time once ``c`` is booked.

    Bookings outside rota are never released here: a task that fits only once they
    are gone gets the no-reservation answer, as an impossible task does.
    """
    future = ledger.copy()
    events = [(r.remaining_s, r.placement) for r in running if not r.outside] + list(placed_est)
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
