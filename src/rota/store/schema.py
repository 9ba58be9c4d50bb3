"""The state database's schema: tables, version, identity. Plain constants, no imports,
so both the writer (:mod:`rota.store.sqlite`) and the light reader behind ``rota status``
(:mod:`rota.store.read`) use the same ones.
"""

SCHEMA_VERSION = 3
"""3: a run can be steered: ``controls`` holds requests to the controller (``rota cancel``,
``retry``, ``hold``, ``release``, ``priority``, a new spec or new limits), each taken once;
``tasks`` learns ``held``, ``priority`` (a live override), ``predicted_start`` and
``predicted_end`` (the controller's simulation of the rest of the run); ``attempts.code`` records
the code each attempt ran (JSON: git commit, dirty, diff hash; or the script's hash).
2: every attempt has an id (``attempts.id``, unique in the state folder) and attempt numbers
never restart (``tasks.attempt``: the number of the task's latest attempt). Older schemas are
migrated (:data:`MIGRATIONS`) when a controller opens them; readers read all of them."""
APP_ID = 0x526F7461  # "Rota"
DB_NAME = "state.db"

DDL = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks(
  name TEXT PRIMARY KEY,
  grp TEXT NOT NULL DEFAULT '',
  fingerprint TEXT NOT NULL DEFAULT '',
  inputs_fp TEXT,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  free_attempts INTEGER NOT NULL DEFAULT 0,
  exit_code INTEGER,
  reason TEXT NOT NULL DEFAULT '',
  gpus TEXT NOT NULL DEFAULT '[]',
  gpu_bytes TEXT NOT NULL DEFAULT '[]',
  cpus INTEGER NOT NULL DEFAULT 0,
  memory_bytes INTEGER NOT NULL DEFAULT 0,
  gpu_memory_override INTEGER,
  started_at REAL,
  ended_at REAL,
  deadline REAL,
  not_before REAL,
  log_path TEXT,
  out_dir TEXT,
  handle TEXT,
  vars TEXT NOT NULL DEFAULT '{}',
  estimate_s REAL,
  command TEXT NOT NULL DEFAULT '',
  trial INTEGER,
  params TEXT,
  updated_at REAL NOT NULL,
  attempt INTEGER NOT NULL DEFAULT 0,
  held INTEGER NOT NULL DEFAULT 0,
  priority INTEGER,
  predicted_start REAL,
  predicted_end REAL
);
CREATE TABLE IF NOT EXISTS attempts(
  id INTEGER PRIMARY KEY,
  task TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  state TEXT NOT NULL,
  exit_code INTEGER,
  reason TEXT NOT NULL DEFAULT '',
  gpus TEXT NOT NULL DEFAULT '[]',
  started_at REAL,
  ended_at REAL,
  log_path TEXT,
  handle TEXT,
  peak_gpu_memory_bytes INTEGER,
  command TEXT NOT NULL DEFAULT '',
  code TEXT,
  UNIQUE(task, attempt)
);
CREATE TABLE IF NOT EXISTS events(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  ts REAL NOT NULL,
  task TEXT,
  kind TEXT NOT NULL,
  data TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS metrics(
  task TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY(task, name)
);
CREATE TABLE IF NOT EXISTS gpu_samples(
  ts REAL NOT NULL, gpu INTEGER NOT NULL, util_pct REAL, mem_used_bytes INTEGER, mem_total_bytes INTEGER
);
CREATE TABLE IF NOT EXISTS controls(
  id INTEGER PRIMARY KEY,
  ts REAL NOT NULL,
  kind TEXT NOT NULL,
  targets TEXT NOT NULL DEFAULT '[]',
  data TEXT NOT NULL DEFAULT '{}',
  taken_at REAL,
  result TEXT
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state);
"""

TASK_COLUMNS = (
    "name", "grp", "fingerprint", "inputs_fp", "state", "attempts", "free_attempts", "exit_code",
    "reason", "gpus", "gpu_bytes", "cpus", "memory_bytes", "gpu_memory_override", "started_at",
    "ended_at", "deadline", "not_before", "log_path", "out_dir", "handle", "vars", "estimate_s",
    "command", "trial", "params", "updated_at", "attempt", "held", "priority", "predicted_start",
    "predicted_end",
)
"""``tasks``' columns. ``attempts`` counts the attempts since the task was last reset (``--rerun``,
a need that runs again, Ctrl-C: what retries count, ``rota status``' ``attempts``); ``attempt`` is
the number of its latest attempt ever (its ``attempt-N.log``), kept through resets. ``held``: 1
while ``rota hold`` keeps it from launching; ``priority``: a live override of the spec's (NULL:
the spec's); ``predicted_start``/``predicted_end``: epoch seconds, written by the controller for
pending and running tasks (NULL: no prediction)."""

_ATTEMPT_COLS = ("task, attempt, state, exit_code, reason, gpus, started_at, ended_at, log_path, handle, "
                 "peak_gpu_memory_bytes, command")

MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 1 -> 2: attempts get an id (the v1 rows keep their order); tasks learn their latest attempt's
    # number (v1 restarted numbers at each reset and overwrote the rows: the highest one left).
    1: (
        "ALTER TABLE tasks ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0",
        "UPDATE tasks SET attempt=max(attempts, coalesce((SELECT max(a.attempt) FROM attempts a "
        "WHERE a.task=tasks.name), 0))",
        "CREATE TABLE attempts_v2(id INTEGER PRIMARY KEY, task TEXT NOT NULL, attempt INTEGER NOT NULL, "
        "state TEXT NOT NULL, exit_code INTEGER, reason TEXT NOT NULL DEFAULT '', gpus TEXT NOT NULL DEFAULT '[]', "
        "started_at REAL, ended_at REAL, log_path TEXT, handle TEXT, peak_gpu_memory_bytes INTEGER, "
        "command TEXT NOT NULL DEFAULT '', UNIQUE(task, attempt))",
        f"INSERT INTO attempts_v2({_ATTEMPT_COLS}) SELECT {_ATTEMPT_COLS} FROM attempts ORDER BY rowid",
        "DROP TABLE attempts",
        "ALTER TABLE attempts_v2 RENAME TO attempts",
    ),
    # 2 -> 3: steering (controls, held, a live priority) and predictions.
    2: (
        "ALTER TABLE tasks ADD COLUMN held INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tasks ADD COLUMN priority INTEGER",
        "ALTER TABLE tasks ADD COLUMN predicted_start REAL",
        "ALTER TABLE tasks ADD COLUMN predicted_end REAL",
        "ALTER TABLE attempts ADD COLUMN code TEXT",
        "CREATE TABLE controls(id INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL, "
        "targets TEXT NOT NULL DEFAULT '[]', data TEXT NOT NULL DEFAULT '{}', taken_at REAL, result TEXT)",
    ),
}
"""``MIGRATIONS[v]``: the statements that take a database from schema ``v`` to ``v + 1`` (run in one
transaction by :func:`rota.store.sqlite.connect`, read-write only)."""
