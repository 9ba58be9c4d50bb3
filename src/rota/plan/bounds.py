"""Figures around a simulated schedule: sequential time, lower bound, utilisation, cost.

Pure functions over :class:`~rota.plan.simulate.Schedule` and durations.

Lower bound on any schedule's makespan (no schedule on this machine can be
shorter) = the largest of:

- ``critical_path_s``: the longest chain of ``needs`` by duration;
- ``gpu_s``: GPU work / number of GPUs, where a task's GPU work is
  ``gpus x duration x share`` and ``share`` is the least fraction of a GPU it
  can occupy: 1 for a whole GPU; 1 too when the memory it leaves free on the
  largest GPU it may use is less than the smallest booking of any other GPU
  task (nothing can ever share its GPU); else ``gpu_memory / memory`` of that
  largest GPU (packing can never do better). At any instant the shares on one
  GPU add up to at most 1, so the bound holds;
- ``cpu_s``: sum of ``cpus x duration`` / CPUs;
- ``memory_s``: sum of ``memory x duration`` / RAM;
- ``parallel_s``: per concurrency cap group (a sweep's ``parallel:``, see
  :mod:`rota.plan.limits`), its work / its limit.

Only tasks that ran in the schedule count (unschedulable ones are reported
elsewhere).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter

from rota.core.intervals import union_length
from rota.core.resources import Machine, Request
from rota.plan.limits import Cap, cap_bound_s
from rota.plan.simulate import Schedule, remaining_ranks_s
from rota.spec.model import Task


@dataclass(frozen=True)
class LowerBound:
    critical_path_s: float
    gpu_s: float
    cpu_s: float
    memory_s: float
    parallel_s: float = 0.0  # the largest cap group's work / its limit
    parallel_group: str = ""  # that group, e.g. "sweep tune-xgb"

    @property
    def value_s(self) -> float:
        return max(self.critical_path_s, self.gpu_s, self.cpu_s, self.memory_s, self.parallel_s)

    @property
    def binding(self) -> str:
        """Which part sets the bound: ``critical path``, ``GPUs``, ``CPUs``, ``RAM`` or
        ``<group> parallel`` (e.g. ``sweep tune-xgb parallel``)."""
        parts = {"critical path": self.critical_path_s, "GPUs": self.gpu_s, "CPUs": self.cpu_s, "RAM": self.memory_s,
                 f"{self.parallel_group} parallel": self.parallel_s}
        return max(parts, key=lambda k: parts[k])


@dataclass(frozen=True)
class Utilization:
    """Fractions of ``capacity x makespan`` in ``[0, 1]``.

    ``gpu_busy[i]``: time GPU ``i`` had at least one task; ``gpu_memory[i]``:
    time-averaged booked memory of GPU ``i``; ``gpus``: mean of ``gpu_busy``;
    ``cpus``/``memory``: time-averaged booked CPUs / RAM.
    """

    gpu_busy: Mapping[int, float]
    gpu_memory: Mapping[int, float]
    gpus: float
    cpus: float
    memory: float


@dataclass(frozen=True)
class Prices:
    """Prices in dollars; 0 means not given (then that pricing model's cost is None).

    ``per_hour``: the whole machine, rented (billed for the makespan); ``per_gpu_hour``
    and ``per_cpu_hour``: a shared cluster's charge per booked GPU-hour and CPU-hour."""

    per_gpu_hour: float = 0.0
    per_cpu_hour: float = 0.0
    per_hour: float = 0.0


@dataclass(frozen=True)
class Cost:
    """The two ways a machine is paid for, kept apart:

    - ``rent_usd`` (``machine_hours x per_hour``): a rented machine (a cloud VM) is
      billed for every hour it is held, busy or idle, so for the makespan
      (``machine_hours``). None when no ``price_per_hour`` is given.
    - ``usage_usd`` (``gpu_hours x per_gpu_hour + cpu_hours x per_cpu_hour``): a
      shared cluster charges what the run books. ``gpu_hours``: summed over GPUs,
      the time each GPU holds at least one task (a GPU is paid while anything runs
      on it, however little memory it books; tasks packed on one GPU are not
      counted twice); ``cpu_hours``: ``cpus x duration`` summed. None when neither
      ``price_per_gpu_hour`` nor ``price_per_cpu_hour`` is given.

    ``total_usd`` is the sum of every priced term (the documented JSON field; with
    one pricing model given, it is that model's figure).
    """

    gpu_hours: float
    cpu_hours: float
    machine_hours: float
    gpu_usd: float
    cpu_usd: float
    machine_usd: float
    rent_usd: float | None = None
    usage_usd: float | None = None

    @property
    def total_usd(self) -> float:
        return self.gpu_usd + self.cpu_usd + self.machine_usd

    @property
    def priced(self) -> bool:
        return self.rent_usd is not None or self.usage_usd is not None


def critical_path(
    tasks: Sequence[Task], durations_s: Mapping[str, float], ranks_s: Sequence[float] | None = None
) -> tuple[str, ...]:
    """Names along the longest chain of ``needs`` by ``durations_s``, first to last (ties:
    file order). ``tasks`` resolved and acyclic, every need among them. O(tasks + edges).
    ``ranks_s``: :func:`remaining_ranks_s` of the same arguments, if already known."""
    if not tasks:
        return ()
    rank = remaining_ranks_s(tasks, durations_s) if ranks_s is None else ranks_s
    if not any(map(attrgetter("needs"), tasks)):  # no chains: the longest task (the first of ties)
        return (tasks[list(rank).index(max(rank))].name,)
    index = {t.name: i for i, t in enumerate(tasks)}
    users: list[list[int]] = [[] for _ in tasks]
    for i, t in enumerate(tasks):
        for n in t.needs:
            users[index[n]].append(i)
    i = max(range(len(tasks)), key=lambda k: (rank[k], -k))
    path = [tasks[i].name]
    while users[i]:
        i = max(users[i], key=lambda k: (rank[k], -k))
        path.append(tasks[i].name)
    return tuple(path)


def sequential_s(durations_s: Mapping[str, float], names: Sequence[str]) -> float:
    """Time to run ``names`` one at a time."""
    return float(sum(map(durations_s.__getitem__, names)))


def gpu_share(req: Request, machine: Machine, smallest_other_bytes: float = 0.0) -> float:
    """Least fraction of one GPU the request can occupy on ``machine`` (see the module doc);
    ``smallest_other_bytes``: the smallest per-GPU booking of any *other* GPU task."""
    if req.gpus == 0 or req.gpu_memory_bytes is None:
        return 1.0 if req.gpus else 0.0
    pool = [g.memory_bytes for g in machine.gpus if req.devices is None or g.index in req.devices]
    largest = max(pool, default=0)
    if not largest or largest - req.gpu_memory_bytes < smallest_other_bytes:
        return 1.0
    return min(1.0, req.gpu_memory_bytes / largest)


def _bookings(requests: Sequence[Request], machine: Machine) -> list[float]:
    """Least per-GPU booking of each GPU request (a whole GPU: the smallest GPU of its pool)."""
    out = []
    for r in requests:
        if r.gpu_memory_bytes is not None:
            out.append(float(r.gpu_memory_bytes))
        else:
            pool = [g.memory_bytes for g in machine.gpus if r.devices is None or g.index in r.devices]
            out.append(float(min(pool, default=0)))
    return out


@dataclass(frozen=True)
class SlotSums:
    """Sums over a schedule's slots, in one pass (:func:`slot_sums`), shared by the figures."""

    gpu_busy_s: Mapping[int, float]  # per GPU, in order of first use: time it holds a task
    gpu_byte_s: Mapping[int, float]  # per GPU: booked bytes x seconds
    cpu_s: float  # CPUs x seconds, summed in slot order (from 0, as sum() does)
    memory_s: float  # RAM bytes x seconds


def slot_sums(schedule: Schedule) -> SlotSums:
    """:class:`SlotSums` of ``schedule``. Busy time per GPU is the union of its tasks'
    intervals, merged as they come when the slots are in start order (the simulator's
    order; the same arithmetic as :func:`union_length`), else by sorting."""
    runs: dict[int, list[float]] = {}  # GPU -> [run start, run end, length of runs before]
    byte_s: dict[int, float] = {}
    cpu: float = 0
    ram = 0.0
    prev, in_order = float("-inf"), True
    for s in schedule.slots:
        a, b = s.start_s, s.end_s
        d = b - a
        if a < prev or d < 0:
            in_order = False
        prev = a
        if s.gpus:
            for i, nb in zip(s.gpus, s.gpu_bytes, strict=True):
                byte_s[i] = byte_s.get(i, 0.0) + nb * d
                run = runs.get(i)
                if run is None:
                    runs[i] = [a, b, 0.0]
                elif a > run[1]:  # a gap: the run ends
                    run[2] += run[1] - run[0]
                    run[0], run[1] = a, b
                elif b > run[1]:
                    run[1] = b
        cpu += s.cpus * d
        ram += s.memory_bytes * d
    if in_order:
        busy = {i: r[2] + (r[1] - r[0]) for i, r in runs.items()}
    else:
        spans: dict[int, list[tuple[float, float]]] = {}
        for s in schedule.slots:
            for i in s.gpus:
                spans.setdefault(i, []).append((s.start_s, s.end_s))
        busy = {i: union_length(v) for i, v in spans.items()}
    return SlotSums(busy, byte_s, cpu, ram)


def lower_bound(
    schedule: Schedule, requests: Mapping[str, Request], critical_path_s: float, sums: SlotSums | None = None,
    caps: Mapping[str, Cap] | None = None,
) -> LowerBound:
    """The lower bound above for the tasks in ``schedule`` (``requests`` by task name).
    ``sums``: :func:`slot_sums` of ``schedule`` if already known; ``caps``: the
    concurrency caps the schedule obeyed (task name -> Cap)."""
    m = schedule.machine
    slots = schedule.slots
    sums = sums or slot_sums(schedule)
    reqs = [requests[s.name] for s in slots]
    # Per distinct request object (tasks of one template share one): its least per-GPU
    # booking and how many GPU slots have it; the figures below only need the two
    # smallest bookings over all GPU slots.
    by_id: dict[int, Request] = {}
    count: dict[int, int] = {}
    for r in reqs:
        if r.gpus:
            k = id(r)
            if k in count:
                count[k] += 1
            else:
                by_id[k], count[k] = r, 1
    own = {k: _bookings([r], m)[0] for k, r in by_id.items()}
    books: list[float] = []
    for k in sorted(own, key=lambda k: own[k]):
        books += [own[k]] * min(count[k], 2)
        if len(books) >= 2:
            break
    lowest, second = (books + [float("inf")] * 2)[:2]
    share: dict[int, tuple[int, float]] = {}  # id(request) -> (GPUs, share of each)
    for k, r in by_id.items():
        other = second if own[k] == lowest else lowest  # the smallest booking of another task
        share[k] = (r.gpus, gpu_share(r, m, other if other != float("inf") else 0.0))
    gpu_work = 0.0
    for s, req in zip(slots, reqs, strict=True):
        if req.gpus:
            g, sh = share[id(req)]
            gpu_work += g * (s.end_s - s.start_s) * sh
    par_s, par_group = cap_bound_s(caps, {s.name: s.end_s - s.start_s for s in slots}) if caps else (0.0, "")
    return LowerBound(
        parallel_s=par_s, parallel_group=par_group,
        critical_path_s=critical_path_s,
        gpu_s=gpu_work / len(m.gpus) if m.gpus else 0.0,
        cpu_s=sums.cpu_s / m.cpus if m.cpus else 0.0,
        memory_s=sums.memory_s / m.memory_bytes if m.memory_bytes else 0.0,
    )


def utilization(schedule: Schedule, sums: SlotSums | None = None) -> Utilization:
    """Utilisation of each resource over the schedule's makespan (0 when it is 0).
    ``sums``: :func:`slot_sums` of ``schedule`` if already known."""
    m = schedule.machine
    span = schedule.makespan_s
    if span <= 0:
        zero = {g.index: 0.0 for g in m.gpus}
        return Utilization(zero, dict(zero), 0.0, 0.0, 0.0)
    sums = sums or slot_sums(schedule)
    gpu_busy = {g.index: sums.gpu_busy_s.get(g.index, 0.0) / span for g in m.gpus}
    gpu_mem = {g.index: sums.gpu_byte_s.get(g.index, 0.0) / (g.memory_bytes * span) for g in m.gpus}
    return Utilization(
        gpu_busy=gpu_busy,
        gpu_memory=gpu_mem,
        gpus=sum(gpu_busy.values()) / len(gpu_busy) if gpu_busy else 0.0,
        cpus=sums.cpu_s / (m.cpus * span) if m.cpus else 0.0,
        memory=sums.memory_s / (m.memory_bytes * span) if m.memory_bytes else 0.0,
    )


def cost(schedule: Schedule, prices: Prices, sums: SlotSums | None = None) -> Cost:
    """What the schedule costs at ``prices`` (see :class:`Cost`).
    ``sums``: :func:`slot_sums` of ``schedule`` if already known."""
    sums = sums or slot_sums(schedule)
    gpu_h = sum(sums.gpu_busy_s.values()) / 3600.0
    cpu_h = sums.cpu_s / 3600.0
    mach_h = schedule.makespan_s / 3600.0
    gpu_usd, cpu_usd, machine_usd = gpu_h * prices.per_gpu_hour, cpu_h * prices.per_cpu_hour, mach_h * prices.per_hour
    return Cost(
        gpu_hours=gpu_h,
        cpu_hours=cpu_h,
        machine_hours=mach_h,
        gpu_usd=gpu_usd,
        cpu_usd=cpu_usd,
        machine_usd=machine_usd,
        rent_usd=machine_usd if prices.per_hour else None,
        usage_usd=gpu_usd + cpu_usd if prices.per_gpu_hour or prices.per_cpu_hour else None,
    )
