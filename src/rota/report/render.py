"""Turn report data into JSON, CSV, rich tables and a text Gantt chart.

Pure functions, no I/O. :func:`gantt_text` takes generic :class:`Lane` rows
so that ``rota plan`` can draw simulated schedules with it too.

JSON format (``to_json``, ``"format": "rota-report/1"``; additions only within /1)::

    {
      "format": "rota-report/1",
      "run": {"run_id", "spec_path", "started_at", "ended_at", "wall_s",
              "states": {state: count}, "gpu_busy_pct", "mean_util_pct", "n_tasks"},
      "machine": {"gpus": [{"index", "name", "memory_bytes"}], "cpus"},
      "by": [variable, ...],
      "tasks": [{"name", "base", "state", "attempts", "exit_code", "reason",
                 "start_s", "end_s", "duration_s", "gpus": [int], "cpus",
                 "gpu_memory_bytes", "peak_gpu_memory_bytes", "estimate_s",
                 "planned_start_s", "planned_end_s", "vars": {str: str},
                 "metrics": {str: float|null}, "log_path", "log_tail",
                 "trial": int|null, "duration_source": "estimate"|"history"|"default"|null}],
      "groups": [{"base", "vars": {var: value}, "metric", "n", "mean", "std",
                  "ci_low", "ci_high", "confidence", "tasks": [name], "non_finite",
                  "ci_method": "t"|"bootstrap"|""}],
      "flags": [{"task", "kind": "over"|"under", "declared_bytes", "peak_bytes",
                 "suggested_bytes", "message"}]
    }

Times are epoch seconds, sizes bytes, durations seconds; unknown or
non-finite numbers are ``null``. Tasks are listed by start time (never-started
last), groups in first-appearance order.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any, Literal

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from rota.report.gantt import gantt_text, lanes_from_report, stack_rows
from rota.report.model import FAILED_STATES, Lane, ReportData, ReportError
from rota.report.stats import (
    GroupRow,
    group_metrics,
    memory_flags,
    metric_names,
    run_summary,
    task_table,
)
from rota.report.tables import (
    STATE_COLORS,
    GroupedTasks,
    fmt_ci,
    fmt_mean_std,
    fmt_value,
    group_tables,
)
from rota.units import format_duration, format_size

__all__ = [
    "JSON_FORMAT",
    "STATE_COLORS",
    "Lane",
    "fmt_ci",
    "fmt_mean_std",
    "fmt_value",
    "gantt_text",
    "header_lines",
    "lanes_from_report",
    "stack_rows",
    "to_csv",
    "to_json",
    "to_rich_tables",
]

JSON_FORMAT = "rota-report/1"

# --------------------------------------------------------------- JSON / CSV


def _num(x: float | int | None) -> float | int | None:
    if x is None:
        return None
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _group_json(g: GroupRow) -> dict[str, Any]:
    s = g.summary
    return {
        "base": g.base,
        "vars": dict(g.vars),
        "metric": g.metric,
        "n": s.n,
        "mean": _num(s.mean),
        "std": _num(s.std),
        "ci_low": _num(s.ci_low),
        "ci_high": _num(s.ci_high),
        "confidence": s.confidence,
        "tasks": list(g.tasks),
        "non_finite": g.non_finite,
        "ci_method": s.method,
    }


def to_json(data: ReportData, by: Sequence[str]) -> dict[str, Any]:
    """The report as a JSON-serialisable dict; format in the module docstring."""
    summary = run_summary(data)
    order = {row.name: k for k, row in enumerate(task_table(data.tasks))}
    tasks = sorted(data.tasks, key=lambda t: order[t.name])
    return {
        "format": JSON_FORMAT,
        "run": {
            "run_id": data.run_id,
            "spec_path": data.spec_path,
            "started_at": _num(data.started_at),
            "ended_at": _num(data.ended_at),
            "wall_s": _num(summary.wall_s),
            "states": summary.states,
            "gpu_busy_pct": _num(summary.gpu_busy_pct),
            "mean_util_pct": _num(summary.mean_util_pct),
            "n_tasks": summary.n_tasks,
        },
        "machine": {
            "gpus": [
                {"index": g.index, "name": g.name, "memory_bytes": g.memory_bytes}
                for g in data.gpus
            ],
            "cpus": data.cpus,
        },
        "by": list(by),
        "tasks": [
            {
                "name": t.name,
                "base": t.base,
                "state": t.state,
                "attempts": t.attempts,
                "exit_code": t.exit_code,
                "reason": t.reason,
                "start_s": _num(t.start_s),
                "end_s": _num(t.end_s),
                "duration_s": _num(t.duration_s),
                "gpus": list(t.gpus),
                "cpus": t.cpus,
                "gpu_memory_bytes": t.gpu_memory_bytes,
                "peak_gpu_memory_bytes": t.peak_gpu_memory_bytes,
                "estimate_s": _num(t.estimate_s),
                "planned_start_s": _num(t.planned_start_s),
                "planned_end_s": _num(t.planned_end_s),
                "vars": {str(k): str(v) for k, v in t.vars.items()},
                "metrics": {str(k): _num(float(v)) for k, v in t.metrics.items()},
                "log_path": t.log_path,
                "log_tail": t.log_tail,
                "trial": t.trial,
                "duration_source": t.duration_source,
            }
            for t in tasks
        ],
        "groups": [_group_json(g) for g in group_metrics(data.tasks, by)],
        "flags": [
            {
                "task": f.task,
                "kind": f.kind,
                "declared_bytes": f.declared_bytes,
                "peak_bytes": f.peak_bytes,
                "suggested_bytes": f.suggested_bytes,
                "message": f.message,
            }
            for f in memory_flags(data.tasks)
        ],
    }


_TASK_CSV_COLUMNS = (
    "name", "base", "state", "attempts", "exit_code", "start_s", "end_s", "duration_s",
    "gpus", "cpus", "gpu_memory_bytes", "peak_gpu_memory_bytes", "estimate_s",
)  # fmt: skip
_GROUP_CSV_COLUMNS = ("metric", "n", "mean", "std", "ci_low", "ci_high", "confidence")


def _cell(x: object) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return "" if not math.isfinite(x) else repr(x)
    return str(x)


def to_csv(
    data: ReportData, by: Sequence[str], table: Literal["tasks", "groups"] | None = None
) -> str:
    """CSV text of the task table or of the grouped metrics.

    ``table=None`` picks ``"groups"`` when ``by`` is non-empty, else ``"tasks"``.
    Tasks columns: name, base, state, attempts, exit_code, start_s, end_s,
    duration_s, gpus (``0;1``), cpus, gpu_memory_bytes, peak_gpu_memory_bytes,
    estimate_s, then ``var.<name>`` and ``metric.<name>`` columns.
    Groups columns: base, ``var.<name>`` per ``by``, metric, n, mean, std,
    ci_low, ci_high, confidence. Empty cell: unknown.
    """
    kind = table or ("groups" if by else "tasks")
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    if kind == "groups":
        w.writerow(["base", *(f"var.{v}" for v in by), *_GROUP_CSV_COLUMNS])
        for g in group_metrics(data.tasks, by):
            s = g.summary
            w.writerow(
                [_cell(g.base), *(g.vars[v] for v in by), g.metric, s.n]
                + [_cell(x) for x in (s.mean, s.std, s.ci_low, s.ci_high, s.confidence)]
            )
        return out.getvalue()
    if kind != "tasks":
        raise ReportError(f"csv table must be 'tasks' or 'groups', found {kind!r}")
    var_names = list({k: None for t in data.tasks for k in t.vars})
    metrics = metric_names(data.tasks)
    w.writerow(
        [*_TASK_CSV_COLUMNS, *(f"var.{v}" for v in var_names), *(f"metric.{m}" for m in metrics)]
    )
    order = {row.name: k for k, row in enumerate(task_table(data.tasks))}
    for t in sorted(data.tasks, key=lambda t: order[t.name]):
        fixed: list[object] = [t.name, t.base, t.state, t.attempts, t.exit_code, t.start_s]
        fixed += [t.end_s, t.duration_s, ";".join(map(str, t.gpus)), t.cpus]
        fixed += [t.gpu_memory_bytes, t.peak_gpu_memory_bytes, t.estimate_s]
        w.writerow(
            [_cell(x) for x in fixed]
            + [_cell(t.vars.get(v)) for v in var_names]
            + [_cell(t.metrics.get(m)) for m in metrics]
        )
    return out.getvalue()


# --------------------------------------------------------------- rich


def header_lines(data: ReportData) -> list[tuple[str, str]]:
    """``(label, value)`` pairs of the run summary, shared by terminal and HTML headers."""
    s = run_summary(data)
    kinds: dict[tuple[str, int], int] = {}
    for g in data.gpus:
        kinds[(g.name, g.memory_bytes)] = kinds.get((g.name, g.memory_bytes), 0) + 1
    # A declared GPU is named by its size already ("declared 80GB"): say the size once.
    gpus = ", ".join(f"{n}x {name}" if format_size(mem) in name else f"{n}x {name} {format_size(mem)}"
                     for (name, mem), n in kinds.items())
    states = ", ".join(f"{n} {state}" for state, n in s.states.items()) or "no tasks"
    lines = [
        ("run", data.run_id),
        ("spec", data.spec_path),
        ("machine", f"{gpus or 'no GPU'}, {data.cpus} CPU"),
        ("tasks", f"{s.n_tasks}: {states}"),
        ("wall time", format_duration(s.wall_s) + ("" if data.ended_at else " (still running)")),
    ]
    if s.gpu_busy_pct is not None:
        lines.append(("GPU busy", f"{s.gpu_busy_pct:.0f}% of GPU-time held by tasks"))
    if s.mean_util_pct is not None:
        lines.append(("GPU util", f"{s.mean_util_pct:.0f}% mean sampled utilisation"))
    return lines


def to_rich_tables(data: ReportData, by: Sequence[str]) -> list[RenderableType]:
    """Renderables for ``console.print(*...)``: the run header, one task table per
    task group (metrics as columns where they fit the console's width, else as
    rows), the grouped metrics (one table per spec task, when any), GPU-memory
    flags (when any), and one panel per failed or interrupted task with its
    reason and last log lines. No cell is ever cut short with an ellipsis."""
    out: list[RenderableType] = []
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True)
    head.add_column(overflow="fold")
    for label, value in header_lines(data):
        head.add_row(label, Text(value))
    out.append(head)

    out.append(GroupedTasks(data.tasks))
    out.extend(group_tables(group_metrics(data.tasks, by), by))

    flags = memory_flags(data.tasks)
    if flags:
        ft = Table(title="GPU memory declared vs measured", title_justify="left")
        ft.add_column("task", overflow="fold")
        ft.add_column("flag", overflow="fold")
        ft.add_column("advice", overflow="fold")
        for f in flags:
            ft.add_row(Text(f.task), f.kind, Text(f.message))
        out.append(ft)

    for t in data.tasks:
        if t.state in FAILED_STATES:
            tail = "\n".join(t.log_tail.rstrip().splitlines()[-10:])
            body: list[RenderableType] = [
                Text(f"exit {t.exit_code}, {t.attempts} attempt(s): {t.reason or 'no reason'}")
            ]
            if t.log_path:
                body.append(Text(f"log: {t.log_path}", style="dim"))
            if tail:
                body.append(Text(tail, style="dim"))
            title = Text(f"{t.state}: {t.name}")
            out.append(Panel(Group(*body), title=title, border_style="red"))
    return out
