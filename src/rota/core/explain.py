"""Why a pending task waits: a pure function over the policy's own inputs.

``explain(ready, machine, running, now=..., waiting=..., held=..., backoff=..., limits=...)
-> {task: Reason}``: no I/O, no clock (``now`` is given, only to turn the policy's relative
times into clock times). The controller calls it on its live state (:mod:`rota.engine.predict`),
``rota why`` on the stored state when no controller runs; the unit and property tests call it
directly.

Precedence, first match wins: ``held`` (``rota hold``), ``needs`` (some needs not done yet),
``backoff`` (a retry's back-off has not run out), ``limit`` (a concurrency limit of the run said
no this round: a sweep's ``parallel:``). What is left is offered to a replay of
:func:`rota.core.policy.schedule`'s loop, step by step, on the same ledger, so each task's
reason is the policy's own decision:

- ``next``: the policy would place it now (it starts at the next scheduling round);
- ``gpu`` / ``cpu`` / ``memory``: it does not fit what is free (the first such task in policy
  order holds the backfilling reservation: its text says from when the GPUs are kept for it);
- ``reserved``: it fits what is free, but starting it would delay the reservation (it would not
  end before the reservation's shadow time, and does not fit beside it).

Bookings for what rota did not start (``outside=``: a colleague's process holding GPU memory, an
unhealthy GPU) are booked like running attempts with no known end; a task that cannot fit beside
them even on an otherwise idle machine says so (it waits for memory held outside rota, with no
predicted start while it stays: :func:`rota.plan.eta.forecast` gives it none).

Every reason carries the per-GPU picture (booked bytes, by which tasks, free), so ``rota why``
can print it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from rota.core.policy import Candidate, Running, _reserve, sort_key
from rota.core.resources import Ledger, Machine, Placement, Request
from rota.units import format_duration, format_size

KINDS = ("held", "needs", "backoff", "limit", "gpu", "cpu", "memory", "reserved", "next")
"""Every :attr:`Reason.kind`, in precedence order (the resource kinds come from the policy's replay)."""

_LISTED = 5  # needs and GPU tasks named in one line before "and N more"


@dataclass(frozen=True)
class GpuLoad:
    """One GPU as the ledger sees it: its size, the bytes booked on it and by which tasks; and what
    is booked there for what rota did not start (``other_bytes``, by ``others``: processes holding
    memory, an unhealthy GPU; :mod:`rota.engine.gpu_watch`), when the caller tells them apart."""

    index: int
    total_bytes: int
    booked_bytes: int
    tasks: tuple[str, ...] = ()
    other_bytes: int = 0
    others: tuple[str, ...] = ()

    @property
    def free_bytes(self) -> int:
        return self.total_bytes - self.booked_bytes - self.other_bytes


@dataclass(frozen=True)
class Reason:
    """Why one pending task is not running.

    ``text``: one line (what ``rota status`` shows). ``needs``: ``(need, its state)`` of the needs
    not done yet (kind ``needs``). ``holder``: the task the reservation is for (kinds ``reserved``,
    and a resource kind when the task is the holder itself). ``at``: a clock time in epoch seconds:
    the back-off's end, or the reservation's shadow time (when the holder is expected to start);
    None when unknown. ``gpus``: the per-GPU picture at the time of the decision.
    """

    kind: str
    text: str
    needs: tuple[tuple[str, str], ...] = ()
    holder: str | None = None
    at: float | None = None
    gpus: tuple[GpuLoad, ...] = ()


def gpu_loads(machine: Machine, running: Iterable[Placement], outside: Iterable[Placement] = ()) -> tuple[GpuLoad, ...]:
    """The per-GPU picture of ``machine`` with ``running`` placements booked, in GPU order;
    ``outside``: bookings for what rota did not start (foreign processes, unhealthy GPUs), summed
    apart (``other_bytes``, ``others``). Bookings on GPUs the machine lacks are left out."""

    def sums(placements: Iterable[Placement]) -> tuple[dict[int, int], dict[int, list[str]]]:
        booked = {g.index: 0 for g in machine.gpus}
        by: dict[int, list[str]] = {g.index: [] for g in machine.gpus}
        for p in placements:
            for idx, b in zip(p.gpus, p.gpu_bytes, strict=False):
                if idx in booked:
                    booked[idx] += b
                    by[idx].append(p.task)
        return booked, by

    (booked, by), (other, others) = sums(running), sums(outside)
    return tuple(GpuLoad(g.index, g.memory_bytes, booked[g.index], tuple(by[g.index]), other[g.index],
                         tuple(others[g.index])) for g in machine.gpus)


def clock(epoch_s: float) -> str:
    """``HH:MM:SS`` local time of ``epoch_s`` (a value given, not read from the clock)."""
    return time.strftime("%H:%M:%S", time.localtime(epoch_s))


def explain(
    ready: Sequence[Candidate],
    machine: Machine,
    running: Sequence[Running] = (),
    *,
    now: float,
    waiting: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    held: Collection[str] = (),
    backoff: Mapping[str, float] | None = None,
    limits: Mapping[str, str] | None = None,
    outside: Sequence[Running] = (),
) -> dict[str, Reason]:
    """The reason of every pending task given (see the module docstring for the kinds).

    ``ready``: the pending tasks whose needs are all done, as the policy's candidates (held,
    backed-off and limited ones included: they are sorted out here). ``running``: the running
    attempts with their remaining seconds, as the policy sees them. ``waiting``: pending tasks
    whose needs are not all done -> ``(need, state)`` of those needs. ``held``: held task names.
    ``backoff``: task -> epoch seconds its retry back-off ends (ignored once ``<= now``).
    ``limits``: task -> what limit holds it back this round (one line). ``now``: epoch seconds
    of the decision; ``running``'s remaining seconds count from it. ``outside``: bookings for what
    rota did not start (:attr:`rota.engine.launching.Launching.outside_bookings`), booked as
    running ones and shown apart in the per-GPU picture (``other_bytes``, ``others``).

    Returns one :class:`Reason` per task of ``ready`` and ``waiting``. Pure.
    """
    waiting = waiting or {}
    backoff = backoff or {}
    limits = limits or {}
    held_set = set(held)
    loads = gpu_loads(machine, (r.placement for r in running), (r.placement for r in outside))
    out: dict[str, Reason] = {}
    for name, needs in waiting.items():
        if name in held_set:
            out[name] = _held(name, loads)
            continue
        out[name] = Reason("needs", _needs_text(needs), needs=tuple(needs), gpus=loads)
    offered: list[Candidate] = []
    for c in ready:
        if c.name in held_set:
            out[c.name] = _held(c.name, loads)
        elif backoff.get(c.name, -math.inf) > now:
            until = backoff[c.name]
            out[c.name] = Reason("backoff", f"retry back-off until {clock(until)} "
                                            f"({format_duration(until - now)} from now)", at=until, gpus=loads)
        elif c.name in limits:
            out[c.name] = Reason("limit", f"the run's limit: {limits[c.name]}", gpus=loads)
        else:
            offered.append(c)
    # Marked as the engine marks them (Running.outside): the policy never waits for their end.
    outside = [r if r.outside else replace(r, outside=True) for r in outside]
    out.update(_replay(sorted(offered, key=sort_key), machine, [*running, *outside], now, loads,
                       _Outside(machine, outside) if outside else None))
    return out


def _held(name: str, loads: tuple[GpuLoad, ...]) -> Reason:
    return Reason("held", f"held: it starts only after 'rota release {name}'", gpus=loads)


def _needs_text(needs: Sequence[tuple[str, str]]) -> str:
    shown = ", ".join(f"{n} ({s})" for n, s in needs[:_LISTED])
    more = f" and {len(needs) - _LISTED} more" if len(needs) > _LISTED else ""
    return f"waiting for {'its need' if len(needs) == 1 else f'{len(needs)} needs'}: {shown}{more}"


class _Outside:
    """The bookings outside rota alone on the machine: which requests can never fit beside them."""

    def __init__(self, machine: Machine, outside: Sequence[Running]) -> None:
        self.ledger = Ledger.for_machine(machine, (r.placement for r in outside))
        who = list(dict.fromkeys(r.placement.task for r in outside))
        more = f" and {len(who) - _LISTED} more" if len(who) > _LISTED else ""
        self.who = ", ".join(who[:_LISTED]) + more
        self._never: dict[Request, bool] = {}

    def blocks(self, req: Request) -> bool:
        """True when ``req`` does not fit even with every rota task gone."""
        never = self._never.get(req)
        if never is None:
            never = self._never[req] = self.ledger.fit("?", req) is None
        return never

    def text(self) -> str:
        return (f"it waits for GPU memory held outside rota ({self.who}), which has no known end: "
                "no predicted start while it stays")


def _replay(
    ordered: Sequence[Candidate], machine: Machine, running: Sequence[Running], now: float,
    loads: tuple[GpuLoad, ...], outside: _Outside | None = None,
) -> dict[str, Reason]:
    """:func:`rota.core.policy.schedule`'s loop, step by step, recording each task's outcome.

    Kept in step with the policy by ``tests/unit/test_explain.py``: the tasks explained ``next``
    are exactly the placements of ``schedule`` on the same inputs."""
    out: dict[str, Reason] = {}
    ledger = Ledger.for_machine(machine, (r.placement for r in running))
    placed_est: list[tuple[float | None, Placement]] = []
    shadow: Ledger | None = None
    shadow_at: float | None = None
    holder: Candidate | None = None
    # A request that did not fit the ledger gets the same reason until the ledger changes (it only
    # shrinks within a decision, as in the policy): one fit and one text per request class.
    short: dict[Request, Reason] = {}
    for c in ordered:
        if c.request in short and holder is not None:
            out[c.name] = short[c.request]
            continue
        p = ledger.fit(c.name, c.request)
        if shadow is None or holder is None:
            if p is not None:
                ledger.book(p)
                short.clear()
                placed_est.append((c.estimate_s, p))
                out[c.name] = Reason("next", _NEXT, gpus=loads)
                continue
            shadow_s, shadow = _reserve(c, ledger, running, placed_est)
            holder = c
            shadow_at = now + shadow_s if math.isfinite(shadow_s) else None
            when = (f"from ~{clock(shadow_at)}" if shadow_at is not None
                    else "from when running tasks with no estimate end")
            kind, text = _short(c.request, ledger, machine)
            if outside is not None and outside.blocks(c.request):
                # No reservation (the policy's _reserve): it would last as long as that memory stays.
                out[c.name] = Reason(kind, f"{text}; {outside.text()}", gpus=loads)
                continue
            out[c.name] = Reason(kind, f"{text}; resources are reserved for it {when}", holder=c.name,
                                 at=shadow_at, gpus=loads)
            continue
        if p is None:
            kind, text = _short(c.request, ledger, machine)
            if outside is not None and outside.blocks(c.request):
                text = f"{text}; {outside.text()}"
            out[c.name] = short[c.request] = Reason(kind, text, gpus=loads)
            continue
        shadow_s = math.inf if shadow_at is None else shadow_at - now
        ends_before = c.estimate_s is not None and math.isfinite(shadow_s) and c.estimate_s <= shadow_s
        if not ends_before:
            p = ledger.fit(c.name, c.request, also=shadow)
            if p is None:
                text = _reserved_text(c, holder, shadow_at)
                out[c.name] = Reason("reserved", text, holder=holder.name,
                                     at=shadow_at, gpus=loads)
                continue
            shadow.book(p)
        ledger.book(p)
        short.clear()
        out[c.name] = Reason("next", _NEXT, gpus=loads)
    return out


_NEXT = "resources are free: it starts at the next scheduling round"
_NO_ESTIMATE = "until running tasks with no estimate end"


def _reserved_text(c: Candidate, holder: Candidate, at: float | None) -> str:
    big = holder.request
    what = f"{big.gpus} GPU{'s' if big.gpus != 1 else ''}" if big.gpus else f"{big.cpus} CPUs"
    until = f"until ~{clock(at)}" if at is not None else _NO_ESTIMATE
    why = ("its duration is unknown" if c.estimate_s is None
           else f"it would not end before then ({format_duration(c.estimate_s)})")
    return f"free resources are reserved for {holder.name} ({what}) {until}; {why}"


def _short(req: Request, ledger: Ledger, machine: Machine) -> tuple[str, str]:
    """What ``req`` lacks in ``ledger``: ``(kind, one line)``; kinds ``cpu``, ``memory``, ``gpu``."""
    if req.cpus > ledger.cpus:
        return "cpu", (f"no {req.cpus} CPU slot{'s' if req.cpus != 1 else ''} free: {max(ledger.cpus, 0)} of "
                       f"{machine.cpus} free ({cpu_origin(machine)})")
    if req.memory_bytes > ledger.memory_bytes:
        origin = memory_origin(machine)
        return "memory", (f"no {format_size(req.memory_bytes)} RAM free: {format_size(max(ledger.memory_bytes, 0))} of "
                          f"{format_size(machine.memory_bytes)} free" + (f" ({origin})" if origin else ""))
    pool = [i for i in ledger.gpu_total if req.devices is None or i in req.devices]
    per = [f"GPU {i} {format_size(max(ledger.gpu_free[i], 0))}" for i in pool]
    free = "free: " + ", ".join(per) if per else "no GPUs"
    where = f" among devices {','.join(map(str, req.devices))}" if req.devices is not None else ""
    if req.gpu_memory_bytes is None:
        need = "idle GPU" if req.gpus == 1 else f"{req.gpus} idle GPUs"
        have = sum(1 for i in pool if ledger.gpu_free[i] >= ledger.gpu_total[i])
    else:
        size = format_size(req.gpu_memory_bytes)
        need = f"GPU with {size} free" if req.gpus == 1 else f"{req.gpus} GPUs with {size} free each"
        have = sum(1 for i in pool if ledger.gpu_free[i] >= req.gpu_memory_bytes)
    count = f": {have} {'has' if have == 1 else 'have'} it" if req.gpus > 1 else ""
    return "gpu", f"no {need}{where}{count} ({free})"


def cpu_origin(machine: Machine) -> str:
    """Where ``machine``'s CPU slots come from, in words: ``the run's --cpus 8``, ``this machine's
    8 CPUs``, ``the Ray cluster's 4 CPUs + 4 booked ahead in Ray's queue``. A machine that does
    not say (``cpus_from`` empty: one stored by an older rota) is read from its ``source``."""
    own = machine.cpus - machine.cpus_ahead
    kind = machine.cpus_from or _from_source(machine.source, "--cpus")
    text = {
        "flag": f"the run's --cpus {own}",
        "machine": f"this machine's {own} CPUs",
        "slurm-allocation": f"the SLURM allocation's {own} CPUs",
        "ray": f"the Ray cluster's {own} CPUs",
        "slurm": f"{own} CPUs from SLURM",
    }.get(kind, f"{own} CPUs")
    if machine.cpus_ahead:
        queue = "Ray's queue" if machine.source.startswith("ray") else "the backend's queue"
        text += f" + {machine.cpus_ahead} booked ahead in {queue}"
    return text


def memory_origin(machine: Machine) -> str:
    """Where ``machine``'s RAM figure comes from, in words: ``the run's --memory 16GB``, ``this
    machine's 16GB RAM``, ``the SLURM allocation's 16GB``, ``the Ray cluster's 16GB memory
    resource``, ``16GB RAM from SLURM``; "" when not known (``memory_from`` empty and a
    ``source`` that does not say: a local machine stored by an older rota), so that no flag the
    user did not give is named."""
    size = format_size(machine.memory_bytes)
    return {
        "flag": f"the run's --memory {size}",
        "machine": f"this machine's {size} RAM",
        "slurm-allocation": f"the SLURM allocation's {size}",
        "ray": f"the Ray cluster's {size} memory resource",
        "slurm": f"{size} RAM from SLURM",
    }.get(machine.memory_from or _from_source(machine.source, "--memory"), "")


def _from_source(source: str, flag: str) -> str:
    """:attr:`Machine.cpus_from` (``flag`` ``--cpus``) or :attr:`Machine.memory_from` (``--memory``)
    as a cluster backend's ``source`` implies it, for a machine stored by an older rota ("" for a
    local one: its source says where the GPUs come from, not the CPUs or RAM). A flag in the source
    is taken for the limit, as that rota named it (it did not record whether the cap bound)."""
    if flag in source:  # rota.executors.cluster_limits: "ray, this run capped by --cpus 2"
        return "flag"
    if source.startswith("ray"):
        return "ray"
    return "slurm" if source.startswith("slurm:") else ""
