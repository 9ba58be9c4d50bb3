"""All of rota's SQLite writes in one boring place (huey/storage.py style).

One ``connect()`` (WAL, busy_timeout), one ``transaction()``, the schema
version in ``user_version``, and :class:`SqliteStore`'s writes: compare-and-set transitions
(:class:`Change`), the event log, controls taken, forecasts. Its reads and the records they
return (:class:`~rota.store.records.TaskRecord`, :class:`~rota.store.records.Control`) are
:class:`rota.store.records.StoreReads`, its base class. See :mod:`rota.store.base` for the contract.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rota.errors import StateError
from rota.store.read import connect_ro, schema_version, unusable
from rota.store.records import _JSON_COLS, CONTROL_KINDS, StoreReads
from rota.store.schema import APP_ID, DB_NAME, DDL, MIGRATIONS, SCHEMA_VERSION, TASK_COLUMNS

ForecastRow = tuple[str, str | None, float | None, float | None]
"""``(task, reason, predicted_start, predicted_end)``: what the controller's predictor writes
(:meth:`SqliteStore.set_forecast`; epoch seconds; None: keep the reason, no prediction)."""


@dataclass(frozen=True)
class Change:
    """One compare-and-set transition for :meth:`SqliteStore.apply`."""

    name: str
    expect: str | Collection[str] | None
    event: str
    fields: Mapping[str, Any]
    attempt: Mapping[str, Any] | None = None
    metrics: Mapping[str, float] | None = None


def connect(path: str | os.PathLike[str], *, readonly: bool = False) -> sqlite3.Connection:
    """The one way rota opens its database: read-only through :func:`rota.store.read.connect_ro`
    (the readers' path: never creates, never writes); read-write creates it (schema), migrates an
    older schema (:data:`rota.store.schema.MIGRATIONS`, one transaction) and turns on WAL. Both
    refuse a foreign or newer database with :func:`rota.store.read.schema_version`'s messages."""
    p = Path(path)
    if readonly:
        conn = connect_ro(str(p))
        conn.row_factory = sqlite3.Row
        try:
            schema_version(conn, p)
        except sqlite3.DatabaseError as e:
            conn.close()
            raise unusable(p, e) from None
        except StateError:
            conn.close()
            raise
        return conn
    if not p.exists():
        _create(p)
    conn = sqlite3.connect(str(p), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        _check_identity(conn, p)  # before any write: never touch a foreign database
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.DatabaseError as e:
        conn.close()
        if (err := storage_error(p.parent, e)) is not None:
            raise err from None
        raise unusable(p, e) from None
    except StateError:
        conn.close()
        raise
    return conn


def _create(p: Path) -> None:
    """Create a new database beside ``p`` and rename it into place.

    A reader (``rota status``) never sees a half-made, schema-less state.db.
    """
    tmp = p.with_name(f".{p.name}.{os.getpid()}.new")
    try:
        conn = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            _check_identity(conn, tmp)
        finally:
            conn.close()
        os.replace(tmp, p)
    except (sqlite3.DatabaseError, OSError) as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise storage_error(p.parent, e) or StateError(f"cannot create {p}: {e}") from None


def _check_identity(conn: sqlite3.Connection, p: Path) -> None:
    """The writer's side: an empty database gets the schema, an older one is migrated."""
    version = schema_version(conn, p, empty_ok=True)
    if version == SCHEMA_VERSION:
        return
    with transaction(conn):
        version = schema_version(conn, p, empty_ok=True)  # again, under the write lock
        if version == SCHEMA_VERSION:
            return
        if version == 0:
            for stmt in DDL.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute(f"PRAGMA application_id={APP_ID}")
        else:
            for v in range(version, SCHEMA_VERSION):
                for stmt in MIGRATIONS[v]:
                    conn.execute(stmt)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_RO_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def storage_error(state_dir: str | os.PathLike[str], exc: BaseException) -> StateError | None:
    """A clear StateError when ``exc`` means the state folder cannot be written, else None.

    Covers SQLite's "database or disk is full" / "attempt to write a readonly
    database" / "disk I/O error" and OSErrors ENOSPC, EDQUOT, EROFS, EACCES.
    Nothing that was committed is lost in these cases: the message says so.
    """
    text = str(exc).lower()
    code = getattr(exc, "errno", None)
    full = code in _FULL_ERRNOS or "full" in text
    if not full and (code is None or isinstance(exc, sqlite3.Error)):
        try:
            full = shutil.disk_usage(state_dir).free < 2**20
        except OSError:
            pass
    if full:
        cause, fix = "disk full", "free space"
    elif code in _RO_ERRNOS or "readonly" in text or "read-only" in text:
        cause, fix = "read-only (cannot write)", "make it writable"
    elif isinstance(exc, sqlite3.OperationalError) and ("i/o" in text or "unable to open" in text):
        cause, fix = f"cannot be written ({exc})", "check the disk"
    else:
        return None
    return StateError(f"state folder {state_dir}: {cause}; {fix} and run again: nothing is lost")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT; ROLLBACK on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back (e.g. SQLITE_FULL)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


class SqliteStore(StoreReads):
    """The controller's (read-write) or a reader's (read-only) view of one state folder: the
    writes here, the reads inherited (:class:`rota.store.records.StoreReads`)."""

    def __init__(self, state_dir: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DB_NAME
        self.readonly = readonly
        conn = connect(self.path, readonly=readonly)
        # The writer migrated on connect; a reader may hold an older schema (read as the current one).
        super().__init__(conn, conn.execute("PRAGMA user_version").fetchone()[0] if readonly else SCHEMA_VERSION)
        self._next_attempt_id: int | None = None

    def close(self) -> None:
        self.conn.close()

    # -- meta -------------------------------------------------------------
    def set_meta(self, items: Mapping[str, str]) -> None:
        with transaction(self.conn):
            for k, v in items.items():
                self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (k, v))

    # -- tasks ------------------------------------------------------------
    def upsert_tasks(self, rows: Sequence[Mapping[str, Any]], event: str = "sync",
                     resets: Collection[str] = ()) -> None:
        """Insert or fully reset tasks (used when a spec is (re)loaded).

        A reset keeps what the user steered and what numbers attempts: the task's latest attempt
        number (``attempt``: attempt numbers never restart), ``held`` and a live ``priority``.
        Each of ``resets`` (tasks that existed and go back to pending) gets a ``reset`` event
        before the ``event`` one (the event log is a journal: see ``runstate.replay``)."""
        now = time.time()
        kept = ("updated_at", "attempt", "held", "priority")
        cols = [k for k in TASK_COLUMNS if k not in kept]
        # As INSERT OR REPLACE did: a NULL where the column is NOT NULL takes its default.
        marks = ",".join([*(f"coalesce(?,{_TASK_DEFAULTS[k]})" if k in _TASK_DEFAULTS else "?" for k in cols), "?"])
        sets = ",".join(f"{k}=excluded.{k}" for k in (*cols, "updated_at") if k != "name")
        with transaction(self.conn):
            # An upsert, not INSERT OR REPLACE: a rewritten task keeps its row (its rowid, so its
            # place in 'rota status' and the dashboard) and the columns it does not set (kept).
            self.conn.executemany(
                f"INSERT INTO tasks({','.join(cols)},updated_at) VALUES({marks}) "
                f"ON CONFLICT(name) DO UPDATE SET {sets}",
                ((*(_enc(k, r.get(k)) for k in cols), now) for r in rows),
            )
            if resets:
                reason = {r["name"]: r.get("reason") or "" for r in rows}
                self.conn.executemany(
                    "INSERT INTO events(ts, task, kind, data) VALUES(?,?,'reset',?)",
                    [(now, n, _EVENT_JSON.encode({"state": "pending", "attempts": 0, "reason": reason.get(n, "")}))
                     for n in resets])
            self._event(None, event, {"tasks": len(rows)}, now)

    def remove_pending(self, names: Sequence[str], event: str = "respec") -> list[str]:
        """Remove the rows of these tasks that are pending (a live edit dropped them from the spec),
        with a ``removed`` event each; their attempts stay (attempt numbers go on if one comes back).
        Returns the names removed."""
        now, gone = time.time(), []
        with transaction(self.conn):
            for n in names:
                if self.conn.execute("DELETE FROM tasks WHERE name=? AND state='pending'", (n,)).rowcount == 1:
                    self._event(n, "removed", {"by": event}, now)
                    gone.append(n)
        return gone

    def transition(
        self,
        name: str,
        *,
        expect: str | Collection[str] | None,
        event: str,
        attempt: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        **fields: Any,
    ) -> bool:
        """Compare-and-set: update ``name`` only if its state is ``expect``.

        ``attempt`` (with key ``attempt``) upserts the attempts row in the same
        transaction; ``metrics`` replace the task's metrics. Returns False (and
        changes nothing) when the task is not in the expected state.
        """
        return self.apply([Change(name, expect, event, fields, attempt, metrics)])[0]

    def apply(self, changes: Sequence[Change], *, forecast: Sequence[ForecastRow] = ()) -> list[bool]:
        """Several compare-and-set transitions in ONE transaction (one commit); ``forecast`` rows
        (:meth:`set_forecast`) in the same one, after them."""
        now = time.time()
        results: list[bool] = []
        with transaction(self.conn):
            for ch in changes:
                results.append(self._apply_one(ch, now))
            if forecast:
                self._set_forecast(forecast)
        return results

    def _apply_one(self, ch: Change, now: float) -> bool:
        exp = () if ch.expect is None else (ch.expect,) if isinstance(ch.expect, str) else tuple(ch.expect)
        special = _SPECIAL_COLS
        args: list[Any] = [_enc(k, v) if k in special else v for k, v in ch.fields.items()]
        args.append(now)
        args.append(ch.name)
        args.extend(exp)
        cur = self.conn.execute(_update_sql(tuple(ch.fields), len(exp) if ch.expect is not None else -1), args)
        if cur.rowcount != 1:
            return False
        if ch.attempt is not None:
            a = ch.attempt
            self.conn.execute(_attempt_sql(tuple(a)), [ch.name, *(_enc(c, v) if c in special else v
                                                                  for c, v in a.items())])
        if ch.metrics:
            self.conn.execute("DELETE FROM metrics WHERE task=?", (ch.name,))
            self.conn.executemany(
                "INSERT INTO metrics(task,name,value) VALUES(?,?,?)",
                [(ch.name, k, float(v)) for k, v in ch.metrics.items()],
            )
        self._event(ch.name, ch.event, {k: v for k, v in ch.fields.items() if k in _EVENT_FIELDS}, now)
        return True

    def new_attempt_id(self) -> int:
        """A new attempt's id: unique among every attempt of this state folder, across runs.

        Given before the attempt is committed (its process's environment carries it, as
        ``ROTA_ATTEMPT_ID``) from a counter that starts above every committed id. Only the
        controller (one per state folder, :class:`rota.engine.lock.StateLock`) asks; an id given to
        an attempt that was never committed started nothing (attempts are committed before any
        process starts) and may be given again by the next controller.
        """
        if self._next_attempt_id is None:
            self._next_attempt_id = int(self.conn.execute("SELECT coalesce(max(id), 0) FROM attempts").fetchone()[0])
        self._next_attempt_id += 1
        return self._next_attempt_id

    def log_event(self, task: str | None, kind: str, data: Mapping[str, Any]) -> None:
        with transaction(self.conn):
            self._event(task, kind, data, time.time())

    def _event(self, task: str | None, kind: str, data: Mapping[str, Any], ts: float) -> None:
        self.conn.execute("INSERT INTO events(ts, task, kind, data) VALUES(?,?,?,?)", (ts, task, kind, _EVENT_JSON.encode(data if isinstance(data, dict) else dict(data))))

    # -- controls: requests to the controller ----------------------------
    def add_control(self, kind: str, targets: Sequence[str] = (), data: Mapping[str, Any] | None = None) -> int:
        """Commit a request for the controller (``rota cancel`` ...); returns its id. The controller
        takes each request once (:meth:`take_controls`), in id order."""
        if kind not in CONTROL_KINDS:
            raise ValueError(f"unknown control kind {kind!r}; expected one of {', '.join(CONTROL_KINDS)}")
        with transaction(self.conn):
            cur = self.conn.execute("INSERT INTO controls(ts, kind, targets, data) VALUES(?,?,?,?)",
                                    (time.time(), kind, json.dumps(list(targets)), json.dumps(dict(data or {}))))
        return int(cur.lastrowid or 0)

    def take_control(self, control_id: int, result: str, changes: Sequence[Change] = ()) -> bool:
        """Mark a request taken with ``result`` (what it changed, for the requester) and apply its
        ``changes`` in the same transaction: a request is applied exactly once, even if the
        controller dies right after. False when it was already taken."""
        now = time.time()
        with transaction(self.conn):
            cur = self.conn.execute("UPDATE controls SET taken_at=?, result=? WHERE id=? AND taken_at IS NULL",
                                    (now, result, control_id))
            if cur.rowcount != 1:
                return False
            for ch in changes:
                self._apply_one(ch, now)
        return True

    # -- why tasks wait, when they start (rota.engine.predict) -------------
    def set_forecast(self, rows: Sequence[ForecastRow]) -> None:
        """Write ``(task, reason, predicted_start, predicted_end)`` rows in one transaction, without
        events (a prediction is not a transition). ``reason`` lands only on a task still ``pending``
        (None: keep the stored one); the predictions on a pending or running one. A task that moved
        on since the prediction was made keeps its row as it is. :meth:`apply` takes them too."""
        with transaction(self.conn):
            self._set_forecast(rows)

    def _set_forecast(self, rows: Sequence[ForecastRow]) -> None:
        self.conn.executemany(
            "UPDATE tasks SET reason=CASE WHEN state='pending' THEN coalesce(?, reason) ELSE reason END, "
            "predicted_start=?, predicted_end=? WHERE name=? AND state IN ('pending','launching','running')",
            ((reason, start, end, name) for name, reason, start, end in rows))  # no second list of 20,000

    # -- GPU samples ------------------------------------------------------
    def add_gpu_samples(self, rows: Sequence[tuple[float, int, float | None, int | None, int | None]]) -> None:
        with transaction(self.conn):
            self.conn.executemany("INSERT INTO gpu_samples VALUES(?,?,?,?,?)", rows)

    def set_peak_gpu_memory(self, task: str, attempt: int, peak_bytes: int) -> None:
        """Record the most GPU memory attempt ``attempt`` of ``task`` was seen using (the GPU monitor)."""
        self.conn.execute("UPDATE attempts SET peak_gpu_memory_bytes=? WHERE task=? AND attempt=?",
                          (peak_bytes, task, attempt))

_EVENT_FIELDS = frozenset({"state", "exit_code", "reason", "attempts"})
_EVENT_JSON = json.JSONEncoder(default=str)
_SPECIAL_COLS = _JSON_COLS | {"gpus", "gpu_bytes", "vars"}
_TASK_DEFAULTS: dict[str, str] = dict(
    re.findall(r"^\s*(\w+) \w+ NOT NULL DEFAULT ('[^']*'|-?\d+)", DDL.split("CREATE TABLE IF NOT EXISTS tasks(")[1].split(");")[0],
               re.M))
"""``tasks``' NOT NULL columns with a default -> that default's SQL text (from the DDL)."""


@functools.lru_cache(maxsize=256)
def _update_sql(fields: tuple[str, ...], n_expect: int) -> str:
    """The compare-and-set UPDATE for these fields (cached: a run uses a handful of shapes)."""
    q = f"UPDATE tasks SET {','.join(f'{k}=?' for k in fields)},updated_at=? WHERE name=?"
    if n_expect >= 0:
        q += f" AND state IN ({','.join('?' * n_expect)})"
    return q


@functools.lru_cache(maxsize=256)
def _attempt_sql(cols: tuple[str, ...]) -> str:
    return (f"INSERT INTO attempts(task,{','.join(cols)}) VALUES(?,{','.join('?' * len(cols))}) "
            f"ON CONFLICT(task, attempt) DO UPDATE SET {','.join(f'{c}=excluded.{c}' for c in cols)}")


def _enc(key: str, value: Any) -> Any:
    if key not in _SPECIAL_COLS:
        return value
    if key in _JSON_COLS and value is not None and not isinstance(value, str):
        return json.dumps(value)
    if key in ("gpus", "gpu_bytes") and value is None:
        return "[]"
    if key == "vars" and value is None:
        return "{}"
    return value
