"""The one reader of a state folder that every browser shares, read-only and throttled.

Each piece is read at most once per its interval, whatever the number of requests (a request
that finds it stale reads it again, others wait for that one read: single flight), through the
readers' path of :mod:`rota.store.read` (``rota status --json``'s: one short read transaction on
a read-only connection, never a lock the controller waits for). The task table is kept between
reads and each read takes only the rows that changed (:mod:`rota.serve.table`): a 20,000-task
run costs milliseconds a read, not half a second. Nothing here writes: not the database, not a
file in the state folder.

A state folder without a database yet, or one a controller is creating, is not an error for
the page: the snapshot carries the message and the page keeps asking (a run started later, or
restarted, is picked up by the next read).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rota.errors import RotaError
from rota.logtail import tail
from rota.serve import views
from rota.serve.table import TaskTable
from rota.store.read import controller
from rota.store.schema import DB_NAME

STATUS_INTERVAL_S = 1.0
"""The task table is read again at most this often (the page follows the run within 2 s)..."""
STATUS_INTERVAL_MAX_S = 1.5
"""... or less often, up to this, when a read takes long (a big run, a busy machine: see
:data:`STATUS_COST_FACTOR`)."""
STATUS_COST_FACTOR = 5.0
"""Reads of the status are at least this many times their own (wall) cost apart: the server backs
off when the machine is busy, and the controller keeps the CPU."""
UNCHANGED_MAX_AGE_S = 10.0
"""While the database files are unchanged and the controller's lock says what the snapshot says
(a killed controller changes no file), a snapshot is reused up to this age."""
SLOW_INTERVAL_S = 5.0
"""GPU samples and results are read again at most this often."""
FIGURES_SHOWN = ("results-", "sweep-", "gpu-memory")
"""The report's figures the page shows (its own timeline, GPU and table follow the run faster)."""
SLOW_FACTOR = 20.0
"""A slow piece (ETA, sweeps) is computed at most once per this many times its last cost."""


@dataclass(frozen=True)
class Snapshot:
    """One read of the status: ``data`` (the ``rota status --json`` object) or ``error`` (why
    there is none, one line), when it was read (epoch seconds) and a sequence number."""

    at_s: float
    seq: int
    data: dict[str, Any] | None = None
    error: str | None = None
    by_name: dict[str, dict[str, Any]] = field(default_factory=dict)
    queued: int = 0
    running_by_gpu: dict[str, list[str]] = field(default_factory=dict)
    held: int = 0
    started: dict[str, float] = field(default_factory=dict)
    """``{task: started_at}`` of the tasks the timeline draws."""
    with_metrics: int = 0
    """Tasks done with metrics (none: no results to compute)."""
    with_gpus: int = 0
    """Tasks with GPUs (none: no GPU memory figure)."""


class _Throttled:
    """A value recomputed at most every ``interval_s`` (and at most once per ``SLOW_FACTOR`` times
    its last cost), one computation at a time; errors are kept as the value's ``error``."""

    def __init__(self, compute: Callable[[], Any], interval_s: float) -> None:
        self._compute = compute
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._at = -1e18
        self._cost_s = 0.0
        self.value: Any = None

    def get(self) -> Any:
        with self._lock:
            now = time.monotonic()
            if now - self._at >= max(self._interval_s, SLOW_FACTOR * self._cost_s):
                t0 = time.monotonic()
                try:
                    self.value = self._compute()
                except (RotaError, OSError, ValueError, sqlite3.Error) as e:
                    self.value = {"error": str(e)}
                self._cost_s = time.monotonic() - t0
                self._at = time.monotonic()
            return self.value


