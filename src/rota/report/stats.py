"""Numbers for reports: mean, sample std and Student-t confidence intervals,
metrics grouped by matrix variables, the task table and GPU-memory flags.

Pure functions of :class:`~rota.report.model.TaskRow` sequences; no scipy at
runtime (:func:`~rota.report.tdist.t_ppf` inverts the Student t CDF itself).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rota.core.intervals import union_length
from rota.report.model import ReportData, ReportError, TaskRow
from rota.report.tdist import betainc, t_cdf, t_ppf

__all__ = [
    "GroupRow",
    "MemoryFlag",
    "RunSummary",
    "Summary",
    "TaskTableRow",
    "betainc",
    "bootstrap_ci",
    "default_by",
    "group_metrics",
    "memory_flags",
    "metric_bounds",
    "metric_names",
    "run_summary",
    "summarize",
    "t_cdf",
    "t_ppf",
    "task_table",
]

_REPLICATE_NAMES = frozenset({"seed", "seeds", "rep", "repeat", "replicate", "trial", "fold"})


# --------------------------------------------------------------- summaries


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof=1) and a Student-t confidence interval.

    With ``n == 1`` the spread is unknown: ``std``, ``ci_low`` and ``ci_high`` are ``None``.
    ``method`` is how the interval was made: ``"t"`` (Student t), ``"bootstrap"``
    (percentile bootstrap of the mean, used where the t-interval leaves the
    metric's range), ``""`` without an interval.
    """

    mean: float
    std: float | None
    n: int
    ci_low: float | None
    ci_high: float | None
    confidence: float = 0.95
    method: str = "t"


Bounds = tuple[float | None, float | None]
"""A metric's possible range ``(low, high)``; ``None``: unbounded on that side."""

BOOTSTRAP_RESAMPLES = 4000


def metric_bounds(values: Iterable[float]) -> Bounds:
    """The range a metric evidently lives in, from every value it took in the run:
    ``(0, 1)`` when all lie in [0, 1] (accuracy, AUC, a rate), ``(0, None)`` when
    none is negative (a loss, a time), else unbounded."""
    xs = [v for v in values if math.isfinite(v)]
    if xs and all(0.0 <= v <= 1.0 for v in xs):
        return (0.0, 1.0)
    if xs and all(v >= 0.0 for v in xs):
        return (0.0, None)
    return (None, None)


