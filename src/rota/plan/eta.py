"""How long a run still has to go: the plan simulator on the remaining work, with durations
learned from the tasks that already finished.

Pure (:func:`remaining_s`, :func:`learned_durations`): the dashboard calls them on the
engine's live state (:class:`rota.ui.snapshot.EtaTracker` throttles it), tests call them
on a real run's store; both see the same answer for the same progress.

Durations. Before anything finishes, every task's duration is what
``rota plan --use-history`` takes (:func:`rota.plan.estimates.resolve_durations` with
``use_history=True``: history of the same command, else the estimate, else the
default), so the ETA at the start is that plan's makespan. Once tasks finish, a task
still to run takes ``base x ratio``, where ``ratio`` is the median of ``actual / base``
over the finished tasks of its own group (matrix, shards or sweep template) when any
has finished, else over the finished tasks whose base came from the same source
(estimate, history or default), else 1. A running task takes what is left of its
learned duration (at least :data:`rota.plan.queues.REMAINING_FLOOR_S`).

Then the ETA is the makespan of :func:`rota.plan.simulate.simulate` on the running
tasks (first, with what they have left) and the pending ones (their needs on
finished tasks dropped), on the run's machine, with the run's concurrency caps.

:func:`forecast` is that simulation with every task's predicted start and end (what
``rota status`` and ``rota why`` show, written by the controller's
:mod:`rota.engine.predict`); :func:`remaining_s` is its makespan. GPU memory booked for what rota
did not start (``outside=``: a colleague's process, an unhealthy GPU) has no known end: it is held
for the whole forecast, so a task that can never fit while it stays gets no prediction, nor do the
tasks that need it; the tasks that fit beside it are forecast as before.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from rota.core.resources import Machine, Placement
from rota.plan.estimates import DEFAULT_DURATION_S, resolve_durations
from rota.plan.queues import REMAINING_FLOOR_S
from rota.plan.simulate import OUTSIDE_REASON, simulate
from rota.spec.model import Task
from rota.store import base as S

_FIRST = 10**9  # a priority above any spec's (their range is +-1,000,000): running tasks go first


@dataclass(frozen=True)
class Progress:
    """One task's progress in a run: its state and, once started/ended, when (epoch seconds)."""

    state: str
    started_at: float | None = None
    ended_at: float | None = None


class TaskProgress(Protocol):
    """What a forecast reads of a task's progress: a :class:`Progress`, or any record with the same
    three attributes (the controller passes its in-memory tasks as they are: a copy of 20,000 of
    them per forecast was most of what a big run's predictions added to its peak memory)."""

    @property
    def state(self) -> str: ...
    @property
    def started_at(self) -> float | None: ...
    @property
    def ended_at(self) -> float | None: ...


def _median_ratio(pairs: Sequence[tuple[float, float]]) -> float | None:
    ratios = [actual / base for actual, base in pairs if base > 0]
    return statistics.median(ratios) if ratios else None


def learned_durations(
    tasks: Sequence[Task],
    progress: Mapping[str, TaskProgress],
    history_s: Mapping[str, float] | None = None,
    default_s: float = DEFAULT_DURATION_S,
) -> dict[str, float]:
    """Each task's expected duration given what finished (see the module docstring).

    ``progress``: by task name; a task missing from it counts as pending.
    ``history_s``: command -> learned seconds (:func:`rota.plan.estimates.load_history`).
    Finished tasks (succeeded with both times) get their actual duration.
    """
    base = resolve_durations(tasks, history_s or {}, use_history=True, default_s=default_s)
    actual: dict[str, float] = {}
    by_group: dict[str, list[tuple[float, float]]] = {}
    by_source: dict[str, list[tuple[float, float]]] = {}
    for t in tasks:
        p = progress.get(t.name)
        if p is None or p.state != S.SUCCEEDED or p.started_at is None or p.ended_at is None:
            continue
        took = max(p.ended_at - p.started_at, 0.0)
        actual[t.name] = took
        pair = (took, base.seconds[t.name])
        by_group.setdefault(t.group or t.name, []).append(pair)
        by_source.setdefault(base.source[t.name], []).append(pair)
    if not actual:
        return dict(base.seconds)
    group_ratio = {g: _median_ratio(v) for g, v in by_group.items()}
    source_ratio = {s: _median_ratio(v) for s, v in by_source.items()}
    out: dict[str, float] = {}
    for t in tasks:
        name = t.name
        if name in actual:
            out[name] = actual[name]
            continue
        ratio = group_ratio.get(t.group or name)
        if ratio is None:
            ratio = source_ratio.get(base.source[name])
        out[name] = base.seconds[name] * (ratio if ratio is not None else 1.0)
    return out