class StateCache:
    """Everything the page reads from ``state_dir``, shared by all requests (thread-safe)."""

    def __init__(self, state_dir: str | os.PathLike[str], status_interval_s: float = STATUS_INTERVAL_S) -> None:
        self.state_dir = os.fspath(state_dir)
        self._interval_s = status_interval_s
        self._lock = threading.Lock()
        self._snap = Snapshot(at_s=0.0, seq=0, error="not read yet")
        self._files: tuple[Any, ...] = ()
        self._read_at = -1e18
        self._cost_s = 0.0
        self._gpus = _Throttled(self._read_gpus, SLOW_INTERVAL_S)
        self._results = _Throttled(self._read_results, SLOW_INTERVAL_S)
        self._sweeps = _Throttled(self._read_sweeps, 2 * SLOW_INTERVAL_S)
        self._eta = _Throttled(self._read_eta, 2 * SLOW_INTERVAL_S)
        self._figures = _Throttled(self._read_figures, 2 * SLOW_INTERVAL_S)
        self._spec: tuple[Any, Any] | None = None  # (spec path and mtime, its tasks)
        self._table = TaskTable(self.state_dir)
        self._pages: dict[tuple[Any, ...], Any] = {}
        self._timeline: tuple[int, Any] = (-1, None)

    # -- the status ----------------------------------------------------------------------
    def _db_files(self) -> tuple[Any, ...]:
        out: list[tuple[int, int, int] | None] = []
        for suffix in ("", "-wal", "controller"):
            path = os.path.join(self.state_dir, "controller.lock" if suffix == "controller" else DB_NAME + suffix)
            try:
                st = os.stat(path)
                out.append((st.st_size, st.st_mtime_ns, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def status(self) -> Snapshot:
        """The latest snapshot, read again when older than the status interval and the database
        changed (or older than :data:`UNCHANGED_MAX_AGE_S`)."""
        with self._lock:
            now = time.monotonic()
            age = now - self._read_at
            if age < min(max(self._interval_s, STATUS_COST_FACTOR * self._cost_s), STATUS_INTERVAL_MAX_S):
                return self._snap
            files = self._db_files()
            # A controller killed (kill -9) changes no file: its lock's flock is what tells.
            if files == self._files and age < UNCHANGED_MAX_AGE_S and self._snap.data is not None \
                    and controller(self.state_dir) == self._snap.data.get("controller"):
                return self._snap
            seq = self._snap.seq + 1
            t0 = time.monotonic()
            try:
                # Only the rows that changed (rota.serve.table); all of them for a new database file.
                new_db = not self._files or files[0] is None or self._files[0] is None or files[0][2] != self._files[0][2]
                v = self._table.read(force_full=new_db or self._snap.data is None)
                snap = Snapshot(time.time(), seq, v.data, None, v.by_name, v.queued, v.running_by_gpu, v.held,
                                v.started, v.metrics, v.gpus)
            except (RotaError, OSError, ValueError, sqlite3.Error) as e:
                snap = Snapshot(time.time(), seq, None, str(e))
            self._snap, self._files, self._read_at = snap, files, time.monotonic()
            self._cost_s = self._read_at - t0
            return snap

    def page(self, states: frozenset[str] | None, query: str, offset: int, limit: int) -> tuple[Snapshot, Any]:
        """The snapshot and its table page (:func:`views.task_page`), computed once per snapshot and
        question: twenty browsers showing the same page cost one filter."""
        snap = self.status()
        return snap, self.page_of(snap, states, query, offset, limit)

    def page_of(self, snap: Snapshot, states: frozenset[str] | None, query: str, offset: int, limit: int) -> Any:
        """The table page of a snapshot already read (no read here: the event streams' path)."""
        key = (snap.seq, states, query, offset, limit)
        with self._lock:
            hit = self._pages.get(key)
        if hit is None:
            if snap.data is None:
                hit = None
            elif states is None and not query.strip():  # the whole table: a slice, no filter
                hit = views.plain_page(snap.data["tasks"], offset, limit)
            else:
                hit = views.task_page(snap.data["tasks"], states, query, offset, limit)
            with self._lock:
                if len(self._pages) > 64:
                    self._pages.clear()
                elif any(k[0] < snap.seq for k in self._pages):  # an older snapshot's pages: never asked again
                    self._pages = {k: v for k, v in self._pages.items() if k[0] >= snap.seq}
                self._pages[key] = hit
        return hit

    def timeline(self) -> Any:
        """The timeline (:func:`views.timeline`) of the latest snapshot, computed once per snapshot."""
        snap = self.status()
        with self._lock:
            if self._timeline[0] == snap.seq:
                return self._timeline[1]
        value = views.timeline_of(snap.started, snap.by_name, snap.at_s)
        with self._lock:
            self._timeline = (snap.seq, value)
        return value

    def log_tail(self, task: str, max_bytes: int) -> dict[str, Any] | None:
        """The end of ``task``'s latest log (its ``log_path`` in the state: no other file is ever
        read), or None when no such task."""
        t = self.status().by_name.get(task)
        if t is None:
            return None
        path = t.get("log_path")
        text = tail(path, max(1024, min(max_bytes, 1 << 20))) if path else ""
        return {"task": task, "attempt": t.get("attempt"), "state": t["state"], "log_path": path, "text": text}

    # -- slower pieces -------------------------------------------------------------------
    def gpus(self) -> Any:
        return self._gpus.get()

    def results(self) -> Any:
        return self._results.get()

    def sweeps(self) -> Any:
        return self._sweeps.get()

    def eta(self) -> Any:
        return self._eta.get()

    def figures(self) -> Any:
        return self._figures.get()

    def _read_gpus(self) -> dict[str, Any]:
        from rota.report.load import machine_from_meta
        from rota.store.sqlite import SqliteStore

        if not os.path.exists(os.path.join(self.state_dir, DB_NAME)):
            return {"gpus": [], "series": []}
        store = SqliteStore(self.state_dir, readonly=True)
        try:
            machine = machine_from_meta(store.get_meta("machine"))
            samples = store.gpu_samples()
        finally:
            store.close()
        gpus = [{"index": g.index, "name": g.name, "memory_gb": g.memory_bytes / views.GB}
                for g in (machine.gpus if machine else ())]
        return {"gpus": gpus, "series": views.gpu_series(samples)}

    def _read_results(self) -> dict[str, Any]:
        snap = self.status()
        if not snap.data or not snap.with_metrics:  # nothing to group: no work
            return {"by": [], "rows": []}
        return views.results(snap.data["tasks"])

    def _read_sweeps(self) -> dict[str, Any]:
        if not os.path.exists(os.path.join(self.state_dir, "optuna.db")):
            return {"sweeps": []}
        from rota.report.sweeps import best_trials

        return {"sweeps": best_trials(self.state_dir)}

    def _read_figures(self) -> dict[str, Any]:
        """The report's own figures of results, sweeps and booked GPU memory (the functions of
        :func:`rota.report.html.report_figures`, on :func:`rota.report.load.load_report`, grouped
        by the report's default variables; not its timeline, which the page draws itself), as
        plotly JSON: ``{"figures": [{"name", "figure"}]}``. Nothing is loaded when no task has
        metrics or GPUs and there is no study: a big run without them costs no report."""
        snap = self.status()
        sweeps = os.path.exists(os.path.join(self.state_dir, "optuna.db"))
        if not os.path.exists(os.path.join(self.state_dir, DB_NAME)) or (
                not snap.with_metrics and not snap.with_gpus and not sweeps):
            return {"figures": []}
        from rota.report.html import slug
        from rota.report.load import load_report
        from rota.report.page import figure_dict
        from rota.report.results import results_by_group, results_figure
        from rota.report.stats import default_by, group_metrics
        from rota.report.timeline import gpu_memory_figure

        data = load_report(self.state_dir)
        by = default_by(data.tasks)
        figs: dict[str, Any] = {}
        for base, (mine, rows) in results_by_group(group_metrics(data.tasks, by), by).items():
            figs[f"results-{slug(base)}"] = results_figure(base, mine, rows, data.tasks)
        if sweeps:
            from rota.report.sweep_figures import sweep_figures

            for study, kinds in sweep_figures(self.state_dir).items():
                for kind, fig in kinds.items():
                    figs[f"sweep-{slug(study)}-{kind}"] = fig
        if any(t.gpus for t in data.tasks):
            mem = gpu_memory_figure(data)
            if mem is not None:
                figs["gpu-memory"] = mem
        return {"figures": [{"name": name, "figure": figure_dict(fig)} for name, fig in figs.items()
                            if name.startswith(FIGURES_SHOWN)]}

    def _read_eta(self) -> dict[str, Any]:
        """Seconds left: the controller's predictions when it records them, else the plan
        simulator on what is left (:func:`rota.plan.eta.remaining_s`, as the dashboard)."""
        snap = self.status()
        data = snap.data
        if not data or not data["controller"]["alive"]:
            return {"eta_s": None, "at_s": snap.at_s}
        predicted = views.eta_from_predictions(data["tasks"], snap.at_s)
        if predicted is not None:
            return {"eta_s": predicted, "at_s": snap.at_s, "source": "predictions"}
        tasks, machine = self._spec_and_machine(data.get("spec"))
        if tasks is None or machine is None:
            return {"eta_s": None, "at_s": snap.at_s}
        from rota.plan.eta import Progress, remaining_s

        progress = {t["name"]: Progress(t["state"], t.get("started_at"), t.get("ended_at")) for t in data["tasks"]}
        left = remaining_s(tasks, machine, progress, snap.at_s)
        return {"eta_s": views.finite(left), "at_s": snap.at_s, "source": "plan"}

    def _spec_and_machine(self, spec_path: str | None) -> tuple[Any, Any]:
        from rota.report.load import machine_from_meta
        from rota.spec.load import load_spec
        from rota.store.sqlite import SqliteStore

        if not spec_path or not os.path.exists(spec_path):
            return None, None
        key = (spec_path, os.stat(spec_path).st_mtime_ns)
        if self._spec is None or self._spec[0] != key:
            self._spec = (key, load_spec(spec_path).tasks)
        store = SqliteStore(self.state_dir, readonly=True)
        try:
            machine = machine_from_meta(store.get_meta("machine"))
        finally:
            store.close()
        return self._spec[1], machine
