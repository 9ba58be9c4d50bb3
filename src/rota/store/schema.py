"""The state database's schema: tables, version, identity. Plain constants, no imports,
so both the writer (:mod:`rota.store.sqlite`) and the light reader behind ``rota status``
(:mod:`rota.store.read`) use the same ones.
"""

SCHEMA_VERSION = 2
"""2: every attempt has an id (``attempts.id``, unique in the state folder) and attempt numbers
never restart (``tasks.attempt``: the number of the task's latest attempt). 1 is migrated
(:data:`MIGRATIONS`) when a controller opens it; readers read both."""
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
  attempt INTEGER NOT NULL DEFAULT 0
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
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state);
"""

TASK_COLUMNS = (
    "name", "grp", "fingerprint", "inputs_fp", "state", "attempts", "free_attempts", "exit_code",
    "reason", "gpus", "gpu_bytes", "cpus", "memory_bytes", "gpu_memory_override", "started_at",
    "ended_at", "deadline", "not_before", "log_path", "out_dir", "handle", "vars", "estimate_s",
    "command", "trial", "params", "updated_at", "attempt",
)
"""``tasks``' columns. ``attempts`` counts the attempts since the task was last reset (``--rerun``,
a need that runs again, Ctrl-C: what retries count, ``rota status``' ``attempts``); ``attempt`` is
the number of its latest attempt ever (its ``attempt-N.log``), kept through resets."""

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
}
"""``MIGRATIONS[v]``: the statements that take a database from schema ``v`` to ``v + 1`` (run in one
transaction by :func:`rota.store.sqlite.connect`, read-write only)."""
