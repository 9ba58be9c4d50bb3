"""A frozen picture of a run, built from the engine, rendered by pure functions."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from rota.store import base as S


@dataclass(frozen=True)
class GpuView:
    index: int
    name: str
    total_bytes: int
    booked_bytes: int
    tasks: tuple[str, ...]
    util_pct: float | None = None
    used_bytes: int | None = None


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


def snapshot(engine: Any, gpu_live: dict[int, tuple[float, int]] | None = None) -> Snapshot:
    """Build a Snapshot from an Engine (duck-typed to keep ui/ free of engine imports)."""
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
    )
    failures = tuple(
        (lv.task.name, lv.reason, lv.log_path or "")
        for lv in engine.live.values() if lv.state == S.FAILED
    )[-5:]
    return Snapshot(
        now=now, started_at=engine.started_at, gpus=gpus, cpus_total=m.cpus, cpus_booked=cpus,
        memory_total=m.memory_bytes, memory_booked=mem, running=tuple(sorted(running, key=lambda r: r.name)),
        counts=engine.counts(), total=len(engine.live), eta_s=engine.eta_s(now), failures=failures,
        recent=tuple(engine.events[-8:]),
    )