def bootstrap_ci(xs: Sequence[float], confidence: float, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``xs`` (deterministic: a fixed seed).

    Always inside ``[min(xs), max(xs)]``, so it respects any range the values respect.
    """
    import random

    rng = random.Random(0)  # the same report twice gives the same interval
    n = len(xs)
    means = sorted(statistics.fmean(rng.choices(xs, k=n)) for _ in range(resamples))
    alpha = (1.0 - confidence) / 2.0
    lo = means[min(resamples - 1, max(0, int(math.floor(alpha * resamples))))]
    hi = means[min(resamples - 1, max(0, int(math.ceil((1.0 - alpha) * resamples)) - 1))]
    return lo, hi


def summarize(values: Iterable[float], confidence: float = 0.95, bounds: Bounds = (None, None)) -> Summary:
    """Summarize finite values: mean, std (ddof=1), ``confidence`` Student-t CI on the mean.

    Where the t-interval leaves ``bounds`` (the metric's possible range, e.g.
    ``[0.27, 1.30]`` for an accuracy), the t model is evidently wrong for these
    values, and the interval is a percentile bootstrap instead (``method``).

    Raises :class:`ReportError` for no values, a non-finite value, or a
    confidence outside (0, 1).
    """
    xs = [float(v) for v in values]
    if not xs:
        raise ReportError("cannot summarize an empty set of values")
    if not all(math.isfinite(x) for x in xs):
        raise ReportError(
            f"cannot summarize non-finite values: {[x for x in xs if not math.isfinite(x)]}"
        )
    if not 0.0 < confidence < 1.0:
        raise ReportError(f"confidence must be between 0 and 1, found {confidence}")
    n = len(xs)
    mean = statistics.fmean(xs)
    if n == 1:
        return Summary(mean, None, 1, None, None, confidence, "")
    std = statistics.stdev(xs)
    half = t_ppf(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    low, high = bounds
    if (low is not None and mean - half < low) or (high is not None and mean + half > high):
        lo, hi = bootstrap_ci(xs, confidence)
        # a percentile interval of a very skewed sample could miss its own mean: widen to it
        return Summary(mean, std, n, min(lo, mean), max(hi, mean), confidence, "bootstrap")
    return Summary(mean, std, n, mean - half, mean + half, confidence)


@dataclass(frozen=True)
class GroupRow:
    """One metric aggregated over the tasks of one group.

    ``vars`` are the grouping variables and their values (missing ones read
    ``"-"``); ``tasks`` the succeeded tasks that reported the metric;
    ``non_finite`` how many of them reported NaN/inf (left out of ``summary``).
    """

    base: str | None
    vars: dict[str, str]
    metric: str
    summary: Summary
    tasks: tuple[str, ...]
    non_finite: int = 0


def default_by(tasks: Sequence[TaskRow]) -> list[str]:
    """Matrix variables to group by when the user names none: all but replicate-like
    ones (``seed``, names containing ``seed``, ``rep``, ``repeat``, ``trial``, ``fold``)."""
    names: dict[str, None] = {}
    for t in tasks:
        for k in t.vars:
            if k.lower() not in _REPLICATE_NAMES and "seed" not in k.lower():
                names.setdefault(k, None)
    return list(names)


def group_metrics(
    tasks: Sequence[TaskRow], by: Sequence[str], confidence: float = 0.95
) -> list[GroupRow]:
    """Group succeeded tasks by ``(base, *by variables)`` and summarize every metric
    over the other variables (e.g. over seeds).

    Only ``succeeded`` tasks count (``cached`` ones too: their results are the
    earlier successful run). Sweep trials (``TaskRow.trial``) are left out: they
    are different configurations, not replicates (the sweep section shows them).
    Groups, and metrics inside a group, keep the order
    in which they first appear in ``tasks``. A group whose metric has only
    non-finite values is left out. ``by=[]`` aggregates each base as a whole.
    Each interval respects the metric's range over the run (:func:`metric_bounds`).
    """
    groups: dict[tuple[str | None, tuple[str, ...]], dict[str, list[tuple[str, float]]]] = {}
    for t in tasks:
        if t.state not in ("succeeded", "cached") or t.trial is not None:
            continue
        key = (t.base, tuple(str(t.vars.get(v, "-")) for v in by))
        metrics = groups.setdefault(key, {})
        for name, value in t.metrics.items():
            metrics.setdefault(name, []).append((t.name, float(value)))
    seen: dict[str, list[float]] = {}
    for metrics in groups.values():
        for name, pairs in metrics.items():
            seen.setdefault(name, []).extend(v for _, v in pairs)
    bounds = {name: metric_bounds(vs) for name, vs in seen.items()}
    rows: list[GroupRow] = []
    for (base, values), metrics in groups.items():
        for metric, pairs in metrics.items():
            finite = [(n, v) for n, v in pairs if math.isfinite(v)]
            if not finite:
                continue
            rows.append(
                GroupRow(
                    base=base,
                    vars=dict(zip(by, values, strict=True)),
                    metric=metric,
                    summary=summarize([v for _, v in finite], confidence, bounds[metric]),
                    tasks=tuple(n for n, _ in finite),
                    non_finite=len(pairs) - len(finite),
                )
            )
    return rows


# --------------------------------------------------------------- task table


@dataclass(frozen=True)
class TaskTableRow:
    """One line of the task table; ``duration_s`` is ``None`` unless the task has both ends."""

    name: str
    state: str
    attempts: int
    duration_s: float | None
    gpus: tuple[int, ...]
    cpus: int
    gpu_memory_bytes: int | None
    peak_gpu_memory_bytes: int | None
    exit_code: int | None
    reason: str
    metrics: dict[str, float]


def metric_names(tasks: Sequence[TaskRow]) -> list[str]:
    """Every metric name, in order of first appearance."""
    names: dict[str, None] = {}
    for t in tasks:
        for k in t.metrics:
            names.setdefault(k, None)
    return list(names)


def task_table(tasks: Sequence[TaskRow]) -> list[TaskTableRow]:
    """Rows sorted by start time (tasks that never started last, in input order)."""
    order = sorted(
        range(len(tasks)),
        key=lambda i: (tasks[i].start_s is None, tasks[i].start_s or 0.0, i),
    )
    return [
        TaskTableRow(
            name=t.name,
            state=t.state,
            attempts=t.attempts,
            duration_s=t.duration_s,
            gpus=t.gpus,
            cpus=t.cpus,
            gpu_memory_bytes=t.gpu_memory_bytes,
            peak_gpu_memory_bytes=t.peak_gpu_memory_bytes,
            exit_code=t.exit_code,
            reason=t.reason,
            metrics=dict(t.metrics),
        )
        for t in (tasks[i] for i in order)
    ]


# --------------------------------------------------------------- memory flags


@dataclass(frozen=True)
class MemoryFlag:
    """A task whose declared ``gpu_memory`` is far from what it used.

    ``kind`` is ``"over"`` (declared > ratio x peak: GPU space wasted, fewer tasks
    packed) or ``"under"`` (peak > declared: neighbours risk OOM).
    ``suggested_bytes`` is the peak plus 20 %, rounded up to a whole GiB.
    """

    task: str
    kind: str
    declared_bytes: int
    peak_bytes: int
    suggested_bytes: int
    message: str


def _gib_up(n: float) -> int:
    return max(1, math.ceil(n / 2**30)) * 2**30


def memory_flags(tasks: Sequence[TaskRow], ratio: float = 2.0) -> list[MemoryFlag]:
    """Flag tasks with both a declared and a measured GPU memory that disagree.

    ``ratio`` must be > 1. Tasks missing either figure are never flagged.
    """
    if not ratio > 1.0:
        raise ReportError(f"memory flag ratio must be > 1, found {ratio}")
    flags: list[MemoryFlag] = []
    for t in tasks:
        declared, peak = t.gpu_memory_bytes, t.peak_gpu_memory_bytes
        if declared is None or peak is None:
            continue
        suggested = _gib_up(peak * 1.2)
        gib = 2**30
        if peak > declared:
            kind = "under"
            message = (
                f"{t.name}: used {peak / gib:.1f}GB per GPU but declared "
                f"{declared / gib:.1f}GB; set gpu_memory: {suggested // gib}GB"
            )
        elif declared > ratio * peak:
            kind = "over"
            message = (
                f"{t.name}: declared {declared / gib:.1f}GB per GPU but used only "
                f"{peak / gib:.1f}GB; gpu_memory: {suggested // gib}GB would pack more tasks"
            )
        else:
            continue
        flags.append(MemoryFlag(t.name, kind, declared, peak, suggested, message))
    return flags


# --------------------------------------------------------------- run summary


@dataclass(frozen=True)
class RunSummary:
    """Headline figures of a run.

    ``wall_s``: from the run's origin to its horizon (see :class:`ReportData`).
    ``gpu_busy_pct``: share of GPU-time (GPUs x wall) during which at least one
    task held the GPU, in percent (``None`` without GPUs or wall time).
    ``mean_util_pct``: mean of all sampled utilisations (``None`` without samples).
    """

    wall_s: float | None
    states: dict[str, int]
    gpu_busy_pct: float | None
    mean_util_pct: float | None
    n_tasks: int




def run_summary(data: ReportData) -> RunSummary:
    """Compute :class:`RunSummary` from the data (pure; running tasks end at the horizon)."""
    origin, horizon = data.origin_s, data.horizon_s
    wall = horizon - origin if origin is not None and horizon is not None else None
    busy: float | None = None
    indices = [g.index for g in data.gpus] or sorted({g for t in data.tasks for g in t.gpus})
    if wall and wall > 0 and indices and horizon is not None:
        per_gpu: dict[int, list[tuple[float, float]]] = {i: [] for i in indices}
        for t in data.tasks:
            if t.start_s is None:
                continue
            end = t.end_s if t.end_s is not None else horizon
            for g in t.gpus:
                per_gpu.setdefault(g, []).append((t.start_s, end))
        used = sum(union_length(v) for v in per_gpu.values())
        busy = 100.0 * used / (wall * len(per_gpu))
    samples = [
        s.util_pct for s in data.gpu_samples if s.util_pct is not None and math.isfinite(s.util_pct)
    ]
    util = statistics.fmean(samples) if samples else None
    return RunSummary(wall, data.state_counts(), busy, util, len(data.tasks))
