"""The reader's side of the state store: ``rota status`` without the controller's machinery.

Imports only ``sqlite3``, ``json``, ``os``, ``time``, :mod:`rota.errors`, :mod:`rota.store.base` and
:mod:`rota.store.schema` (plain constants), so a
``rota status`` process started once a second during a run costs little CPU
(the run needs the cores). :func:`read_status` reads everything in ONE short
read transaction on a read-only connection:

- the picture is consistent (meta, tasks and metrics from the same commit);
- the reader never blocks the writer (WAL) and holds its snapshot briefly
  (~0.1 s at 20,000 tasks), so the controller's checkpoints are not starved and the WAL
  does not grow while readers poll;
- a database that is missing, empty, foreign, from a newer rota or corrupt
  raises :class:`rota.errors.StateError` with one-line messages.

It also holds the store's one read-only way in (:func:`connect_ro`) and its one identity
check (:func:`schema_version`), which :func:`rota.store.sqlite.connect` uses for every reader
(``rota status``, ``report``, ``logs``, ``plan``) and, with schema creation and migration on
top, for the controller: one set of rules and messages. A schema-1 database (before attempt
ids) is read as it is; only a controller migrates it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator
from json.encoder import encode_basestring_ascii
from typing import Any, NamedTuple

from rota.errors import StateError
from rota.store.base import HELD, PENDING, QUEUED, QUEUED_PREFIX, RUNNING
from rota.store.base import STATES as _STATES
from rota.store.schema import APP_ID, DB_NAME, SCHEMA_VERSION

STATUS_VERSION = 1
_NO_DURATION = ("pending", "skipped")
_PREDICTED = frozenset({"pending", "launching", "running"})  # states whose predictions are shown
_INF = float("inf")

_CODE_OF_ATTEMPT = "(SELECT a.code FROM attempts a WHERE a.task=name AND a.attempt=tasks.attempt)"
_TASKS_QUERY = (
    "SELECT name, state, attempts, exit_code, reason, gpus, cpus, started_at, ended_at, log_path, out_dir, "
    f"vars, params, grp, predicted_start, predicted_end, attempt, {_CODE_OF_ATTEMPT}, held "
    "FROM tasks ORDER BY rowid"
)
# The code lookup, one index search per task row, cost 16 ms of a 20,000-task status (0.20 CPU-s) in
# a state where no attempt has code (`command: true`, no git repository): one scan (~2 ms, stops at
# the first code found) says whether to look it up at all (:func:`_tasks_query`).
_TASKS_QUERY_NO_CODE = _TASKS_QUERY.replace(_CODE_OF_ATTEMPT, "NULL")
_ANY_CODE_QUERY = "SELECT 1 FROM attempts WHERE code IS NOT NULL LIMIT 1"
# Schema 2 has no attempts.code nor predictions; schema 1 restarted attempt numbers with attempts.
_TASKS_QUERY_V2 = _TASKS_QUERY_NO_CODE.replace("predicted_start, predicted_end", "NULL, NULL").replace(", held FROM", ", 0 FROM")
_TASKS_QUERY_V1 = _TASKS_QUERY_V2.replace(", attempt, NULL, 0 FROM", ", attempts, NULL, 0 FROM")


STATE_FOLDER = ".rota"
SPECS_FOLDER = "specs"  # inside STATE_FOLDER: one folder per spec file not named rota.yaml
DEFAULT_STEM = "rota"


def state_dir_for_spec(spec_path: str | os.PathLike[str]) -> str:
    """The state folder of one spec file (absolute).

    ``rota.yaml`` (or ``rota.yml``) keeps its state in ``.rota/`` beside it; a
    spec file with any other name, ``NAME.yaml``, in ``.rota/specs/NAME/``, so
    two spec files in one folder never share tasks, logs, outputs or a lock. A
    ``.rota/`` that an older rota made for this very spec file (its database
    names it) stays that spec's, so a run started before this rule continues.
    """
    real = os.path.realpath(spec_path)
    base = os.path.join(os.path.dirname(real), STATE_FOLDER)
    stem = os.path.splitext(os.path.basename(real))[0]
    if stem == DEFAULT_STEM or _recorded_spec(base) == real:
        return base
    return os.path.join(base, SPECS_FOLDER, stem)


def _recorded_spec(sd: str) -> str | None:
    """The spec file that ``sd``'s database records (realpath), or None (no database, unreadable)."""
    path = os.path.join(sd, DB_NAME)
    if not os.path.exists(path):
        return None
    try:
        conn = _connect_ro(path)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='spec_path'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return os.path.realpath(row[0]) if row and row[0] else None


