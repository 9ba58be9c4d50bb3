"""Build a :class:`ReportData` from a state folder (read-only; safe during a run).

Planned times come from simulating the spec (if it still loads) on the machine
the run used, with the same policy, so "planned vs actual" compares like with like.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from rota.core.resources import Gpu, Machine
from rota.logtail import tail
from rota.report.code import latest_codes
from rota.report.model import FAILED_STATES, EarlierAttempt, GpuInfo, GpuSample, ReportData, TaskRow
from rota.store.sqlite import SqliteStore


def machine_from_meta(text: str | None) -> Machine | None:
    if not text:
        return None
    try:
        d = json.loads(text)
        return Machine(
            tuple(Gpu(g["index"], g["memory_bytes"], g.get("name", "GPU"), g.get("uuid")) for g in d["gpus"]),
            int(d["cpus"]), int(d["memory_bytes"]), d.get("source", "declared"),
        )
    except (ValueError, KeyError, TypeError):
        return None


def history_before(attempts: list[dict[str, Any]], before_s: float | None) -> dict[str, float]:
    """Median seconds of the successful attempts of each command that ended before ``before_s``
    (the run's start): what a plan made before this run could have learned. A task's own
    attempts in this run are its actual duration, not a prediction of it."""
    runs: dict[str, list[float]] = {}
    if before_s is None:
        return {}
    for a in attempts:
        start, end = a.get("started_at"), a.get("ended_at")
        if a.get("state") == "succeeded" and a.get("command") and start is not None and end is not None \
                and start <= end <= before_s:
            runs.setdefault(a["command"], []).append(end - start)
    return {cmd: max(statistics.median(v), 0.001) for cmd, v in runs.items()}


def _planned(spec_path: str | None, machine: Machine | None,
             history_s: dict[str, float]) -> dict[str, tuple[float, float, str]]:
    """``{task: (planned start, planned end, duration source)}``, durations from the spec's
    estimates, else ``history_s`` (as ``rota plan`` resolves them), else the default."""
    if not spec_path or machine is None or not os.path.exists(spec_path):
        return {}
    try:
        from rota.plan.compare import MachineOption, plan
        from rota.plan.estimates import resolve_durations
        from rota.spec.load import load_spec

        spec = load_spec(spec_path)
        durations = resolve_durations(spec.tasks, history_s)
        p = plan(spec.tasks, MachineOption("run", machine), durations)
        return {s.name: (s.start_s, s.end_s, durations.source.get(s.name, "default")) for s in p.schedule.slots}
    except Exception:  # noqa: BLE001 - a report must not fail because the spec changed since
        return {}


def load_report(state_dir: str | os.PathLike[str]) -> ReportData:
    store = SqliteStore(Path(state_dir), readonly=True)
    try:
        machine = machine_from_meta(store.get_meta("machine"))
        spec_path = store.get_meta("spec_path")
        attempts = store.attempts()
        stored = store.tasks()
        first = min((r.started_at for r in stored if r.started_at is not None), default=None)
        planned = _planned(spec_path, machine, history_before(attempts, first))
        metrics = store.metrics()
        codes = latest_codes(attempts)
        peaks: dict[str, int] = {}
        for a in attempts:
            if a.get("peak_gpu_memory_bytes"):
                peaks[a["task"]] = max(peaks.get(a["task"], 0), int(a["peak_gpu_memory_bytes"]))
        rows = []
        for r in stored:
            declared: int | None = r.gpu_memory_override
            if declared is None and r.gpu_bytes:
                declared = r.gpu_bytes[0]
            if machine is not None and r.gpus and declared is not None:
                try:
                    if declared >= machine.gpu(r.gpus[0]).memory_bytes:
                        declared = None  # a whole GPU
                except KeyError:
                    pass
            start, end = r.started_at, r.ended_at
            if start is not None and end is not None and end < start:
                end = start
            if r.state in ("pending", "skipped"):
                start = end = None
            p = planned.get(r.name)
            rows.append(TaskRow(
                name=r.name, state=r.state, attempts=r.attempts, exit_code=r.exit_code, reason=r.reason,
                start_s=start, end_s=end if r.state not in ("running", "launching") else None,
                gpus=tuple(r.gpus), cpus=r.cpus, gpu_memory_bytes=declared, peak_gpu_memory_bytes=peaks.get(r.name),
                estimate_s=r.estimate_s, vars=r.vars or {}, metrics=metrics.get(r.name, {}), log_path=r.log_path,
                log_tail=_last_lines(tail(r.log_path, 8192), 30) if r.state in FAILED_STATES else "",
                planned_start_s=p[0] if p else None, planned_end_s=p[1] if p else None, base=r.grp or None,
                trial=r.trial, duration_source=p[2] if p else None, code=codes.get(r.name),
            ))
        samples = [GpuSample(ts, gpu, util, used, total) for ts, gpu, util, used, total in store.gpu_samples()]
        earlier = retried_attempts(store, attempts, {r.name: r.attempts for r in stored})
        starts = [t.start_s for t in rows if t.start_s is not None] + [e.start_s for e in earlier]
        ends = [t.end_s for t in rows if t.end_s is not None]
        running = any(t.state in ("running", "launching") and t.start_s is not None for t in rows)
        gpus: Any = tuple(GpuInfo(g.index, g.name, g.memory_bytes) for g in machine.gpus) if machine else ()
        return ReportData(
            run_id=store.get_meta("run_id") or "?", spec_path=spec_path or "", gpus=gpus,
            cpus=machine.cpus if machine else 0, tasks=tuple(rows), gpu_samples=tuple(samples),
            # A run with a task still running has not ended (report-json.md: null while it
            # runs): its last end so far would cut every running bar and the wall time there.
            started_at=min(starts) if starts else None,
            ended_at=max(ends) if ends and not running else None, read_at=time.time() if running else None,
            earlier=tuple(earlier),
        )
    finally:
        store.close()


def retried_attempts(store: SqliteStore, attempts: list[dict[str, Any]], latest: dict[str, int]) -> list[EarlierAttempt]:
    """The attempts before each task's latest that the run retried (a ``retry`` event when it
    ended): before, the timeline drew only the latest attempt, so a GPU that ran a failed attempt
    looked idle then. An attempt of an earlier ``rota run`` (a rerun, a fixed command run again)
    has no retry event and stays out: the timeline does not stretch back to it."""
    try:
        retries = store.conn.execute("SELECT task, ts FROM events WHERE kind = 'retry'").fetchall()
    except sqlite3.Error:  # a state folder from before events
        return []
    at: dict[str, list[float]] = {}
    for task, ts in retries:
        at.setdefault(task, []).append(float(ts))
    out = []
    for a in attempts:
        start, end, task = a.get("started_at"), a.get("ended_at"), a["task"]
        if task not in at or start is None or end is None or a["attempt"] >= latest.get(task, 0):
            continue
        if any(start <= ts <= end + 5.0 for ts in at[task]):  # the event is written as it ends
            out.append(EarlierAttempt(task, int(a["attempt"]), str(a["state"]), tuple(a.get("gpus") or ()),
                                      float(start), max(float(end), float(start))))
    return out


def _last_lines(text: str, n: int) -> str:
    return "\n".join(text.splitlines()[-n:])