def remaining_s(
    tasks: Sequence[Task],
    machine: Machine,
    progress: Mapping[str, TaskProgress],
    now: float,
    history_s: Mapping[str, float] | None = None,
    default_s: float = DEFAULT_DURATION_S,
) -> float | None:
    """Seconds until the run ends, as the plan simulator predicts from ``now``; None when
    nothing is left to run (every task final)."""
    return forecast(tasks, machine, progress, now, history_s, default_s).makespan_s


@dataclass(frozen=True)
class Forecast:
    """The plan simulator's picture of the rest of a run, computed at ``at`` (epoch seconds).

    ``makespan_s``: seconds from ``at`` until the last simulated task ends (None: nothing left;
    ``math.inf``: a task never starts while the bookings outside rota stay, so neither can the run end).
    ``slots``: task -> ``(start, end)`` in epoch seconds, for every pending and running task the
    simulation placed (a running task's start is its real one); a held task, a task that
    (transitively) needs a held one, a task that can never fit (the machine, or beside the bookings
    outside rota) and a task that needs one of those are left out (no prediction).
    """

    at: float
    makespan_s: float | None
    slots: Mapping[str, tuple[float, float]]


def forecast(
    tasks: Sequence[Task],
    machine: Machine,
    progress: Mapping[str, TaskProgress],
    now: float,
    history_s: Mapping[str, float] | None = None,
    default_s: float = DEFAULT_DURATION_S,
    *,
    held: Collection[str] = (),
    not_before: Mapping[str, float] | None = None,
    outside: Sequence[Placement] = (),
) -> Forecast:
    """The rest of the run from ``now`` (see the module docstring), with every task's predicted
    start and end. ``held``: pending tasks that must not start (``rota hold``); they and their
    dependents are simulated as absent. ``not_before``: task -> epoch seconds its retry back-off
    ends; its predicted start is no earlier (the simulator itself has no release times, so
    what it placed after it is not moved). ``outside``: bookings for what rota did not start
    (:attr:`rota.engine.launching.Launching.outside_bookings`' placements), held for the whole
    forecast (:func:`rota.plan.simulate.simulate`'s ``outside``)."""
    durations = learned_durations(tasks, progress, history_s, default_s)
    left: list[Task] = []
    seconds: dict[str, float] = {}
    running: list[Task] = []
    started_at: dict[str, float] = {}
    out = _with_dependents(tasks, held) if held else set()
    for t in tasks:
        p = progress.get(t.name)
        state = p.state if p is not None else S.PENDING
        if state in S.ACTIVE:
            started = p.started_at if p is not None and p.started_at is not None else now
            started_at[t.name] = min(started, now)
            seconds[t.name] = max(durations[t.name] - (now - started), REMAINING_FLOOR_S)
            running.append(replace(t, needs=(), priority=_FIRST))
        elif state == S.PENDING:
            if t.name in out:
                continue
            seconds[t.name] = durations[t.name]
            left.append(t)
    if not running and not left:
        return Forecast(now, None, {})
    todo = {t.name for t in running} | {t.name for t in left}
    pending = [t if all(n in todo for n in t.needs) else replace(t, needs=tuple(n for n in t.needs if n in todo))
               for t in left]
    sched = simulate(running + pending, machine, seconds, outside=outside)
    slots: dict[str, tuple[float, float]] = {}
    waits = not_before or {}
    for sl in sched.slots:
        end = now + sl.end_s
        start = started_at.get(sl.name, now + sl.start_s)
        wait = waits.get(sl.name)
        if wait is not None and wait > start:  # its back-off runs out later: as long, from then
            start, end = wait, wait + sl.duration_s
        slots[sl.name] = (start, end)
    makespan = sched.makespan_s
    if outside and any(why == OUTSIDE_REASON for _, why in sched.unschedulable):
        makespan = math.inf  # the run cannot end while that memory stays: the dashboard's ETA is unknown
    return Forecast(now, makespan, slots)


def _with_dependents(tasks: Sequence[Task], names: Collection[str]) -> set[str]:
    """``names`` and every task that needs one of them, transitively."""
    users: dict[str, list[str]] = {}
    for t in tasks:
        for n in t.needs:
            users.setdefault(n, []).append(t.name)
    out = set(names)
    todo = list(out)
    while todo:
        for u in users.get(todo.pop(), ()):
            if u not in out:
                out.add(u)
                todo.append(u)
    return out


def history_s(store: Any) -> dict[str, float]:
    """Median seconds by command of the successful attempts ``store`` holds
    (``SqliteStore.durations_by_command``); empty when they cannot be read (no history is not an
    error for a forecast). Called at a run's start, it learns only from earlier runs: the forecast
    learns this run's own attempts from its tasks by group."""
    try:
        past: Mapping[str, Sequence[float]] = store.durations_by_command()
    except Exception:  # noqa: BLE001 - see above
        return {}
    return {cmd: max(statistics.median(runs), 0.001) for cmd, runs in past.items() if runs}