def nested_specs(sd: str | os.PathLike[str]) -> list[str]:
    """Names (``NAME`` of ``NAME.yaml``) of the spec files whose state is under ``sd/specs/``, sorted."""
    specs_dir = os.path.join(sd, SPECS_FOLDER)
    try:
        return sorted(n for n in os.listdir(specs_dir) if os.path.exists(os.path.join(specs_dir, n, DB_NAME)))
    except OSError:
        return []


def state_dir_of(target: str | os.PathLike[str] | None, state_dir: str | os.PathLike[str] | None = None) -> str:
    """Where the state to read is: ``--state-dir`` wins; else a spec file's
    (:func:`state_dir_for_spec`); else a folder holding state.db; else the
    ``.rota`` in that folder (the current one without ``target``).

    A ``.rota`` without a database of its own but holding exactly one spec's
    state (``.rota/specs/NAME``) means that one; several are ambiguous: a
    StateError names them and asks for the spec file.
    """
    if state_dir is not None:
        return os.fspath(state_dir)
    t = "." if target is None else os.fspath(target)
    if os.path.isfile(t):
        return state_dir_for_spec(t)
    if not os.path.exists(t):  # a typo in a spec's name: said as 'rota serve' says it
        raise StateError(f"{t}: no such spec file or folder")
    if os.path.exists(os.path.join(t, DB_NAME)):
        return t
    base = os.path.join(t, STATE_FOLDER) if target is not None else STATE_FOLDER
    if os.path.exists(os.path.join(base, DB_NAME)):
        return base
    found = nested_specs(base)
    if len(found) == 1:
        return os.path.join(base, SPECS_FOLDER, found[0])
    if found:
        names = ", ".join(f"{n}.yaml" for n in found)
        raise StateError(f"{base} holds the state of several spec files ({names}); "
                         f"name one, e.g. 'rota status {found[0]}.yaml'")
    return base


# A number's and a string's JSON text, inline in the generated loop (no call per field): a number as
# json.dumps writes it (repr; inf and nan, whose repr ends in "f" or "n", through dumps), a string
# as ensure_ascii JSON text; None as null.
_NUM = "('null' if {0} is None else r if (r := repr({0}))[-1] not in 'fn' else dumps({0}))"
_STR = "('null' if {0} is None else e({0}))"
_TASK_JSON = (
    ("name", "e(name)"), ("state", "e(state)"), ("attempts", "attempts"), ("exit_code", _NUM.format("exit_code")),
    ("reason", _STR.format("reason")), ("gpus", "gpus"), ("cpus", "cpus"), ("started_at", _NUM.format("started")),
    ("ended_at", _NUM.format("ended")), ("duration_s", _NUM.format("duration")), ("log_path", _STR.format("log")),
    ("out_dir", _STR.format("out")),
    ("vars", "vars_"), ("params", "'null' if params is None else params"), ("metrics", "dumps(m) if m else '{}'"),
    ("group", _STR.format("grp")), ("queued", "'true' if queued else 'false'"), ("attempt", "attempt"),
    ("code", "'null' if code is None else code"),
    ("predicted_start_s", f"('null' if state not in waits else {_NUM.format('p_start')})"),
    ("predicted_end_s", f"('null' if state not in waits else {_NUM.format('p_end')})"),
    ("held", "'true' if held else 'false'"),
)
"""Every task's fields in ``rota status --json`` (version 1), in their order, each with the expression
that makes its JSON text from the task's row: the one list that :func:`status_json` is generated from
(and so :func:`read_status`). Fields are only ever added, at the end (docs/status-json.md).
``attempts``: attempts since the task was last reset; ``attempt``: the number of its latest attempt
(its ``attempt-N.log``; never restarts; 0: none yet); ``code``: the code that attempt ran (git
commit, dirty, diff hash; or its script's hash: :mod:`rota.engine.codever`; null: none recorded). The JSON columns (gpus, vars, params) hold
``json.dumps`` text already: copied, never decoded and encoded again. ``predicted_start_s``,
``predicted_end_s``: when the controller's forecast has the task start and end, in epoch seconds
as ``started_at`` (null: no forecast, or the task is neither pending nor running; see
docs/status-json.md). ``held``: ``rota hold`` keeps it from launching (its state stays ``pending``)."""
TASK_FIELDS = tuple(field for field, _ in _TASK_JSON)

