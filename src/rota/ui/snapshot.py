"""A frozen picture of a run, built from the engine (read through :class:`rota.ui.view.RunView`), rendered by pure functions."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from rota.core.resources import Machine
from rota.store import base as S
from rota.ui.view import Forecasts, RunView, forecasts


@dataclass(frozen=True)
class GpuView:
    index: int
    name: str
    total_bytes: int
    booked_bytes: int
    tasks: tuple[str, ...]
    util_pct: float | None = None
    used_bytes: int | None = None
    given_back: bool = False  # live limits took it out of the run; tasks started there still run


@dataclass(frozen=True)
class TaskView:
    name: str
    gpus: tuple[int, ...]
    elapsed_s: float
    estimate_s: float | None
    progress: dict[str, Any] | None = None
    queued: bool = False  # submitted, still waiting in the backend's own queue (SLURM PENDING, Ray)


@dataclass(frozen=True)
class Snapshot:
    now: float
    started_at: float
    gpus: tuple[GpuView, ...]
    cpus_total: int
    cpus_booked: int
    memory_total: int
    memory_booked: int
    running: tuple[TaskView, ...]
    counts: dict[str, int]
    total: int
    eta_s: float | None
    failures: tuple[tuple[str, str, str], ...]  # (task, reason, log path)
    recent: tuple[tuple[float, str, str, str], ...]
    waiting: tuple[tuple[str, str, float | None], ...] = ()  # first pending: (task, reason, predicted start)


def read_progress(out_dir: str | None) -> dict[str, Any] | None:
    """The shard progress file contract: ``$ROTA_OUT/.rota/progress.json``."""
    if not out_dir:
        return None
    try:
        with open(os.path.join(out_dir, ".rota", "progress.json")) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


class EtaTracker:
    """The dashboard's ETA: :func:`rota.plan.eta.remaining_s` on the engine's live state,
    recomputed at most every ``min_interval_s`` (and never more than ~5% of the time:
    the wait grows to 20x what the last simulation took), counted down in between.

    At the start it is ``rota plan --use-history``'s makespan (history read once from
    the store); as tasks finish it learns how long they really take.
    """

    def __init__(self, min_interval_s: float = 3.0, max_interval_s: float = 30.0) -> None:
        self.min_interval_s = min_interval_s
        self.max_interval_s = max_interval_s
        self._history: dict[str, float] | None = None
        self._at = float("-inf")  # when the last value was computed
        self._value: float | None = None
        self._cost_s = 0.0
        self._seen: tuple[int, int] = (-1, -1)  # (finished, running) at the last computation

    def eta_s(self, engine: RunView, now: float) -> float | None:
        finished = sum(1 for lv in engine.live.values() if lv.state in S.FINAL)
        seen = (finished, len(engine.running))
        wait = max(self.min_interval_s, 20 * self._cost_s)
        changed = seen != self._seen
        if now - self._at >= (wait if changed else max(wait, self.max_interval_s)):
            t0 = time.perf_counter()
            self._value = _remaining(engine, now, self._learn_history(engine))
            self._cost_s = time.perf_counter() - t0
            self._at, self._seen = now, seen
        if self._value is None:
            return None
        return max(self._value - (now - self._at), 0.0)

    def _learn_history(self, engine: RunView) -> dict[str, float]:
        if self._history is None:  # at the first refresh: only attempts from before this run
            from rota.plan.eta import history_s

            self._history = history_s(engine.store)
        return self._history


def _remaining(engine: RunView, now: float, history_s: dict[str, float]) -> float | None:
    from rota.plan.eta import remaining_s

    tasks = [lv.task for lv in engine.live.values()]
    try:  # the engine's tasks are their own progress records (state, started_at, ended_at)
        return remaining_s(tasks, engine.machine, engine.live, now, history_s)
    except Exception:  # noqa: BLE001 - an ETA must never stop the run; show none
        return None


def snapshot(
    engine: RunView, gpu_live: dict[int, tuple[float, int]] | None = None, eta: EtaTracker | None = None
) -> Snapshot:
    """Build a Snapshot from a running engine (read through :class:`~rota.ui.view.RunView`, so ui/ imports no engine).
    ``eta``: the tracker that throttles the ETA (a fresh one computes it now)."""
    now = time.time()
    m = engine.machine
    booked: dict[int, int] = {g.index: 0 for g in m.gpus}
    on_gpu: dict[int, list[str]] = {g.index: [] for g in m.gpus}
    cpus = mem = 0
    running = []
    for lv in engine.running.values():
        p = lv.placement
        if p is not None:
            for i, b in zip(p.gpus, p.gpu_bytes, strict=False):
                booked[i] = booked.get(i, 0) + b
                on_gpu.setdefault(i, []).append(lv.task.name)
            cpus += p.cpus
            mem += p.memory_bytes
        running.append(
            TaskView(lv.task.name, p.gpus if p else (), now - (lv.started_at or now), lv.task.estimate_s,
                     read_progress(lv.out) if lv.task.shard is not None or lv.out else None, lv.queued)
        )
    gpus = tuple(
        GpuView(g.index, g.name, g.memory_bytes, booked[g.index], tuple(on_gpu[g.index]),
                *(gpu_live.get(g.index, (None, None)) if gpu_live else (None, None)))
        for g in m.gpus
    ) + _given_back(engine, m, booked, on_gpu)
    failures = tuple(
        (lv.task.name, lv.reason, lv.log_path or "")
        for lv in engine.live.values() if lv.state == S.FAILED
    )[-5:]
    fc = forecasts(engine)
    f = fc.forecast if fc is not None else None
    if f is not None:  # the controller's forecast: the ETA is its simulation's makespan, counted down
        eta_s = None if f.makespan_s is None else max(f.makespan_s - (now - f.at), 0.0)
    else:  # no forecaster, or none made yet (the first frame, before the first launch)
        eta_s = (eta or EtaTracker()).eta_s(engine, now)
    return Snapshot(
        now=now, started_at=engine.started_at, gpus=gpus, cpus_total=m.cpus, cpus_booked=cpus,
        memory_total=m.memory_bytes, memory_booked=mem, running=tuple(sorted(running, key=lambda r: r.name)),
        counts=engine.counts(), total=len(engine.live), eta_s=eta_s, failures=failures,
        recent=tuple(engine.events[-8:]), waiting=_waiting(engine, fc),
    )


def _given_back(engine: RunView, m: Machine, booked: dict[int, int],
                on_gpu: dict[int, list[str]]) -> tuple[GpuView, ...]:
    """GPUs a live ``--gpus`` change gave back while tasks still run there: shown (marked) until
    those tasks end, so a running task's GPU never vanishes from the dashboard."""
    kept = set(m.gpu_indices)
    base = getattr(engine, "base_machine", None)  # the machine the run started with (Engine.base_machine)
    sizes = {g.index: (g.name, g.memory_bytes) for g in base.gpus} if base is not None else {}
    return tuple(
        GpuView(i, sizes.get(i, ("", booked[i]))[0], sizes.get(i, ("", booked[i]))[1], booked[i],
                tuple(on_gpu[i]), given_back=True)
        for i in sorted(on_gpu) if i not in kept and on_gpu[i]
    )


WAITING_SHOWN = 5  # pending tasks the dashboard explains


def _waiting(engine: RunView, fc: Forecasts | None) -> tuple[tuple[str, str, float | None], ...]:
    """The first pending tasks (by predicted start, then file order) with their reasons."""
    if fc is None or not fc.reasons:
        return ()
    slots = fc.forecast.slots if fc.forecast is not None else {}
    rows = [(name, r.text, slots[name][0] if name in slots else None) for name, r in fc.reasons.items()
            if name in engine.live and engine.live[name].state == S.PENDING]
    order = {name: i for i, name in enumerate(engine.live)}
    rows.sort(key=lambda w: (w[2] is None, w[2] or 0.0, order[w[0]]))
    return tuple(rows[:WAITING_SHOWN])
