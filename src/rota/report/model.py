"""What a report is made of: plain, frozen data filled from the state store.

The report layer never reads the store itself. The caller (``rota report``)
builds a :class:`ReportData` from SQLite and hands it to :mod:`rota.report.stats`,
:mod:`rota.report.render` or :mod:`rota.report.html`, which are pure functions of
it. Times are epoch seconds in :class:`TaskRow` and :class:`GpuSample`, and
seconds *relative to the start of the run (or plan)* in :class:`~rota.lanes.Lane` (re-exported here) and in
``TaskRow.planned_*``.

Contracts checked at construction (a :class:`ReportError` otherwise):

- ``TaskRow.state`` is one of :data:`TASK_STATES`;
- ``end_s >= start_s`` when both are known; ``attempts >= 0``;
- a ``Lane`` item ends no earlier than it starts (checked in :mod:`rota.lanes`).

Sequences given as lists are stored as tuples, so every object is immutable
except the ``vars``/``metrics`` dicts, which callers must not mutate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rota.errors import ReportError
from rota.lanes import Lane, LaneItem, LaneLike, as_lanes

__all__ = ["FAILED_STATES", "TASK_STATES", "GpuInfo", "GpuSample", "Lane", "LaneItem", "LaneLike", "ReportData",
           "ReportError", "TaskRow", "as_lanes"]

TASK_STATES: tuple[str, ...] = (
    "succeeded",
    "failed",
    "skipped",
    "cached",
    "interrupted",
    "cancelled",
    "running",
    "launching",
    "pending",
)
"""Every state a task row may have, in the order reports list them
(``launching``: the store's state between placement and the process start)."""

FAILED_STATES: frozenset[str] = frozenset({"failed", "interrupted"})
"""States whose log tail is shown in the failures section."""


@dataclass(frozen=True)
class TaskRow:
    """One task of a run, as the report sees it.

    ``gpus`` are the GPU indices the task held (empty for a CPU task);
    ``gpu_memory_bytes`` is the *declared* reservation per GPU (``None``: the
    whole GPU) and ``peak_gpu_memory_bytes`` the *measured* peak per GPU
    (``None``: not measured). ``vars`` are the matrix variables that produced
    the task; ``base`` is the spec task it was expanded from (``None`` when the
    caller does not know): groups never mix two bases.
    ``planned_start_s``/``planned_end_s`` come from the plan, in seconds
    relative to the plan's start; ``duration_source`` says where the planned
    duration came from (``estimate``, ``history``, ``default``; ``None``:
    unknown). ``trial`` is the sweep trial number of a sweep's slot task
    (``None`` for any other task): trials are not replicates, so metrics are
    never averaged over them. ``code`` is the code record of its latest attempt that has one (git
    commit, dirty flag and diff hash, or the script's hash: :mod:`rota.engine.codever`; ``None``: none).
    """

    name: str
    state: str
    attempts: int = 0
    exit_code: int | None = None
    reason: str = ""
    start_s: float | None = None
    end_s: float | None = None
    gpus: tuple[int, ...] = ()
    cpus: int = 0
    gpu_memory_bytes: int | None = None
    peak_gpu_memory_bytes: int | None = None
    estimate_s: float | None = None
    vars: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    log_path: str | None = None
    log_tail: str = ""
    planned_start_s: float | None = None
    planned_end_s: float | None = None
    base: str | None = None
    trial: int | None = None
    duration_source: str | None = None
    code: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.state not in TASK_STATES:
            raise ReportError(
                f"task {self.name!r}: state must be one of {', '.join(TASK_STATES)}, "
                f"found {self.state!r}"
            )
        if self.attempts < 0:
            raise ReportError(f"task {self.name!r}: attempts must be >= 0, found {self.attempts}")
        if self.start_s is not None and self.end_s is not None and self.end_s < self.start_s:
            raise ReportError(
                f"task {self.name!r}: end_s ({self.end_s}) is before start_s ({self.start_s})"
            )
        object.__setattr__(self, "gpus", tuple(int(g) for g in self.gpus))

    @property
    def duration_s(self) -> float | None:
        """Wall time of the last run, ``None`` unless both ends are known."""
        if self.start_s is None or self.end_s is None:
            return None
        return self.end_s - self.start_s

    @property
    def planned_duration_s(self) -> float | None:
        """Planned wall time: ``planned_end_s - planned_start_s``, else ``estimate_s``."""
        if self.planned_start_s is not None and self.planned_end_s is not None:
            return self.planned_end_s - self.planned_start_s
        return self.estimate_s


@dataclass(frozen=True)
class GpuSample:
    """One utilisation/memory reading of one GPU at epoch time ``t_s``.

    A reading NVML could not give is ``None`` (charts show a gap there).
    """

    t_s: float
    gpu: int
    util_pct: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None


@dataclass(frozen=True)
class GpuInfo:
    """One GPU of the machine; :class:`ReportData` also accepts ``(index, name, memory_bytes)``."""

    index: int
    name: str
    memory_bytes: int


@dataclass(frozen=True)
class EarlierAttempt:
    """An attempt of ``task`` that failed and that the run retried (the :class:`TaskRow` is the
    task's latest attempt): the timeline and the memory chart draw it where and when it ran."""

    task: str
    attempt: int
    state: str
    gpus: tuple[int, ...]
    start_s: float
    end_s: float


@dataclass(frozen=True)
class ReportData:
    """Everything one report shows: the run, the machine, the tasks, the samples.

    ``started_at``/``ended_at`` are epoch seconds; ``ended_at`` is ``None`` while
    the run is still going. ``read_at`` is when the state was read (set by
    :func:`rota.report.load.load_report` while a task runs): a running task's bar,
    booked memory and the wall time reach it. ``gpus`` accepts ``(index, name, memory_bytes)``
    tuples and stores :class:`GpuInfo`.
    """

    run_id: str
    spec_path: str
    gpus: tuple[GpuInfo, ...] = ()
    cpus: int = 0
    tasks: tuple[TaskRow, ...] = ()
    gpu_samples: tuple[GpuSample, ...] = ()
    started_at: float | None = None
    ended_at: float | None = None
    read_at: float | None = None
    earlier: tuple[EarlierAttempt, ...] = ()

    def __post_init__(self) -> None:
        gpus = tuple(g if isinstance(g, GpuInfo) else GpuInfo(*g) for g in self.gpus)
        object.__setattr__(self, "gpus", gpus)
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "gpu_samples", tuple(self.gpu_samples))
        object.__setattr__(self, "earlier", tuple(self.earlier))
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ReportError(f"run {self.run_id!r}: duplicate task names {dup}")

    @property
    def origin_s(self) -> float | None:
        """Epoch time that relative charts count from: ``started_at``, else the first start."""
        if self.started_at is not None:
            return self.started_at
        starts = [t.start_s for t in self.tasks if t.start_s is not None]
        return min(starts) if starts else None

    @property
    def horizon_s(self) -> float | None:
        """Epoch time the run ended, or the latest time any row or sample mentions (or
        ``read_at``, where set: a task still running has run until then)."""
        if self.ended_at is not None:
            return self.ended_at
        times = [t for row in self.tasks for t in (row.start_s, row.end_s) if t is not None]
        times += [s.t_s for s in self.gpu_samples]
        if self.read_at is not None:
            times.append(self.read_at)
        return max(times) if times else None

    def state_counts(self) -> dict[str, int]:
        """``{state: count}`` for the states present, in :data:`TASK_STATES` order."""
        counts = {s: 0 for s in TASK_STATES}
        for t in self.tasks:
            counts[t.state] += 1
        return {s: n for s, n in counts.items() if n}