# The loop over task rows, generated from _TASK_JSON (as collections.namedtuple generates its
# class): one f-string per task, no call per field; half the CPU of decoding and json.dumps-ing.
_TASK_LINES_SRC = '''
def task_lines(rows, metrics, states, now, counts, dumps, listed, running, prefix, no_duration, waits):
    lines = []
    e = _enc  # strings: ensure_ascii JSON text, None handled inline (no call per field)
    for name, state, attempts, exit_code, reason, gpus, cpus, started, ended, log, out, vars_, params, grp, p_start, p_end, attempt, code, held in rows:
        counts[state] = counts.get(state, 0) + 1
        queued = state == running and reason.startswith(prefix)  # store.base.is_queued, inlined
        if states is not None and not listed(state, queued, states, held):
            continue
        duration = None if queued or started is None or state in no_duration else (ended or now) - started
        m = metrics.get(name)
        lines.append(f"""LINE""")
    return lines
'''.replace("LINE", "{{" + ", ".join(f'"{f}": {{{e}}}' for f, e in _TASK_JSON) + "}}")
_generated: dict[str, Any] = {"_enc": encode_basestring_ascii}
exec(compile(_TASK_LINES_SRC, "<rota.store.read task_lines>", "exec"), _generated)
_task_lines: Callable[..., list[str]] = _generated["task_lines"]


