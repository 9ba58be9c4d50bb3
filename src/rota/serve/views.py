"""What the page shows, as pure functions of a ``rota status --json`` object (no I/O, no clock:
``now`` is passed in).

The page never receives a whole 20,000-task run each second: the table is served a page at a
time (filtered and searched here), the timeline the most recent tasks only, GPU series thinned.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from rota.lanes import stack_rows
from rota.report.timeline import group_colors, sub_row_name
from rota.store.base import FINAL, QUEUED

TIMELINE_MAX_TASKS = 400
"""Tasks drawn on the timeline at most: the ones started last (plotly slows beyond a few hundred bars)."""
GPU_MAX_POINTS = 600
"""Samples per GPU sent to the page at most (evenly thinned, the last one always kept)."""
GB = float(1 << 30)
"""Memory on the page is in rota's GB (``80GB`` in a spec is 80 x 2**30 bytes)."""
PAGE_MAX = 500
"""Table rows one request may ask for."""


HELD = "held"
"""Not a stored state: what the table shows (and its filter selects) for a held pending task."""


def shown_state(task: Mapping[str, Any]) -> str:
    """The state the table shows: ``queued`` for a running task its backend still queues, ``held``
    for a pending task ``rota hold`` keeps (the status JSON's ``held``)."""
    if task.get("queued"):
        return QUEUED
    if task.get("held") and task["state"] == "pending":
        return HELD
    return str(task["state"])


def task_page(tasks: Sequence[Mapping[str, Any]], states: Collection[str] | None, query: str,
              offset: int, limit: int) -> dict[str, Any]:
    """``{"matching": N, "offset", "tasks": [...]}``: the tasks in ``states`` (None: all; ``queued``
    selects queued running tasks, ``running`` the others; ``held`` and ``pending`` likewise) whose name, group or reason contains
    ``query`` (case-insensitive), rows ``offset .. offset+limit`` of them, in the run's order."""
    q = query.strip().lower()
    limit = max(0, min(limit, PAGE_MAX))
    offset = max(0, offset)
    out: list[Mapping[str, Any]] = []
    matching = 0
    for t in tasks:
        if states is not None and shown_state(t) not in states:
            continue
        if q and q not in str(t["name"]).lower() and q not in str(t.get("group") or "").lower() \
                and q not in str(t.get("reason") or "").lower():
            continue
        if offset <= matching < offset + limit:
            out.append(t)
        matching += 1
    return {"matching": matching, "offset": offset, "tasks": out}


def plain_page(tasks: Sequence[Mapping[str, Any]], offset: int, limit: int) -> dict[str, Any]:
    """:func:`task_page` without a filter or a search (what most requests ask): a slice."""
    limit = max(0, min(limit, PAGE_MAX))
    offset = max(0, offset)
    return {"matching": len(tasks), "offset": offset, "tasks": list(tasks[offset:offset + limit])}


def lanes_of(task: Mapping[str, Any]) -> list[str]:
    """The timeline rows a task occupies: one per GPU it holds (``gpu 0``), else ``cpu``."""
    gpus = task.get("gpus") or []
    return [f"gpu {g}" for g in gpus] if gpus else ["cpu"]


def timeline(tasks: Sequence[Mapping[str, Any]], now: float, limit: int = TIMELINE_MAX_TASKS) -> dict[str, Any]:
    """The started tasks' bars: ``{"origin_s", "now_s", "shown", "started", "items": [{name, group,
    state, lane, row, start_s, end_s}], "rows": [...]}``, times relative to the first start; a task
    still running ends at ``now``; ``row`` and ``rows``: :func:`stack_lanes`; ``colors``: ``{group:
    colour}`` as the report's figures give them (the palette, in order of first start), so a group
    has one colour on the whole page. Only the ``limit`` tasks that started last are drawn (``shown`` of ``started``)."""
    started = {str(t["name"]): float(t["started_at"]) for t in tasks if is_started(t)}
    return timeline_of(started, {str(t["name"]): t for t in tasks}, now, limit)


def is_started(task: Mapping[str, Any]) -> bool:
    """Whether the timeline draws ``task``: it has started (and its backend no longer queues it)."""
    return task.get("started_at") is not None and not task.get("queued") and task["state"] not in ("pending", "skipped")


def timeline_of(started: Mapping[str, float], by_name: Mapping[str, Mapping[str, Any]], now: float,
                limit: int = TIMELINE_MAX_TASKS) -> dict[str, Any]:
    """:func:`timeline` from ``{task: started_at}`` of the started tasks (kept up to date by
    :class:`rota.serve.table.TaskTable`) and the tasks by name: no pass over every task."""
    if not started:
        return {"origin_s": None, "now_s": 0.0, "shown": 0, "started": 0, "items": [], "rows": [], "colors": {}}
    origin = min(started.values())
    if limit < len(started):  # the limit started last, in start order (sorting floats in C: fast)
        cut = sorted(started.values())[-limit] if limit > 0 else math.inf
        recent = sorted((n for n, s in started.items() if s >= cut), key=started.__getitem__)[-limit:] if limit else []
    else:
        recent = list(started)
    items = []
    for name in recent:
        t = by_name.get(name)
        if t is None:  # gone since (a later read's table: a live edit dropped it)
            continue
        start = started[name] - origin
        ended = t.get("ended_at")
        end = (float(ended) if ended is not None and t["state"] in FINAL else now) - origin
        for lane in lanes_of(t):
            items.append({"name": t["name"], "group": t.get("group") or t["name"], "state": shown_state(t),
                          "lane": lane, "start_s": start, "end_s": max(end, start)})
    return {"origin_s": origin, "now_s": now - origin, "shown": len(recent), "started": len(started),
            "items": items, "rows": stack_lanes(items),
            "colors": group_colors([it["group"] for it in sorted(items, key=lambda it: it["start_s"])])}


