"""The scheduling policy and ledger as they were before the speed-ups (verbatim copy).

``tests/unit/test_policy.py`` checks that :func:`rota.core.policy.schedule`
returns exactly the placements of :func:`reference_schedule` on random inputs,
so optimisations of the policy cannot change a schedule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rota.core.policy import Candidate, Running, sort_key
from rota.core.resources import Machine, Placement, Request


@dataclass
class RefLedger:
    """Free resources; mutable working copy used inside one policy decision."""

    gpu_free: dict[int, int]
    gpu_total: dict[int, int]
    cpus: int
    memory_bytes: int
    _order: tuple[int, ...] = field(default=())

    @classmethod
    def for_machine(cls, machine: Machine, running: Iterable[Placement] = ()) -> RefLedger:
        led = cls(
            gpu_free={g.index: g.memory_bytes for g in machine.gpus},
            gpu_total={g.index: g.memory_bytes for g in machine.gpus},
            cpus=machine.cpus,
            memory_bytes=machine.memory_bytes,
            _order=machine.gpu_indices,
        )
        for p in running:
            led.book(p)
        return led

    def copy(self) -> RefLedger:
        return RefLedger(dict(self.gpu_free), self.gpu_total, self.cpus, self.memory_bytes, self._order)

    def book(self, p: Placement) -> None:
        for idx, b in zip(p.gpus, p.gpu_bytes, strict=True):
            self.gpu_free[idx] -= b
        self.cpus -= p.cpus
        self.memory_bytes -= p.memory_bytes

    def release(self, p: Placement) -> None:
        for idx, b in zip(p.gpus, p.gpu_bytes, strict=True):
            self.gpu_free[idx] += b
        self.cpus += p.cpus
        self.memory_bytes += p.memory_bytes

    def fit(self, task: str, req: Request, also: RefLedger | None = None) -> Placement | None:
        """Placement of ``req`` in this ledger (and in ``also`` if given), or None.

        Spread, then best fit: an idle GPU is taken before a shared one, so jobs
        do not compete for one GPU's compute while another sits idle; once every
        candidate GPU is busy, the one with the least free memory that fits is
        taken, so big holes stay open for big tasks.
        """
        if req.cpus > self.cpus or req.memory_bytes > self.memory_bytes:
            return None
        if also is not None and (req.cpus > also.cpus or req.memory_bytes > also.memory_bytes):
            return None
        if req.gpus == 0:
            return Placement(task, (), (), req.cpus, req.memory_bytes)
        allowed = self._order if req.devices is None else [i for i in self._order if i in req.devices]
        cands: list[tuple[int, int, int, int]] = []
        for idx in allowed:
            total = self.gpu_total[idx]
            need = total if req.gpu_memory_bytes is None else req.gpu_memory_bytes
            if need > total:
                continue
            free = self.gpu_free[idx]
            if free < need:
                continue
            if also is not None and also.gpu_free[idx] < need:
                continue
            cands.append((0 if free == total else 1, free, idx, need))
        if len(cands) < req.gpus:
            return None
        cands.sort()
        chosen = sorted(cands[: req.gpus], key=lambda c: c[2])
        return Placement(
            task,
            tuple(c[2] for c in chosen),
            tuple(c[3] for c in chosen),
            req.cpus,
            req.memory_bytes,
        )



def reference_schedule(
    ready: Sequence[Candidate],
    machine: Machine,
    running: Sequence[Running] = (),
    *,
    presorted: bool = False,
) -> list[Placement]:
    """Decide which ready tasks start now and where. Never oversubscribes."""
    if not ready:
        return []
    ledger = RefLedger.for_machine(machine, (r.placement for r in running))
    ordered = ready if presorted else sorted(ready, key=sort_key)
    min_cpus = min(c.request.cpus for c in ordered)
    any_cpu_only = any(c.request.gpus == 0 for c in ordered)
    min_gpu_bytes = min(
        (c.request.gpu_memory_bytes or 0 for c in ordered if c.request.gpus), default=0
    )
    placed: list[Placement] = []
    placed_est: list[tuple[float | None, Placement]] = []
    shadow_s = math.inf
    shadow: RefLedger | None = None
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


def _gpu_room(ledger: RefLedger, req: Request) -> bool:
    """Whether at least one GPU could take one share of ``req`` (a necessary condition)."""
    need = req.gpu_memory_bytes
    for idx, free in ledger.gpu_free.items():
        if free >= (ledger.gpu_total[idx] if need is None else need):
            return True
    return False


def _reserve(
    c: Candidate,
    ledger: RefLedger,
    running: Sequence[Running],
    placed_est: Sequence[tuple[float | None, Placement]],
) -> tuple[float, RefLedger]:
    """Shadow time for ``c`` and the ledger left at that time once ``c`` is booked."""
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
