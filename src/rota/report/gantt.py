"""Gantt lanes of a run: :func:`lanes_from_report` builds them from a :class:`ReportData`.

The lane model and its text drawing (:func:`gantt_text`, :func:`stack_rows`,
:func:`nice_ticks`) live in the neutral :mod:`rota.lanes`, shared with ``rota plan``;
they are re-exported here and by :mod:`rota.report.render`.
"""

from __future__ import annotations

from rota.lanes import Lane, LaneItem, gantt_text, nice_ticks, stack_rows
from rota.report.model import ReportData

__all__ = ["gantt_text", "lanes_from_report", "nice_ticks", "stack_rows"]


def lanes_from_report(data: ReportData) -> list[Lane]:
    """One lane per GPU (``gpu<i>``, machine order, then any GPU only tasks mention)
    and a ``cpu`` lane for tasks without GPUs; times relative to ``data.origin_s``.

    A task on several GPUs appears in each of their lanes. Tasks that never
    started are left out; running ones end at ``data.horizon_s``; the attempts the run retried
    (``data.earlier``) are items of their own, ``task (attempt N)``. Items carry
    their task state and group (``base``, else the task's name).
    """
    origin, horizon = data.origin_s, data.horizon_s
    order = [g.index for g in data.gpus]
    order += sorted({g for t in data.tasks for g in t.gpus} - set(order))
    gpu_items: dict[int, list[tuple[LaneItem, str, str]]] = {i: [] for i in order}
    cpu_items: list[tuple[LaneItem, str, str]] = []
    if origin is not None and horizon is not None:
        for t in data.tasks:
            if t.start_s is None:
                continue
            end = t.end_s if t.end_s is not None else max(horizon, t.start_s)
            item = ((t.name, t.start_s - origin, end - origin), t.state, t.base or t.name)
            for g in t.gpus:
                gpu_items[g].append(item)
            if not t.gpus:
                cpu_items.append(item)
        base = {t.name: t.base or t.name for t in data.tasks}
        for e in data.earlier:  # retried attempts, where they ran (see ReportData.earlier)
            item = ((f"{e.task} (attempt {e.attempt})", e.start_s - origin, e.end_s - origin), e.state,
                    base.get(e.task, e.task))
            for g in e.gpus:
                gpu_items.setdefault(g, []).append(item)
            if not e.gpus:
                cpu_items.append(item)
    lanes = [_lane(f"gpu{i}", v) for i, v in gpu_items.items()]
    if cpu_items or not lanes:
        lanes.append(_lane("cpu", cpu_items))
    return lanes


def _lane(name: str, items: list[tuple[LaneItem, str, str]]) -> Lane:
    return Lane(name, tuple(it for it, _, _ in items), tuple(s for _, s, _ in items), tuple(g for _, _, g in items))
