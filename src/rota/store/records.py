"""The store's records and the methods that read them: the read side of :class:`rota.store.sqlite.SqliteStore`.

:class:`StoreReads` is :class:`~rota.store.sqlite.SqliteStore`'s base class: every read of its
public contract (:mod:`rota.store.base`) over one open connection, rows decoded into
:class:`TaskRecord` and :class:`Control`. It only reads (no transaction, no write), so a reader
that opened the database read-only gets all of it; the writer's methods (transitions, the event
log, controls taken, forecasts) stay in :mod:`rota.store.sqlite` beside ``connect()``.

A reader may open a state of an older schema that a controller has not migrated yet: it is read
as the current one (columns added since read as their defaults; no controls, no holds).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rota.store.base import ACTIVE
from rota.store.schema import TASK_COLUMNS

_JSON_COLS = {"gpus", "gpu_bytes", "handle", "vars", "params"}


@dataclass(frozen=True)
class TaskRecord:
    """One row of ``tasks`` with JSON columns decoded."""

    name: str
    grp: str
    fingerprint: str
    inputs_fp: str | None
    state: str
    attempts: int
    free_attempts: int
    exit_code: int | None
    reason: str
    gpus: list[int]
    gpu_bytes: list[int]
    cpus: int
    memory_bytes: int
    gpu_memory_override: int | None
    started_at: float | None
    ended_at: float | None
    deadline: float | None
    not_before: float | None
    log_path: str | None
    out_dir: str | None
    handle: dict[str, Any] | None
    vars: dict[str, str]
    estimate_s: float | None
    command: str
    trial: int | None
    params: dict[str, Any] | None
    updated_at: float
    attempt: int  # the number of the task's latest attempt (never restarts); ``attempts`` restarts at a reset
    held: int = 0  # 1: ``rota hold`` keeps it from launching
    priority: int | None = None  # a live override of the spec's priority
    predicted_start: float | None = None  # the controller's prediction (epoch seconds)
    predicted_end: float | None = None


@dataclass(frozen=True)
class Control:
    """One request to the controller (a row of ``controls``): ``kind`` is one of
    :data:`CONTROL_KINDS`, ``targets`` the task names it applies to, ``data`` its arguments."""

    id: int
    ts: float
    kind: str
    targets: list[str]
    data: dict[str, Any]
    taken_at: float | None = None
    result: str | None = None


CONTROL_KINDS = ("cancel", "retry", "hold", "release", "priority", "spec", "limits")


def _decode(row: sqlite3.Row) -> TaskRecord:
    d = {k: row[k] for k in TASK_COLUMNS}
    for k in _JSON_COLS:
        if d[k] is not None:
            d[k] = json.loads(d[k])
    return TaskRecord(**d)


class StoreReads:
    """The store's reads over ``conn``, a database of schema ``version`` (the current one for the
    writer, which migrates on connect; a reader's may be older, read as the current one)."""

    def __init__(self, conn: sqlite3.Connection, version: int) -> None:
        self.conn = conn
        v1, v2 = version < 2, version < 3
        # A reader may open an older schema (a controller migrates it): read it as the current one.
        extra = ", 0 AS held, NULL AS priority, NULL AS predicted_start, NULL AS predicted_end" if v2 else ""
        self._tasks_sql = f"SELECT *, attempts AS attempt{extra} FROM tasks" if v1 else f"SELECT *{extra} FROM tasks"
        self._attempts_sql = "SELECT rowid AS id, * FROM attempts" if v1 else "SELECT * FROM attempts"
        self._has_controls = not v2

    # -- meta, tasks --------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def tasks(self, states: Sequence[str] | None = None) -> list[TaskRecord]:
        if states:
            q = f"{self._tasks_sql} WHERE state IN ({','.join('?' * len(states))}) ORDER BY rowid"
            rows = self.conn.execute(q, tuple(states)).fetchall()
        else:
            rows = self.conn.execute(f"{self._tasks_sql} ORDER BY rowid").fetchall()
        return [_decode(r) for r in rows]

    def marked_tasks(self, reason: str) -> list[tuple[str, int, int | None, str | None]]:
        """``(name, held, priority, reason)`` of the tasks whose row says more than their spec: held,
        a live priority, or ``reason`` as their reason (a controller's mark, e.g. a cancel it had
        begun); in rowid order. What a controller restores at its start without decoding every
        task's record (at 20,000 tasks that was the run's peak memory)."""
        if not self._has_controls:  # before schema 3 nothing is held or re-prioritised
            q, args = "SELECT name, 0, NULL, reason FROM tasks WHERE reason=? ORDER BY rowid", (reason,)
        else:
            q = ("SELECT name, held, priority, reason FROM tasks"
                 " WHERE held != 0 OR priority IS NOT NULL OR reason=? ORDER BY rowid")
            args = (reason,)
        return [(r[0], r[1], r[2], r[3]) for r in self.conn.execute(q, args)]

    def task(self, name: str) -> TaskRecord | None:
        row = self.conn.execute(f"{self._tasks_sql} WHERE name=?", (name,)).fetchone()
        return _decode(row) if row else None

    # -- attempts, metrics, events -----------------------------------------
    def attempt_id(self, task: str, attempt: int) -> int | None:
        """The id of ``task``'s attempt number ``attempt`` (None: no such attempt was committed)."""
        row = self.conn.execute(f"{self._attempts_sql} WHERE task=? AND attempt=?", (task, attempt)).fetchone()
        return None if row is None else int(row["id"])

    def attempts(self, task: str | None = None) -> list[dict[str, Any]]:
        """Attempt rows (``id``, ``task``, ``attempt``, ``state``, ...), by task and number."""
        if task is None:
            rows = self.conn.execute(f"{self._attempts_sql} ORDER BY task, attempt").fetchall()
        else:
            rows = self.conn.execute(f"{self._attempts_sql} WHERE task=? ORDER BY attempt", (task,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            for k in ("gpus", "handle", "code"):
                if d.get(k) is not None:
                    d[k] = json.loads(d[k])
            out.append(d)
        return out

    def metrics(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for r in self.conn.execute("SELECT task, name, value FROM metrics"):
            out.setdefault(r[0], {})[r[1]] = r[2]
        return out

    def events(self, since_seq: int = 0) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM events WHERE seq>? ORDER BY seq", (since_seq,)).fetchall()
        return [{**dict(r), "data": json.loads(r["data"])} for r in rows]

    # -- controls: requests to the controller, holds -----------------------
    def controls(self, *, untaken: bool = True) -> list[Control]:
        """Requests in id order (``untaken``: only those no controller has taken yet)."""
        if not self._has_controls:
            return []
        q = "SELECT * FROM controls" + (" WHERE taken_at IS NULL" if untaken else "") + " ORDER BY id"
        return [Control(r["id"], r["ts"], r["kind"], json.loads(r["targets"]), json.loads(r["data"]),
                        r["taken_at"], r["result"]) for r in self.conn.execute(q)]

    def control(self, control_id: int) -> Control | None:
        """One request by id (the requester polls it to learn the controller's result)."""
        if not self._has_controls:
            return None
        r = self.conn.execute("SELECT * FROM controls WHERE id=?", (control_id,)).fetchone()
        return None if r is None else Control(r["id"], r["ts"], r["kind"], json.loads(r["targets"]),
                                              json.loads(r["data"]), r["taken_at"], r["result"])

    def held_tasks(self) -> set[str]:
        """Names of the tasks ``rota hold`` keeps from launching (column ``held``)."""
        if not self._has_controls:  # schema 2, read as it is: no holds
            return set()
        return {r[0] for r in self.conn.execute("SELECT name FROM tasks WHERE held=1")}

    # -- GPU samples, history (learned estimates) ----------------------------
    def gpu_samples(self) -> list[tuple[float, int, float | None, int | None, int | None]]:
        return [tuple(r) for r in self.conn.execute("SELECT * FROM gpu_samples ORDER BY ts, gpu")]

    def history(self, command: str) -> list[dict[str, Any]]:
        """Finished successful attempts of any task with this command (learned estimates)."""
        rows = self.conn.execute(
            "SELECT task, started_at, ended_at, peak_gpu_memory_bytes FROM attempts "
            "WHERE command=? AND state='succeeded' AND ended_at IS NOT NULL",
            (command,),
        ).fetchall()
        return [dict(r) for r in rows]

    def durations_by_command(self) -> dict[str, list[float]]:
        """Wall seconds of every successful attempt, by command (one query)."""
        out: dict[str, list[float]] = {}
        for cmd, start, end in self.conn.execute(
            "SELECT command, started_at, ended_at FROM attempts "
            "WHERE state='succeeded' AND started_at IS NOT NULL AND ended_at IS NOT NULL"
        ):
            out.setdefault(cmd, []).append(max(end - start, 0.0))
        return out

    def active_count(self) -> int:
        q = f"SELECT count(*) FROM tasks WHERE state IN ({','.join('?' * len(ACTIVE))})"
        return int(self.conn.execute(q, tuple(ACTIVE)).fetchone()[0])
