"""The state folder under stress: disk full, read-only, corrupt or foreign databases.

Disk full uses a real tmpfs (``mount -t tmpfs -o size=...``) and read-only a
read-only bind mount; both need root. Without the permission the tests skip
with the reason, unless ``CI`` is set (then they fail: CI must run them).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rota.store.schema import SCHEMA_VERSION
from tests.helpers import (
    by_name,
    processes_with_env,
    read_records,
    rota,
    start_rota,
    wait_for,
    write_spec,
)

REC = str(Path(__file__).resolve().parent.parent / "recorder.py")
PY = sys.executable


def _mount(*args: str) -> None:
    p = subprocess.run(["mount", *args], capture_output=True, text=True)
    if p.returncode != 0:
        reason = f"mount {' '.join(args)} not permitted: {p.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def _umount(path: Path) -> None:
    for _ in range(50):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        _umount(path)


def fill(folder: Path) -> Path:
    """Write zeros until the file system is full; returns the filler file.

    Unbuffered, so closing the file does not retry a failed write (ENOSPC).
    """
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 512, 1):
            try:
                while f.write(b"\0" * size):
                    pass
            except OSError:
                pass
    return filler


def _spec(tmp_path: Path, rec: Path, n: int = 24, sleep: float = 0.4) -> Path:
    return write_spec(tmp_path, f"""
        tasks:
          - name: t-{{i}}
            command: {PY} {REC} {rec} t-{{i}} {sleep}
            matrix: {{i: {list(range(n))}}}
          - {{name: final, command: "{PY} {REC} {rec} final 0.05", needs: "t-*"}}
    """)


def _check_complete(rec: Path, sd: Path, n: int) -> None:
    st = by_name(sd)
    assert {t["state"] for t in st.values()} == {"succeeded"}, st
    recs = read_records(rec)
    names = [r["name"] for r in recs]
    assert {*names} == {*(f"t-{i}" for i in range(n)), "final"}
    # No task ran twice at once.
    for name in {*names}:
        mine = sorted((r["start"], r["end"]) for r in recs if r["name"] == name)
        for (_, e1), (s2, _) in zip(mine, mine[1:], strict=False):
            assert s2 >= e1, f"{name} overlapped itself"


def test_disk_full_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = _spec(tmp_path, rec)
    with tmpfs(tmp_path / "small", "3m") as disk:
        sd = disk / "state"
        proc = start_rota("run", spec, "--plain", "--cpus", "3", "--grace", "1", "--state-dir", sd)
        wait_for(lambda: len(read_records(rec)) >= 3, timeout=60)
        filler = fill(disk)
        out, _ = proc.communicate(timeout=90)
        print(out)
        assert proc.returncode == 2, out
        last = out.strip().splitlines()[-1]
        assert last.startswith("rota: error: state folder") and "disk full" in last and "nothing is lost" in last, out
        assert "Traceback" not in out
        assert processes_with_env("ROTA_STATE_DIR", str(sd)) == []
        filler.unlink()
        p = rota("run", spec, "--plain", "--cpus", "3", "--state-dir", sd)
        assert p.returncode == 0, p.stdout + p.stderr
        _check_complete(rec, sd, 24)


def test_disk_full_at_start_is_a_clear_error(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = _spec(tmp_path, rec, n=3, sleep=0.05)
    with tmpfs(tmp_path / "small", "1m") as disk:
        sd = disk / "state"
        sd.mkdir()
        fill(disk)
        p = rota("run", spec, "--plain", "--state-dir", sd)
        assert p.returncode == 2, p.stdout + p.stderr
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert "disk full" in p.stderr and "nothing is lost" in p.stderr
        assert read_records(rec) == []


@contextlib.contextmanager
def read_only(path: Path, pause_pid: int | None = None) -> Iterator[None]:
    """Make ``path`` read-only through a bind mount on itself.

    The kernel refuses (EBUSY) to make a mount read-only while any file is open for writing
    through it, and a busy run always has a task writing its log there. With ``pause_pid``
    the controller is stopped (SIGSTOP) so that it launches nothing, its running tasks end
    and close their files, and only then is the mount made read-only and the controller
    continued (SIGCONT): its next launch meets the read-only folder.
    """
    _mount("--bind", str(path), str(path))
    try:
        if pause_pid is not None:
            os.kill(pause_pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # EBUSY until the running tasks have ended
                if subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True).returncode == 0:
                    break
                time.sleep(0.05)
            else:
                _mount("-o", "remount,ro,bind", str(path))
        finally:
            if pause_pid is not None:
                os.kill(pause_pid, signal.SIGCONT)
        yield
    finally:
        _umount(path)


def test_read_only_state_folder_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    # 40 x 0.4 s on 3 slots: the run is still launching when the folder turns read-only. The
    # controller is paused meanwhile (see read_only): with 3 tasks always writing their logs
    # the remount otherwise stayed EBUSY, which was this test's flake in CI.
    spec = _spec(tmp_path, rec, n=40, sleep=0.4)
    sd = tmp_path / "state"
    proc = start_rota("run", spec, "--plain", "--cpus", "3", "--grace", "1", "--state-dir", sd)
    wait_for(lambda: len(read_records(rec)) >= 3, timeout=60)
    with read_only(sd, pause_pid=proc.pid):
        assert proc.poll() is None, "the run ended before the folder became read-only"
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 2, out
        last = out.strip().splitlines()[-1]
        assert last.startswith("rota: error: state folder") and "read-only" in last, out
        assert "Traceback" not in out
        assert processes_with_env("ROTA_STATE_DIR", str(sd.resolve())) == []
        p = rota("run", spec, "--plain", "--state-dir", sd)
        assert p.returncode == 2 and "read-only" in p.stderr and "Traceback" not in p.stderr, p.stderr
        # Readers still work on a read-only state folder.
        assert len(by_name(sd)) == 41
    p = rota("run", spec, "--plain", "--cpus", "3", "--state-dir", sd)
    assert p.returncode == 0, p.stdout + p.stderr
    _check_complete(rec, sd, 40)


# ------------------------------------------------------------ bad databases
def _one_task_spec(tmp_path: Path) -> Path:
    return write_spec(tmp_path, f"""
        tasks:
          - {{name: a, command: "touch {tmp_path / 'ran'}"}}
    """)


def _refused(tmp_path: Path, needle: str) -> None:
    spec = _one_task_spec(tmp_path)
    db = tmp_path / ".rota" / "state.db"
    before = db.read_bytes()
    p = rota("run", spec, "--plain")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert needle in p.stderr and str(db) in p.stderr, p.stderr
    assert not (tmp_path / "ran").exists(), "a task ran on a refused database"
    assert db.read_bytes() == before, "a refused database was modified"
    s = rota("status", "--json", "--state-dir", tmp_path / ".rota")
    assert s.returncode == 2 and "Traceback" not in s.stderr and needle in s.stderr, s.stderr


def test_garbage_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".rota").mkdir()
    (tmp_path / ".rota" / "state.db").write_bytes(os.urandom(8192))
    _refused(tmp_path, "not a usable rota state database")


def test_truncated_database_is_refused(tmp_path: Path) -> None:
    spec = _one_task_spec(tmp_path)
    assert rota("run", spec, "--plain").returncode == 0
    (tmp_path / "ran").unlink()
    db = tmp_path / ".rota" / "state.db"
    data = db.read_bytes()
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(len(data) - 16))
    _refused(tmp_path, "not a usable rota state database")


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".rota").mkdir()
    conn = sqlite3.connect(tmp_path / ".rota" / "state.db")
    conn.execute("CREATE TABLE invoices(id INTEGER PRIMARY KEY, amount REAL)")
    conn.execute("INSERT INTO invoices(amount) VALUES (12.5)")
    conn.commit()
    conn.close()
    _refused(tmp_path, "not rota's")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    spec = _one_task_spec(tmp_path)
    assert rota("run", spec, "--plain").returncode == 0
    (tmp_path / "ran").unlink()
    conn = sqlite3.connect(tmp_path / ".rota" / "state.db")
    conn.execute("PRAGMA user_version=99")
    conn.close()
    _refused(tmp_path, "newer rota")


# What rota wrote before attempt ids (schema 1): attempt numbers restarted at each reset.
SCHEMA_1 = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks(name TEXT PRIMARY KEY, grp TEXT NOT NULL DEFAULT '', fingerprint TEXT NOT NULL DEFAULT '',
  inputs_fp TEXT, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, free_attempts INTEGER NOT NULL DEFAULT 0,
  exit_code INTEGER, reason TEXT NOT NULL DEFAULT '', gpus TEXT NOT NULL DEFAULT '[]',
  gpu_bytes TEXT NOT NULL DEFAULT '[]', cpus INTEGER NOT NULL DEFAULT 0, memory_bytes INTEGER NOT NULL DEFAULT 0,
  gpu_memory_override INTEGER, started_at REAL, ended_at REAL, deadline REAL, not_before REAL, log_path TEXT,
  out_dir TEXT, handle TEXT, vars TEXT NOT NULL DEFAULT '{}', estimate_s REAL, command TEXT NOT NULL DEFAULT '',
  trial INTEGER, params TEXT, updated_at REAL NOT NULL);
CREATE TABLE attempts(task TEXT NOT NULL, attempt INTEGER NOT NULL, state TEXT NOT NULL, exit_code INTEGER,
  reason TEXT NOT NULL DEFAULT '', gpus TEXT NOT NULL DEFAULT '[]', started_at REAL, ended_at REAL, log_path TEXT,
  handle TEXT, peak_gpu_memory_bytes INTEGER, command TEXT NOT NULL DEFAULT '', PRIMARY KEY(task, attempt));
CREATE TABLE events(seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, task TEXT, kind TEXT NOT NULL,
  data TEXT NOT NULL DEFAULT '{}');
CREATE TABLE metrics(task TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY(task, name));
CREATE TABLE gpu_samples(ts REAL NOT NULL, gpu INTEGER NOT NULL, util_pct REAL, mem_used_bytes INTEGER,
  mem_total_bytes INTEGER);
CREATE INDEX tasks_state ON tasks(state);
"""