def _lane_key(lane: str) -> tuple[int, int, str]:
    """GPU lanes by index (``gpu 2`` before ``gpu 10``), then ``cpu``."""
    index = lane[4:] if lane.startswith("gpu ") else ""
    return (0, int(index), lane) if index.isdigit() else (1, 0, lane)


def stack_lanes(items: list[dict[str, Any]]) -> list[str]:
    """Give each item its ``row``: its lane, or ``gpu 0 · 2``, ``gpu 0 · 3``... for tasks that ran
    on the GPU at the same time (packed by ``gpu_memory``), as the report's timeline draws them;
    returns every row in drawing order (GPUs by index, then cpu). Bars in one row never overlap."""
    per_lane: dict[str, list[dict[str, Any]]] = {}
    for it in items:
        per_lane.setdefault(it["lane"], []).append(it)
    order: list[str] = []
    for lane in sorted(per_lane, key=_lane_key):
        mine = per_lane[lane]
        rows = stack_rows([(it["start_s"], it["end_s"]) for it in mine])
        for it, r in zip(mine, rows, strict=True):
            it["row"] = sub_row_name(lane, r)
        order += [sub_row_name(lane, r) for r in range(max(rows) + 1)]
    return order


def gpu_series(samples: Sequence[Sequence[Any]], max_points: int = GPU_MAX_POINTS) -> list[dict[str, Any]]:
    """GPU samples ``(ts, gpu, util_pct, used_bytes, total_bytes)`` as one series per GPU:
    ``{"gpu", "t", "util_pct", "used_gb", "total_gb"}`` (``None`` where NVML gave nothing),
    thinned to ``max_points``."""
    by_gpu: dict[int, list[Sequence[Any]]] = {}
    for s in samples:
        by_gpu.setdefault(int(s[1]), []).append(s)
    out = []
    for gpu in sorted(by_gpu):
        rows = by_gpu[gpu]
        if len(rows) > max_points:
            step = len(rows) / max_points
            rows = [rows[int(i * step)] for i in range(max_points - 1)] + [rows[-1]]
        total = next((r[4] for r in reversed(rows) if r[4]), None)
        out.append({
            "gpu": gpu,
            "t": [r[0] for r in rows],
            "util_pct": [r[2] for r in rows],
            "used_gb": [None if r[3] is None else r[3] / GB for r in rows],
            "total_gb": None if total is None else total / GB,
        })
    return out


def running_by_gpu(tasks: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """``{"0": [task, ...]}``: the tasks holding each GPU now (queued ones left out)."""
    out: dict[str, list[str]] = {}
    for t in tasks:
        if t["state"] in ("running", "launching") and not t.get("queued"):
            for g in t.get("gpus") or []:
                out.setdefault(str(g), []).append(str(t["name"]))
    return out


def eta_from_predictions(tasks: Sequence[Mapping[str, Any]], now: float) -> float | None:
    """Seconds until the last predicted end (the controller's ``predicted_end_s``), or None when
    no task that is left carries a prediction."""
    ends = [float(t["predicted_end_s"]) for t in tasks
            if t["state"] not in FINAL and t.get("predicted_end_s") is not None]
    return max(0.0, max(ends) - now) if ends else None


def finite(x: float | None) -> float | None:
    """JSON has no NaN or infinity: those become None."""
    return x if x is not None and math.isfinite(x) else None


def results(tasks: Sequence[Mapping[str, Any]], max_rows: int = 200) -> dict[str, Any]:
    """The report's results (:func:`rota.report.stats.group_metrics` over the tasks that
    succeeded but sweep trials, grouped by the report's default variables, intervals over replicates):
    ``{"by": [...], "rows": [{group, vars, metric, mean, low, high, n}]}``, at most ``max_rows``."""
    from rota.report.model import TaskRow
    from rota.report.stats import default_by, group_metrics
    from rota.studies.names import TRIAL_KEY

    # A sweep's trial is another configuration, never a replicate (as in the report, whose rows
    # carry the store's trial): the status JSON says so by the trial number in its params.
    rows = [TaskRow(name=str(t["name"]), state=str(t["state"]), vars=t.get("vars") or {},
                    metrics=t.get("metrics") or {}, base=t.get("group") or None,
                    trial=t.get("trial", (t.get("params") or {}).get(TRIAL_KEY)))
            for t in tasks if t["state"] in ("succeeded", "cached") and t.get("metrics")]
    by = default_by(rows)
    out = []
    for g in group_metrics(rows, by)[:max_rows]:
        s = g.summary
        out.append({"group": g.base, "vars": g.vars, "metric": g.metric, "mean": finite(s.mean),
                    "low": finite(s.ci_low), "high": finite(s.ci_high), "n": s.n})
    return {"by": by, "rows": out}
