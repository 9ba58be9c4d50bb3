"""Simulate a run on a virtual clock with the policy ``rota run`` uses.

Pure: no processes, no sleeping, no I/O. :func:`simulate` replays the engine's
loop (``rota.engine.launching.Launching._launch``) event by event:

- at time 0 and after every batch of task ends, the ready tasks are offered to
  :func:`rota.core.policy.schedule` as :class:`Candidate` records (priority,
  longest remaining critical path, estimate, file order) together with the
  running tasks as :class:`Running` records whose ``remaining_s`` is
  ``max(end - now, 1.0)``, exactly as the engine's ``_remaining`` computes it;
- every placement it returns starts at once and ends ``duration`` later.

Differences from a real run, by design: tasks take exactly their duration; the
figures the policy sees (estimates, ranks) are the *durations given here*
(estimate, history or default, scaled by the machine's speed), where the
engine sees the spec's ``estimate`` (default 60 s for ranks); the policy is
called only at event times, which is equivalent because between events nothing
the policy looks at changes except ``remaining_s``, and shrinking it only
shrinks the backfill window.

The DAG's bookkeeping (waiting needs counted down as needs end, dependents of
an unschedulable task blocked) is :mod:`rota.core.dag`'s, the engine's own
(:mod:`rota.engine.runstate`), so plan and run release tasks alike.

Concurrency caps (:mod:`rota.plan.limits`): the engine also asks each hook's
``may_launch`` (a sweep's ``parallel:``: at most that many running trials per
study, lowest trial numbers first). Here a capped task waits outside the ready
queue in its group's heap and is admitted only while its group has fewer than
``limit`` tasks running or admitted, lowest ``order`` first: the tasks the
engine's gate would let the policy see.

Scaling: the engine hands the policy every ready task each round. Here the
ready tasks are kept sorted incrementally (:class:`rota.plan.queues.ReadyQueue`)
and the policy gets only a *prefix* of them with ``presorted=True``, with the
free ledger the simulator keeps (``free=``; no re-booking of running tasks). The
prefix is grown (x4) until no request class left outside it fits the ledger
that remains after the prefix's placements; since the policy places a task
only where it fits and the ledger only shrinks within one call, the tasks
left out could not have been placed, so the placements are exactly those of
the full call (``tests/unit/test_plan_simulate.py`` checks this against a
reference that passes the full list).

Bookings outside rota (``outside=``: GPU memory held by processes rota did not
start, an unhealthy GPU; :mod:`rota.engine.gpu_watch`) have no known end: they
are booked in the ledger from time 0 to the end, and the policy sees them as
running entries with no remaining time, as the engine's ``_launch`` does. A task
that never gets placed while they stay (it cannot fit beside them, or a task
that cannot holds the reservation it needs) is reported ``unschedulable`` with
:data:`OUTSIDE_REASON`, its dependents ``blocked``: no slot, no predicted start.
Without them (``rota plan``) nothing of this runs.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter, neg

from rota.core.dag import blocked as blocked_by
from rota.core.dag import needs_met
from rota.core.policy import Candidate, schedule, sort_key
from rota.core.resources import Ledger, Machine, Placement, Request, fits_machine
from rota.plan.limits import Cap, concurrency_caps
from rota.plan.queues import REMAINING_FLOOR_S, Gates, ReadyQueue, RunningAt, RunningBeside
from rota.spec.model import Task

__all__ = ["OUTSIDE_REASON", "REMAINING_FLOOR_S", "Schedule", "Slot", "remaining_ranks_s", "scaled_durations", "simulate"]

_NAME, _NEEDS, _REQUEST, _PRIORITY = (attrgetter(a) for a in ("name", "needs", "request", "priority"))
PolicyFn = Callable[..., list[Placement]]
KeyFn = Callable[[Candidate], tuple[float, ...]]
OUTSIDE_REASON = "waits for GPU memory held outside rota, which has no known end"


@dataclass(frozen=True, init=False)
class Slot:
    """One task's simulated run: when, and what it booked."""

    name: str
    start_s: float
    end_s: float
    gpus: tuple[int, ...] = ()
    gpu_bytes: tuple[int, ...] = ()
    cpus: int = 1
    memory_bytes: int = 0

    def __init__(
        self, name: str, start_s: float, end_s: float, gpus: tuple[int, ...] = (), gpu_bytes: tuple[int, ...] = (),
        cpus: int = 1, memory_bytes: int = 0,
    ) -> None:
        # Hand-written for speed, as rota.core.resources.Placement's (see there).
        d = self.__dict__
        d["name"], d["start_s"], d["end_s"], d["gpus"], d["gpu_bytes"], d["cpus"], d["memory_bytes"] = (
            name, start_s, end_s, gpus, gpu_bytes, cpus, memory_bytes)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Schedule:
    """A simulated run.

    ``slots`` holds every task that ran, in start order (ties: file order).
    ``unschedulable`` are ``(task, reason)`` pairs for tasks whose request can
    never fit the machine; ``blocked`` are ``(task, need)`` pairs for tasks that
    (transitively) need one of those. ``makespan_s`` covers the slots only.
    ``ranks_s``: each task's longest remaining path as the policy saw it, by
    task index.
    """

    machine: Machine
    slots: tuple[Slot, ...]
    makespan_s: float
    unschedulable: tuple[tuple[str, str], ...] = ()
    blocked: tuple[tuple[str, str], ...] = ()
    policy_calls: int = 0
    ranks_s: tuple[float, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.unschedulable and not self.blocked


def scaled_durations(
    tasks: Sequence[Task], durations_s: Mapping[str, float], gpu_speed: float = 1.0, cpu_speed: float = 1.0
) -> dict[str, float]:
    """Durations on a machine whose GPUs run ``gpu_speed`` times (CPUs ``cpu_speed`` times)
    as fast as the reference the figures were measured on. GPU tasks scale by
    ``gpu_speed``, CPU-only tasks by ``cpu_speed``."""
    if gpu_speed <= 0 or cpu_speed <= 0:
        raise ValueError("speed factors must be positive")
    if gpu_speed == cpu_speed == 1:
        return {t.name: durations_s[t.name] for t in tasks}
    return {
        t.name: durations_s[t.name] / (gpu_speed if t.request.gpus else cpu_speed) for t in tasks
    }


def remaining_ranks_s(tasks: Sequence[Task], durations_s: Mapping[str, float]) -> list[float]:
    """Longest path (by ``durations_s``) from the start of each task to the end of the DAG,
    by task index. Tasks must be acyclic with resolved ``needs``. O(tasks + edges)."""
    if not any(map(_NEEDS, tasks)):  # a flat matrix: each task is its own path
        return list(map(float, map(durations_s.__getitem__, map(_NAME, tasks))))
    index = {t.name: i for i, t in enumerate(tasks)}
    n = len(tasks)
    users: list[list[int]] = [[] for _ in range(n)]
    outdeg = [0] * n
    for i, t in enumerate(tasks):
        for need in t.needs:
            users[index[need]].append(i)
    for i in range(n):
        outdeg[i] = len(users[i])
    needs_idx = [[index[x] for x in t.needs] for t in tasks]
    rank = [0.0] * n
    stack = [i for i in range(n) if outdeg[i] == 0]
    left = list(outdeg)
    while stack:
        i = stack.pop()
        rank[i] = durations_s[tasks[i].name] + max((rank[u] for u in users[i]), default=0.0)
        for j in needs_idx[i]:
            left[j] -= 1
            if left[j] == 0:
                stack.append(j)
    return rank


def _fits_any(ledger: Ledger, counts: Sequence[int], reqs: Sequence[Request]) -> bool:
    return any(n > 0 and ledger.fit("?", reqs[c]) is not None for c, n in enumerate(counts))


def _policy_order(cands: Sequence[Candidate], key: KeyFn, prios: list[int], ranks: list[float]) -> list[int]:
    """Task indices in policy order (``key``; the keys are static, so one sort does)."""
    if key is sort_key:  # the same order, without a Python call per task
        keys = sorted(zip(map(neg, prios), map(neg, ranks), range(len(cands)), strict=True))
        return list(map(itemgetter(2), keys))
    return sorted(range(len(cands)), key=lambda i: key(cands[i]))


def simulate(
    tasks: Sequence[Task],
    machine: Machine,
    durations_s: Mapping[str, float],
    *,
    gpu_speed: float = 1.0,
    cpu_speed: float = 1.0,
    policy: PolicyFn = schedule,
    key: KeyFn = sort_key,
    caps: Mapping[str, Cap] | None = None,
    outside: Sequence[Placement] = (),
) -> Schedule:
    """Simulate running ``tasks`` (resolved, acyclic, file order) on ``machine``.

    ``durations_s`` gives every task's duration on the reference machine
    (speed 1); GPU tasks are divided by ``gpu_speed``, CPU-only ones by
    ``cpu_speed``. ``policy``/``key`` default to rota's policy and its order
    (benchmarks pass others); ``policy`` must place a task only where it fits
    the free ledger and must accept ``presorted=True``.

    Guarantees: never oversubscribes (the policy's contract); a task starts no
    earlier than the end of each of its ``needs``; every task that can fit the
    machine and does not need an unschedulable one gets a slot; at no instant
    do more than ``limit`` tasks of one cap group run.

    ``outside``: bookings for what rota did not start, held for the whole
    simulation (see the module docstring); those on GPUs the machine lacks are
    left out. The tasks never placed beside them are ``unschedulable``
    (:data:`OUTSIDE_REASON`), which only they can cause.
    """
    dur = durations_s if gpu_speed == cpu_speed == 1 else scaled_durations(tasks, durations_s, gpu_speed, cpu_speed)
    n = len(tasks)
    # Per-task columns, built with map/zip (no Python-level loop per task where it can be helped).
    names = list(map(_NAME, tasks))
    durs = list(map(dur.__getitem__, names))
    requests = list(map(_REQUEST, tasks))
    index = dict(zip(names, range(n), strict=True))
    flat = not any(map(_NEEDS, tasks))
    users: list[list[int]] = [] if flat else [[] for _ in range(n)]
    if not flat:
        for i, t in enumerate(tasks):
            for need in t.needs:
                users[index[need]].append(i)

    # Request classes: tasks of one template share one Request object, so hash a Request
    # once per object (the classes are numbered in order of first use).
    ids = list(map(id, requests))
    class_of: dict[Request, int] = {}
    class_of_id = {k: class_of.setdefault(r, len(class_of)) for k, r in dict(zip(ids, requests, strict=True)).items()}
    cls = list(map(class_of_id.__getitem__, ids))
    reqs = list(class_of)
    why_not = [fits_machine(r, machine) for r in reqs]
    unschedulable: list[tuple[str, str]] = []
    dead = [False] * n
    if any(w is not None for w in why_not):
        for i, t in enumerate(tasks):
            why = why_not[cls[i]]
            if why is not None:
                unschedulable.append((t.name, why))
                dead[i] = True
    blocked: list[tuple[str, str]] = []
    if unschedulable and not flat:  # the run's skipped dependents (rota.core.dag, as the engine)
        roots = [index[name] for name, _ in unschedulable]
        for u, i in blocked_by(users.__getitem__, roots, lambda u: not dead[u]):
            dead[u] = True
            blocked.append((tasks[u].name, tasks[i].name))

    ranks = remaining_ranks_s(tasks, dur)
    prios = list(map(_PRIORITY, tasks))
    cands = list(map(Candidate, names, requests, prios, ranks, durs, range(n)))
    by_pos = _policy_order(cands, key, prios, ranks)
    # Everything the loop needs per task, by position in policy order (often file order).
    if by_pos == list(range(n)):
        pos, at = by_pos, _ByPos(cands, cls)
    else:
        pos = [0] * n
        for p_, i in enumerate(by_pos):
            pos[i] = p_
        at = _ByPos([cands[i] for i in by_pos], [cls[i] for i in by_pos])
    unmet = [0] * n if flat else [len(t.needs) for t in tasks]
    classes = [0] * len(reqs)  # ready tasks per request class
    gates = Gates(names, concurrency_caps(tasks) if caps is None else caps)
    if flat and not unschedulable and not gates:
        ready = ReadyQueue(list(range(n)))
        for c, count in Counter(cls).items():
            classes[c] = count
    else:
        start = [i for i in range(n) if not dead[i] and unmet[i] == 0 and gates.group[i] < 0]
        ready = ReadyQueue(sorted(pos[i] for i in start))
        for i in start:
            classes[cls[i]] += 1
        if gates:
            for i in range(n):
                if not dead[i] and unmet[i] == 0 and gates.group[i] >= 0:
                    gates.wait(i)
            for i in gates.admit_all():
                ready.add(pos[i])
                classes[cls[i]] += 1

    running: dict[int, tuple[Placement, float]] = {}  # index -> (placement, end_s)
    if outside:
        have = set(machine.gpu_indices)
        outside = [p for p in outside if have.issuperset(p.gpus)]
    view = RunningBeside(running, outside) if outside else RunningAt(running)
    free = Ledger.for_machine(machine, outside)  # kept in step with ``running`` (``_decide`` books)
    ending: dict[float, list[int]] = {}  # end time -> tasks ending then (tasks end together)
    times: list[float] = []  # heap of the keys of ``ending``
    slots: list[Slot] = []
    now = 0.0
    calls = 0
    freed = 1
    while True:
        view.now = now
        placed, c = _decide(ready, classes, reqs, at, machine, free, view, policy, freed)
        calls += c
        if placed:
            done = set()
            for p in placed:
                i = index[p.task]
                done.add(pos[i])
                classes[cls[i]] -= 1
                end = now + durs[i]
                running[i] = (p, end)
                same = ending.get(end)
                if same is None:
                    ending[end] = [i]
                    heapq.heappush(times, end)
                else:
                    same.append(i)
                slots.append(Slot(p.task, now, end, p.gpus, p.gpu_bytes, p.cpus, p.memory_bytes))
            ready.remove(done)
        if not times:
            break
        now = heapq.heappop(times)
        ended = ending.pop(now)
        freed = len(ended)
        for i in ended:
            free.release(running.pop(i)[0])
            if gates:
                gates.done(i)
            if flat:
                continue
            for u in needs_met(users[i], unmet):  # the run's bookkeeping (rota.core.dag)
                if not dead[u]:
                    if gates and gates.group[u] >= 0:
                        gates.wait(u)
                        continue
                    ready.add(pos[u])
                    classes[cls[u]] += 1
        if gates:
            for u in gates.admit_all():
                ready.add(pos[u])
                classes[cls[u]] += 1
    if len(ready) or (gates and gates.waiting()):
        never = [by_pos[x] for x in ready.prefix(len(ready))] + ([i for h in gates.heaps for _, i in h] if gates else [])
        if not outside:
            # Cannot happen with a policy that keeps its contract: everything left fits an idle machine.
            stuck = [names[i] for i in never]
            raise RuntimeError(f"simulation stalled with {len(stuck)} ready tasks, e.g. {stuck[:3]}")
        # Only the bookings outside rota are left, for ever: what is still waiting never starts.
        for i in sorted(never):
            unschedulable.append((names[i], OUTSIDE_REASON))
            dead[i] = True
        if not flat:
            for u, i in blocked_by(users.__getitem__, sorted(never), lambda u: not dead[u]):
                dead[u] = True
                blocked.append((names[u], names[i]))
    makespan = max((s.end_s for s in slots), default=0.0)
    return Schedule(machine, tuple(slots), makespan, tuple(unschedulable), tuple(blocked), calls, tuple(ranks))


@dataclass(frozen=True)
class _ByPos:
    """Candidates and request classes by position in policy order."""

    cands: Sequence[Candidate]
    cls: Sequence[int]


def _decide(
    ready: ReadyQueue,
    classes: Sequence[int],
    reqs: Sequence[Request],
    at: _ByPos,
    machine: Machine,
    free: Ledger,
    running: RunningAt,
    policy: PolicyFn,
    first_k: int,
) -> tuple[list[Placement], int]:
    """The placements the policy makes now for *all* ready tasks, and how many calls it took.

    The placements are booked in ``free`` on return (the caller records them as running).
    """
    if not len(ready):
        return [], 0
    if not _fits_any(free, classes, reqs):
        return [], 0
    # rota's policy takes the free ledger as it is; others get only ``running``.
    extra = {"free": free} if policy is schedule else {}
    cands, cls = at.cands, at.cls
    k = max(first_k, 1)
    calls = 0
    while True:
        prefix = ready.prefix(k)
        calls += 1
        placed = policy([cands[x] for x in prefix], machine, running, presorted=True, **extra)
        for p in placed:
            free.book(p)
        if len(prefix) >= len(ready):
            return placed, calls
        tail = list(classes)
        for x in prefix:
            tail[cls[x]] -= 1
        if not _fits_any(free, tail, reqs):
            return placed, calls
        for p in placed:
            free.release(p)
        k = max(k * 4, 4)