def test_a_schema_1_state_is_read_as_it_is_and_migrated_by_the_next_run(tmp_path: Path) -> None:
    """An existing .rota keeps working: ``rota status`` reads schema 1 without writing it; ``rota run``
    migrates it (attempts get ids) and numbers the next attempt after the highest one recorded,
    so the old logs stay as they were and ``rota logs --attempt`` still reaches them."""
    spec = write_spec(tmp_path, "tasks:\n  - {name: t, command: 'echo new $ROTA_ATTEMPT'}\n")
    sd = tmp_path / ".rota"
    logs = sd / "logs" / "t"
    logs.mkdir(parents=True)
    for n in (1, 2):
        (logs / f"attempt-{n}.log").write_text(f"old {n}\n")
    conn = sqlite3.connect(sd / "state.db")
    conn.executescript(SCHEMA_1)
    conn.execute("PRAGMA application_id=1383036001")  # 'Rota'
    conn.execute("PRAGMA user_version=1")
    conn.execute("INSERT INTO tasks(name, state, attempts, exit_code, log_path, updated_at) "
                 "VALUES('t', 'failed', 1, 1, ?, 0)", (str(logs / "attempt-1.log"),))
    # A first run's retry left attempt 2; a reset then restarted numbers and attempt 1 was overwritten.
    conn.executemany("INSERT INTO attempts(task, attempt, state, log_path) VALUES('t', ?, 'failed', ?)",
                     [(2, str(logs / "attempt-2.log")), (1, str(logs / "attempt-1.log"))])
    conn.commit()
    conn.close()

    p = rota("status", "--json", "--state-dir", sd)
    assert p.returncode == 0, p.stderr
    t = json.loads(p.stdout)["tasks"][0]
    assert (t["attempts"], t["attempt"]) == (1, 1)  # schema 1 knows no more than its count
    assert rota("logs", "t", "--state-dir", sd, "--attempt", "2").stdout == "old 2\n"
    with contextlib.closing(sqlite3.connect(sd / "state.db")) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 1  # readers never migrate

    p = rota("run", spec, "--plain")
    assert p.returncode == 0, p.stdout + p.stderr
    with contextlib.closing(sqlite3.connect(sd / "state.db")) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        rows = c.execute("SELECT attempt, id, state FROM attempts WHERE task='t' ORDER BY attempt").fetchall()
    assert [(a, s) for a, _, s in rows] == [(1, "failed"), (2, "failed"), (3, "succeeded")]
    assert len({i for _, i, _ in rows}) == 3
    assert [(logs / f"attempt-{n}.log").read_text() for n in (1, 2, 3)] == ["old 1\n", "old 2\n", "new 3\n"]
    t = by_name(sd)["t"]
    assert (t["attempts"], t["attempt"], t["log_path"]) == (1, 3, str(logs / "attempt-3.log"))
    for n, text in ((1, "old 1\n"), (3, "new 3\n")):
        assert rota("logs", "t", "--state-dir", sd, "--attempt", str(n)).stdout == text
