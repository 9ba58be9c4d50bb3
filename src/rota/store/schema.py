"""The state database's schema: tables, version, identity. Plain constants, no imports,
so both the writer (:mod:`rota.store.sqlite`) and the light reader behind ``rota status``
(:mod:`rota.store.read`) use the same ones.
"""

SCHEMA_VERSION = 1
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
  updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts(
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
  PRIMARY KEY(task, attempt)
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
    "command", "trial", "params", "updated_at",
)
