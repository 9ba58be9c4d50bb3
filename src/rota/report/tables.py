"""The terminal report's tables, laid out for the width they are printed at.

One table per task group (the spec task a matrix, shards or sweep expanded;
tasks that are alone in their group share one table). A group's metrics are
columns when they fit the width, else rows under each task (a ``metric`` and a
``value`` column), so a cell is never cut to ``dura…``. The choice is made at
render time (:class:`GroupedTasks` is a rich renderable), so a terminal of 160
columns and a pipe (80) each get a table that fits. Every column folds rather
than truncating when even the narrow layout does not fit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Literal

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from rota.report.model import TaskRow
from rota.report.stats import GroupRow, metric_names, task_table
from rota.units import format_duration, format_size

STATE_COLORS: dict[str, str] = {
    "succeeded": "#2ca02c",
    "failed": "#d62728",
    "interrupted": "#ff7f0e",
    "cancelled": "#e377c2",
    "running": "#1f77b4",
    "launching": "#aec7e8",
    "cached": "#9467bd",
    "skipped": "#bcbd22",
    "pending": "#7f7f7f",
    "": "#17becf",
}
"""Hex colour per task state (``""``: an item without state, e.g. a planned one)."""

_WIDE = 10_000  # a width no table reaches: measures a table's natural minimum


def fmt_value(x: float | None) -> str:
    """A metric value with 4 significant digits; ``-`` for unknown."""
    if x is None or not math.isfinite(x):
        return "-" if x is None else str(x)
    return f"{x:.4g}"


def fmt_mean_std(mean: float, std: float | None) -> str:
    """``0.9123 ± 0.012``, ``1079 ± 740`` (``± -`` when the spread is unknown): the spread with two
    significant digits, never in exponent notation where the mean is written without one
    (``.2g`` wrote a standard deviation of 740 as ``7e+02``)."""
    if std is None:
        return f"{mean:.4g} ± -"
    spread = f"{std:.2g}"
    if "e" in spread and 1 <= abs(std) < 1e15:
        spread = f"{float(spread):.0f}"  # 7.4e+02 -> 740: the two digits, as a whole number
    return f"{mean:.4g} ± {spread}"


def fmt_ci(low: float | None, high: float | None) -> str:
    """``[0.88, 0.94]`` or ``-``."""
    return "-" if low is None or high is None else f"[{low:.4g}, {high:.4g}]"


def _mem(peak: int | None, declared: int | None) -> str:
    p = format_size(peak) if peak is not None else "-"
    return f"{p} / {format_size(declared)}" if declared is not None else p


def task_groups(tasks: Sequence[TaskRow]) -> list[tuple[str | None, list[TaskRow]]]:
    """``(group name, tasks)`` in start order; tasks alone in their group share one ``None`` group,
    placed where its first task starts."""
    order = {row.name: k for k, row in enumerate(task_table(tasks))}
    by_base: dict[str, list[TaskRow]] = {}
    for t in sorted(tasks, key=lambda t: order[t.name]):
        by_base.setdefault(t.base or t.name, []).append(t)
    out: list[tuple[str | None, list[TaskRow]]] = []
    singles: list[TaskRow] | None = None
    for base, members in by_base.items():
        if len(members) > 1:
            out.append((base, members))
        elif singles is None:
            singles = list(members)
            out.append((None, singles))
        else:
            singles.extend(members)
    return out


def _table(title: Text) -> Table:
    return Table(title=title, title_justify="left")


def _task_table(title: Text, tasks: Sequence[TaskRow], metrics: Literal["columns", "rows", "none"]) -> Table:
    rows = task_table(tasks)
    names = metric_names(tasks) if metrics != "none" else []
    with_mem = any(r.gpu_memory_bytes is not None or r.peak_gpu_memory_bytes is not None for r in rows)
    table = _table(title)
    table.add_column("task", overflow="fold", no_wrap=True)
    table.add_column("state", overflow="fold", no_wrap=True)
    table.add_column("att.", justify="right", overflow="fold", no_wrap=True)
    table.add_column("duration", justify="right", overflow="fold", no_wrap=True)
    table.add_column("GPUs", overflow="fold")
    if with_mem:
        table.add_column("GPU mem peak / booked", justify="right", overflow="fold")
    as_rows = metrics == "rows" and bool(names)
    if as_rows:
        table.add_column("metric", overflow="fold", no_wrap=True)
        table.add_column("value", justify="right", overflow="fold", no_wrap=True)
    else:
        for m in names:
            table.add_column(Text(m), justify="right", overflow="fold", no_wrap=True)
    for row in rows:
        fixed: list[Text | str] = [
            Text(row.name),
            Text(row.state, style=STATE_COLORS.get(row.state, "")),
            str(row.attempts),
            format_duration(row.duration_s),
            ",".join(map(str, row.gpus)) or f"cpu x{row.cpus}",
        ]
        if with_mem:
            fixed.append(_mem(row.peak_gpu_memory_bytes, row.gpu_memory_bytes))
        if not as_rows:
            table.add_row(*fixed, *(fmt_value(row.metrics.get(m)) for m in names))
            continue
        present = [m for m in names if m in row.metrics] or [""]
        for k, m in enumerate(present):
            cells = fixed if k == 0 else [""] * len(fixed)
            table.add_row(*cells, Text(m), fmt_value(row.metrics.get(m)) if m else "")
    return table


def _metric_rows(title: Text, tasks: Sequence[TaskRow]) -> Table:
    """The metrics of a group as rows: task, metric, value (the narrowest layout)."""
    names = metric_names(tasks)
    table = _table(title)
    table.add_column("task", overflow="fold", no_wrap=True)
    table.add_column("metric", overflow="fold", no_wrap=True)
    table.add_column("value", justify="right", overflow="fold", no_wrap=True)
    for row in task_table(tasks):
        for k, m in enumerate(n for n in names if n in row.metrics):
            table.add_row(Text(row.name) if k == 0 else "", Text(m), fmt_value(row.metrics.get(m)))
    return table


def _fits(console: Console, options: ConsoleOptions, table: Table) -> bool:
    need = Measurement.get(console, options.update_width(_WIDE), table).minimum
    return need <= options.max_width


class GroupedTasks:
    """The task tables, one per group; metrics as columns where they fit, else as rows."""

    def __init__(self, tasks: Sequence[TaskRow]) -> None:
        self.groups = task_groups(tasks)

    def tables(self, console: Console, options: ConsoleOptions) -> Iterator[Table]:
        """Per group, the first layout that fits: metrics as columns; as rows beside each
        task; or a task table and a separate (task, metric, value) table."""
        for base, members in self.groups:
            label = "Tasks" if base is None else f"Tasks of {base}"
            title = Text(f"{label} ({len(members)})")
            layouts: tuple[Literal["columns", "rows"], ...] = ("columns", "rows")
            for layout in layouts:
                table = _task_table(title, members, layout)
                if _fits(console, options, table):
                    yield table
                    break
            else:
                yield _task_table(title, members, "none")
                if metric_names(members):
                    what = "Metrics" if base is None else f"Metrics of {base}"
                    yield _metric_rows(Text(what), members)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.tables(console, options)


def group_tables(groups: Sequence[GroupRow], by: Sequence[str]) -> list[Table]:
    """Metrics over seeds: one table per spec task, one row per (values of ``by``, metric).

    A spec task that ran as one task only has no spread to show: its metrics are
    in its task table, and it gets no table here."""
    per_base: dict[str | None, list[GroupRow]] = {}
    for g in groups:
        per_base.setdefault(g.base, []).append(g)
    per_base = {b: rows for b, rows in per_base.items() if len({t for g in rows for t in g.tasks}) > 1}
    out: list[Table] = []
    for base, rows in per_base.items():
        # only the variables this spec task has: a task without one groups under "-"
        mine = [v for v in by if any(g.vars.get(v, "-") != "-" for g in rows)]
        what = f"Metrics of {base}" if base else "Metrics"
        if all(g.summary.n <= 1 for g in rows):
            # No replicates (a grid without seeds): no spread or interval to show, only values;
            # the columns of mean ± std, n and CI said "± -", "1" and "-" on every row.
            table = _table(Text(f"{what} by {', '.join(mine) or 'task'} (one run each)"))
            for v in mine:
                table.add_column(Text(v), overflow="fold")
            table.add_column("metric", overflow="fold", no_wrap=True)
            table.add_column("value", justify="right", overflow="fold", no_wrap=True)
            for g in rows:
                table.add_row(*(Text(g.vars[v]) for v in mine), Text(g.metric), fmt_value(g.summary.mean))
            out.append(table)
            continue
        table = _table(Text(f"{what} by {', '.join(mine) or 'task'} (95% CI)"))
        for v in mine:
            table.add_column(Text(v), overflow="fold")
        table.add_column("metric", overflow="fold", no_wrap=True)
        table.add_column("mean ± std", justify="right", overflow="fold", no_wrap=True)
        table.add_column("n", justify="right", overflow="fold", no_wrap=True)
        table.add_column("95% CI", justify="right", overflow="fold", no_wrap=True)
        for g in rows:
            s = g.summary
            table.add_row(
                *(Text(g.vars[v]) for v in mine),
                Text(g.metric),
                fmt_mean_std(s.mean, s.std),
                str(s.n),
                fmt_ci(s.ci_low, s.ci_high) + (" *" if s.method == "bootstrap" else ""),
            )
        if any(g.summary.method == "bootstrap" for g in rows):
            table.caption = "* bootstrap interval: the t-interval left the metric's range"
            table.caption_justify = "left"
        out.append(table)
    return out
