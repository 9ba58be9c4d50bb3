"""Every task of a state folder, kept between reads: each read takes only the rows that changed.

A 20,000-task run's whole status costs ``rota serve`` about half a second of CPU to read, decode
and index, against a few milliseconds for the rows whose ``updated_at`` moved since the last read
(:func:`rota.store.read.read_changed`). :class:`TaskTable` keeps the rows (each a ``rota status
--json`` task, never changed in place: a changed row is a new dict, so a snapshot handed out
earlier stays as it was) with what the page asks of them kept up to date row by row: the counts,
the queued and held tasks, the GPUs held, the tasks started (the timeline), whether any task has
metrics or GPUs (the results and figures are not computed without).

It reads everything again (a full read) the first time, every :data:`FULL_READ_S`, when the
database file, the run or the controller changed, and when the rows no longer add up (a row was
removed: a live edit dropped a pending task). The predictor's reasons and predicted starts do not
move ``updated_at``: they are compared every :data:`FORECAST_S` and patched where they differ.
A running task's ``duration_s`` is brought to the read's time at each read, as a full read gives it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from rota.serve.views import is_started
from rota.store.base import STATES
from rota.store.read import ChangedRows, read_changed

FULL_READ_S = 30.0
"""Everything is read again at least this often (bounds what a clock set back could hide)..."""
FULL_COST_FACTOR = 200.0
"""... or less often: at most once per this many times the last full read's cost (0.3-0.6 s at
20,000 tasks on a busy 2-core machine: every 1-2 minutes)."""
FORECAST_S = 5.0
"""The predictor's reasons and predictions (pending and running tasks) are compared this often
(the controller's predictor itself runs every 2 s at most, less often in a big run)."""
_GPU_STATES = ("running", "launching")
_DONE = ("succeeded", "cached")


@dataclass(frozen=True)
class TableView:
    """One read's picture: ``data`` (the ``rota status --json`` object: head, ``counts``,
    ``tasks`` in the status order), ``by_name`` (the table's own: for lookups only, it may hold
    a later read's rows), the queued and held counts, ``running_by_gpu`` (``{"0": [task, ...]}``),
    ``started`` (``{task: started_at}`` of the tasks the timeline draws), ``metrics``/``gpus``: how
    many tasks have metrics (done ones) or GPUs; ``reread``: the rows read this time, ``full``:
    whether that was every row."""

    data: dict[str, Any]
    by_name: dict[str, dict[str, Any]]
    queued: int
    held: int
    running_by_gpu: dict[str, list[str]]
    started: dict[str, float]
    metrics: int
    gpus: int
    reread: int
    full: bool


class TaskTable:
    """The rows of ``state_dir`` (not thread-safe: its caller reads under one lock)."""

    def __init__(self, state_dir: str | os.PathLike[str], full_read_s: float = FULL_READ_S,
                 forecast_s: float = FORECAST_S) -> None:
        self.state_dir = os.fspath(state_dir)
        self.full_read_s = full_read_s
        self.forecast_s = forecast_s
        self._reset()
        self._key: tuple[Any, ...] | None = None

    def _reset(self) -> None:
        self._rows: dict[int, dict[str, Any]] = {}
        self._order: list[int] = []
        self._index: dict[int, int] = {}
        self._tasks: list[dict[str, Any]] = []
        self._rowid_of: dict[str, int] = {}
        self._by_name: dict[str, dict[str, Any]] = {}
        self._counts: dict[str, int] = dict.fromkeys(STATES, 0)
        self._queued: set[int] = set()
        self._held: set[int] = set()
        self._open: set[int] = set()  # running: duration_s grows with the read's time
        self._on_gpus: dict[str, list[int]] = {}
        self._started: dict[str, float] = {}
        self._started_shown: dict[str, float] = {}  # the copy views hold; _started_seen: None when stale
        self._started_seen: dict[str, float] | None = None
        self._gone: list[str] = []
        self._metrics: set[int] = set()
        self._gpus: set[int] = set()
        self._watermark: float | None = None
        self._full_at = -1e18
        self._full_cost_s = 0.0
        self._forecast_at = -1e18

    def read(self, force_full: bool = False) -> TableView:
        """Read what changed (or everything, see the module docstring) and return the picture.
        Raises what :func:`rota.store.read.read_changed` raises (StateError, OSError)."""
        now = time.monotonic()
        full = force_full or self._watermark is None or \
            now - self._full_at >= max(self.full_read_s, FULL_COST_FACTOR * self._full_cost_s)
        want_forecast = not full and now - self._forecast_at >= self.forecast_s
        got = read_changed(self.state_dir, None if full else self._watermark, forecast=want_forecast)
        key = (got.head["run_id"], got.head["spec"], got.head["controller"]["pid"])
        if not got.full and key != self._key:
            got = read_changed(self.state_dir, None)
        if got.full:
            return self._load_all(got, key, now)
        structural = False
        changed: list[int] = []
        for rowid, _, task in got.rows:
            earlier = self._rowid_of.get(task["name"])
            if earlier is not None and earlier != rowid:  # replaced (a new rowid): the old one goes
                self._drop(earlier)
                structural = True
            if rowid in self._rows:
                self._drop(rowid)
            else:
                structural = True
            self._add(rowid, task)
            changed.append(rowid)
        self._settle()
        if len(self._rows) != got.total:  # a row was removed: read everything
            return self._load_all(read_changed(self.state_dir, None), key, now)
        fresh = set(changed)
        if got.forecast is not None:
            self._forecast_at = now
            changed.extend(self._patch_forecast(got.forecast))
        self._watermark = got.watermark
        t_now = time.time()
        for rowid in self._open - fresh:  # as a full read at this time would give them
            task = self._rows[rowid]
            self._swap(rowid, {**task, "duration_s": t_now - task["started_at"]})
            changed.append(rowid)
        if structural:
            self._reindex()
        else:
            tasks = list(self._tasks)
            for rowid in changed:
                tasks[self._index[rowid]] = self._rows[rowid]
            self._tasks = tasks
        return self._view(got, len(got.rows), False)

    # -- keeping the rows and what is derived from them ---------------------------------------
    def _load_all(self, got: ChangedRows, key: tuple[Any, ...], t0: float) -> TableView:
        self._reset()
        self._key = key
        for rowid, _, task in got.rows:
            self._add(rowid, task)
        self._watermark = got.watermark if got.watermark is not None else 0.0
        self._full_at = self._forecast_at = time.monotonic()
        self._full_cost_s = self._full_at - t0
        self._reindex()
        return self._view(got, len(got.rows), True)

    def _reindex(self) -> None:
        self._order = sorted(self._rows)
        self._index = {rowid: i for i, rowid in enumerate(self._order)}
        self._tasks = [self._rows[r] for r in self._order]

    def _add(self, rowid: int, t: dict[str, Any]) -> None:
        name, state = t["name"], t["state"]
        self._rows[rowid] = t
        self._rowid_of[name] = rowid
        self._by_name[name] = t
        self._counts[state] = self._counts.get(state, 0) + 1
        if t.get("queued"):
            self._queued.add(rowid)
        if t.get("held") and state == "pending":
            self._held.add(rowid)
        if t.get("ended_at") is None and t.get("duration_s") is not None:
            self._open.add(rowid)
        if t.get("gpus"):
            self._gpus.add(rowid)
            if state in _GPU_STATES and not t.get("queued"):
                self._on_gpus[name] = t["gpus"]
        # _started is left alone by _drop (a row is dropped and added again for each change; a name
        # is only ever gone in a full read, which starts over): a change costs the views' copy
        # only when it changes what the timeline draws.
        if is_started(t):
            start = float(t["started_at"])
            if self._started.get(name) != start:
                self._started[name] = start
                self._started_seen = None
        elif name in self._started:
            del self._started[name]
            self._started_seen = None
        if t.get("metrics") and state in _DONE:
            self._metrics.add(rowid)

    def _drop(self, rowid: int) -> None:
        t = self._rows.pop(rowid)
        name, state = t["name"], t["state"]
        if self._rowid_of.get(name) == rowid:
            self._gone.append(name)  # unless added again (see _settle)
            del self._rowid_of[name]
            del self._by_name[name]
            self._on_gpus.pop(name, None)
        self._counts[state] -= 1
        if self._counts[state] == 0 and state not in STATES:
            del self._counts[state]
        for s in (self._queued, self._held, self._open, self._gpus, self._metrics):
            s.discard(rowid)

    def _settle(self) -> None:
        """Forget the started time of the tasks whose rows went and did not come back (a rowid
        taken over by another task)."""
        for name in self._gone:
            if name not in self._rowid_of and name in self._started:
                del self._started[name]
                self._started_seen = None
        self._gone.clear()

    def _swap(self, rowid: int, task: dict[str, Any]) -> None:
        """Put ``task`` in place of its row where only fields nothing is derived from changed (a
        running task's duration, a pending task's reason, predictions)."""
        self._rows[rowid] = task
        self._by_name[task["name"]] = task

    def _patch_forecast(self, rows: list[tuple[int, str, float | None, float | None]]) -> list[int]:
        """The predictor's reason (pending tasks only, as it writes it) and predictions, where they
        differ from the row held: the columns as a full read would show them."""
        out = []
        for rowid, reason, start, end in rows:
            t = self._rows.get(rowid)
            if t is None:
                continue
            new_reason = reason if t["state"] == "pending" else t["reason"]
            if (t["reason"], t["predicted_start_s"], t["predicted_end_s"]) != (new_reason, start, end):
                self._swap(rowid, {**t, "reason": new_reason, "predicted_start_s": start, "predicted_end_s": end})
                out.append(rowid)
        return out

    def _view(self, got: ChangedRows, reread: int, full: bool) -> TableView:
        data = dict(got.head)
        data["counts"] = dict(self._counts)
        data["tasks"] = self._tasks
        by_gpu: dict[str, list[str]] = {}
        for name, gpus in self._on_gpus.items():
            for g in gpus:
                by_gpu.setdefault(str(g), []).append(name)
        if self._started_seen is not self._started_shown:  # copied only when it changed
            self._started_shown = dict(self._started)
            self._started_seen = self._started_shown
        return TableView(data, self._by_name, len(self._queued), len(self._held), by_gpu,
                         self._started_shown, len(self._metrics), len(self._gpus), reread, full)