def read_status(state_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The documented ``rota status --json`` object (version 1) of ``state_dir``.

    Exactly what :func:`status_json` prints, parsed (one builder: the two cannot differ; a
    whole-document parse also costs less than decoding each task's JSON columns one by one).
    Fields are only ever added (README, "rota status --json"). Safe during a
    run: read-only, never takes a lock the controller waits for.
    """
    data: dict[str, Any] = json.loads(status_json(state_dir))
    return data


def status_json(state_dir: str | os.PathLike[str], states: Collection[str] | None = None) -> str:
    """The ``rota status --json`` text, ending in a newline (see :data:`TASK_FIELDS`).

    Top-level keys on their own lines, two-space indent, one task per line
    (``grep``-able). Built from the rows without decoding and re-encoding the JSON columns (gpus,
    vars, params hold ``json.dumps`` text: copying it gives the same bytes),
    which halves the CPU of a ``rota status --json`` on a 5,000-task run.
    ``states``: list only the tasks in these states (``counts`` still counts all); ``queued`` selects
    the running tasks that their backend still holds in its queue.
    """
    sd = os.fspath(state_dir)
    # The controller's liveness first, then the database snapshot: a controller seen dead has
    # committed everything it will (its lock is released after its last commit).
    ctl = controller(sd)
    counts = dict.fromkeys(_STATES, 0)
    now = time.time()
    with _one_read(os.path.join(sd, DB_NAME)) as (conn, version):
        meta, metrics = _meta_metrics(conn)
        # Each row is made into its line as it is read, not fetched whole first: the row is still in
        # the CPU's cache and freed at once (20,000 tasks: -10 ms of ~0.17 CPU-s; the snapshot is
        # held ~50 ms longer, a reader's snapshot never blocks the writer in WAL mode).
        lines = _task_lines(conn.execute(_tasks_query(conn, version)), metrics, states, now, counts, json.dumps,
                            listed, RUNNING, QUEUED_PREFIX, _NO_DURATION, _PREDICTED)
    head = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in _head(sd, meta, counts, ctl).items())
    if not lines:
        return "{\n" + head + ',\n  "tasks": []\n}\n'
    # One join makes the whole text (10 MB at 20,000 tasks): each further `+` of it copied it again
    # (five copies, 14 ms of ~0.17 CPU-s).
    lines[0] = "{\n" + head + ',\n  "tasks": [\n    ' + lines[0]
    lines[-1] += "\n  ]\n}\n"
    return ",\n    ".join(lines)


def _jstr(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


def _jnum(value: float | None) -> str:
    """A number as json.dumps writes it (repr; NaN and infinities as JSON's Python extension)."""
    if value is None:
        return "null"
    return json.dumps(value) if value != value or value in (_INF, -_INF) else repr(value)


def listed(state: str, queued: bool, states: Collection[str] | None, held: object = False) -> bool:
    """Whether ``--state`` values ``states`` (None: all) select a task: its state is one of them, or
    it is queued (a running task its backend has not started yet) and ``queued`` is one of them, or
    it is a held pending task (``rota hold``; ``held``: its column, truthy) and ``held`` is one of them."""
    return (states is None or state in states or (queued and QUEUED in states)
            or (bool(held) and state == PENDING and HELD in states))


def _head(sd: str, meta: dict[str, str], counts: dict[str, int], ctl: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": STATUS_VERSION,
        "run_id": meta.get("run_id"),
        "spec": meta.get("spec_path"),
        "state_dir": os.path.realpath(sd),
        "controller": ctl,
        "counts": counts,
    }


def _meta_metrics(conn: sqlite3.Connection) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """(meta's run id and spec path, metrics by task) read through ``conn`` (inside a read transaction)."""
    meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('run_id', 'spec_path')").fetchall())
    metrics: dict[str, dict[str, float]] = {}
    for task, name, value in conn.execute("SELECT task, name, value FROM metrics"):
        metrics.setdefault(task, {})[name] = value
    return meta, metrics


def _tasks_query(conn: sqlite3.Connection, version: int) -> str:
    """The query of every task row for a database of schema ``version`` (inside the read transaction)."""
    if version < 3:
        return _TASKS_QUERY_V2 if version >= 2 else _TASKS_QUERY_V1
    return _TASKS_QUERY if conn.execute(_ANY_CODE_QUERY).fetchone() else _TASKS_QUERY_NO_CODE


@contextlib.contextmanager
def _one_read(path: str) -> Iterator[tuple[sqlite3.Connection, int]]:
    """A read-only connection to ``path`` inside ONE read transaction (one snapshot for all that is
    read in the block; ended, never held, right after) and the database's schema version; a
    database error is the state's (:func:`unusable`)."""
    conn = connect_ro(path)
    try:
        conn.execute("BEGIN")
        try:
            yield conn, schema_version(conn, path)
        finally:
            conn.execute("COMMIT")
    except sqlite3.DatabaseError as e:
        raise unusable(path, e) from None
    finally:
        conn.close()


def connect_ro(path: str) -> sqlite3.Connection:
    """The one read-only way into a state database (``rota status``, ``report``, ``logs``, ``plan``,
    :class:`rota.store.sqlite.SqliteStore` with ``readonly``): never creates it, never writes, waits
    for a writer's lock (busy_timeout) rather than failing. StateError when it is missing or cannot be
    opened. Check :func:`schema_version` before reading."""
    if not os.path.exists(path):
        raise StateError(f"no rota state at {path}; run 'rota run SPEC' first")
    try:
        conn = _connect_ro(path)
    except sqlite3.Error as e:
        raise unusable(path, e) from None
    try:
        conn.execute("PRAGMA busy_timeout=30000")
    except sqlite3.Error as e:
        conn.close()
        raise unusable(path, e) from None
    return conn


def unusable(path: str | os.PathLike[str], e: BaseException) -> StateError:
    """The one message for a state database SQLite cannot read (corrupt, not a database)."""
    return StateError(f"{path} is not a usable rota state database ({e}); move it away or pass another --state-dir")


def _connect_ro(path: str) -> sqlite3.Connection:
    """A read-only connection to the database at ``path`` (never creates it, never writes)."""
    return sqlite3.connect(f"file:{_uri_path(path)}?mode=ro", uri=True, timeout=30.0, isolation_level=None,
                           check_same_thread=False)


def _uri_path(path: str) -> str:
    """``path`` for a ``file:`` URI: '%', '?' and '#' in folder names are data, not syntax."""
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")


def schema_version(conn: sqlite3.Connection, path: str | os.PathLike[str], *, empty_ok: bool = False) -> int:
    """The schema version of rota's database behind ``conn``; 0 for an empty database (refused unless
    ``empty_ok``: the writer creates the schema there). Refuses a database that is not rota's or is
    from a newer rota. The one identity check, for readers and the writer (:mod:`rota.store.sqlite`)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    if version == 0 and app == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
        if not empty_ok:
            raise StateError(f"{path} is empty; run 'rota run SPEC' first")
        return 0
    if app != APP_ID:
        raise StateError(f"{path} is a database but not rota's (application_id {app}); refusing to touch it")
    if version > SCHEMA_VERSION:
        raise StateError(f"{path} was written by a newer rota (schema {version} > {SCHEMA_VERSION}); upgrade rota")
    return int(version)


def controller(state_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"pid", "host", "alive"}`` of the controller, from ``controller.lock``.

    Alive means a process holds the lock's flock (a stale file from a killed
    controller says dead); pid and host are what the controller wrote there.
    """
    lock = os.path.join(os.fspath(state_dir), "controller.lock")
    info: dict[str, Any] = {"pid": None, "alive": False}
    try:
        with open(lock) as f:
            text = f.read()
        if text:
            info.update(json.loads(text))
        fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            info["alive"] = True
        finally:
            os.close(fd)
    except (OSError, ValueError):
        pass
    return {"pid": info.get("pid"), "host": info.get("host"), "alive": info["alive"]}


# -- the rows that changed: one reader that follows a big run (rota serve) -------------------------

_CHANGED_QUERY = _TASKS_QUERY.replace("SELECT ", "SELECT rowid, updated_at, ", 1).replace(
    " ORDER BY rowid", " WHERE updated_at >= ? ORDER BY rowid")
_FORECAST_QUERY = ("SELECT rowid, reason, predicted_start, predicted_end FROM tasks "
                   "WHERE state IN ('pending', 'launching', 'running')")


class ChangedRows(NamedTuple):
    """What :func:`read_changed` read in one transaction: ``head`` (the status object's head, without
    ``counts``: the caller holds every row), ``total`` (task rows now), ``full`` (every row read),
    ``rows`` (``(rowid, updated_at, task)`` in the status order, ``task`` exactly as
    :func:`read_status` lists it), ``watermark`` (the largest ``updated_at`` seen: the next call's
    ``since``), ``forecast`` (when asked: ``(rowid, reason, predicted_start, predicted_end)`` of every
    pending, launching or running task, columns the predictor writes without moving ``updated_at``)."""

    head: dict[str, Any]
    total: int
    full: bool
    rows: list[tuple[int, float, dict[str, Any]]]
    watermark: float | None
    forecast: list[tuple[int, str, float | None, float | None]] | None


def read_changed(state_dir: str | os.PathLike[str], since: float | None = None, *,
                 forecast: bool = False) -> ChangedRows:
    """The task rows of ``state_dir`` whose ``updated_at`` is ``since`` or later (None: all), in ONE
    short read transaction on a read-only connection, as :func:`read_status` reads.

    Every write of a task's row but the predictor's moves its ``updated_at`` (one controller writes
    at a time, with its clock), so a reader that keeps the rows and passes the last ``watermark`` as
    ``since`` sees every row changed since (``>=``: a row written in the same instant is never
    lost). It cannot see: removed rows (compare ``total``), the predictor's columns
    (``forecast=True``), a clock set back (read everything now and then). A state from before
    schema 3 is read whole (``full``). No index on ``updated_at``: a scan, milliseconds at 20,000."""
    sd = os.fspath(state_dir)
    ctl = controller(sd)
    with _one_read(os.path.join(sd, DB_NAME)) as (conn, version):
        since = since if version >= SCHEMA_VERSION else None
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('run_id', 'spec_path')").fetchall())
        total = int(conn.execute("SELECT count(*) FROM tasks").fetchone()[0])
        if since is None:
            raw = conn.execute(_tasks_query(conn, version).replace("SELECT ", "SELECT rowid, updated_at, ", 1)).fetchall()
            metric_rows = conn.execute("SELECT task, name, value FROM metrics").fetchall()
        else:
            raw = conn.execute(_CHANGED_QUERY, (since,)).fetchall()
            metric_rows = conn.execute("SELECT task, name, value FROM metrics WHERE task IN (SELECT value FROM "
                                       "json_each(?))", (json.dumps([r[2] for r in raw]),)).fetchall() if raw else []
        fc = conn.execute(_FORECAST_QUERY).fetchall() if forecast and version >= 3 else None
    metrics: dict[str, dict[str, float]] = {}
    for task, name, value in metric_rows:
        metrics.setdefault(task, {})[name] = value
    # The builder of status_json: a row read here is exactly what a full read lists.
    lines = _task_lines([r[2:] for r in raw], metrics, None, time.time(), {}, json.dumps, listed, RUNNING,
                        QUEUED_PREFIX, _NO_DURATION, _PREDICTED)
    rows = [(int(r[0]), float(r[1]), t) for r, t in zip(raw, json.loads("[" + ",".join(lines) + "]"), strict=True)]
    head = {k: v for k, v in _head(sd, meta, {}, ctl).items() if k != "counts"}
    return ChangedRows(head, total, since is None, rows, max((r[1] for r in rows), default=since), fc)
