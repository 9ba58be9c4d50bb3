"""What ``rota status --json`` costs on a big state: the same bytes for less (issue 18's bound: within
10% of be36206 on 20,000 tasks; docs/performance.md). Real runs and real SQLite; a big state is a
real run's rows copied under new names (a 2,000-task run would take most of a minute here)."""

from __future__ import annotations

import json
import sqlite3
import tracemalloc
from pathlib import Path

from rota.store.read import _tasks_query, connect_ro, schema_version, status_json
from tests.helpers import rota, write_spec


def _run(folder: Path, spec: str) -> Path:
    p = rota("run", write_spec(folder, spec), "--plain", "--gpus", "none")
    assert p.returncode == 0, p.stdout + p.stderr
    return folder / ".rota"


def _grow(sd: Path, copies: int) -> None:
    """Each task row (and its attempt rows) ``copies`` times more, under new names."""
    conn = sqlite3.connect(sd / "state.db")
    with conn:
        for table, key in (("tasks", "name"), ("attempts", "task")):
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})") if r[1] != "id"]
            picked = ", ".join(f"{c} || '-' || n.i" if c == key else c for c in cols)
            conn.execute(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {copies}) "
                         f"INSERT INTO {table}({', '.join(cols)}) SELECT {picked} FROM {table}, n")
    conn.close()


def test_code_is_read_where_any_attempt_has_one_and_skipped_where_none_has(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('ROTA_METRIC acc=1')\n")
    sd = _run(tmp_path, """
        tasks:
          - {name: "script-{x}", command: "python train.py", matrix: {x: [1, 2]}}
          - {name: plain, command: "true"}
    """)
    tasks = {t["name"]: t for t in json.loads(status_json(sd))["tasks"]}
    conn = sqlite3.connect(sd / "state.db")
    recorded = dict(conn.execute("SELECT task, code FROM attempts"))
    conn.close()
    assert json.loads(recorded["script-1"])["kind"] == "script" and recorded["plain"] is None
    assert {n: t["code"] for n, t in tasks.items()} == {n: c and json.loads(c) for n, c in recorded.items()}

    # No attempt with code (`true` outside git): one scan decides, no lookup per task row (16 ms of
    # a 20,000-task status); the output says null for each, as the lookup did.
    plain = _run(tmp_path / "plain", """
        tasks:
          - {name: "t-{x}", command: "true", matrix: {x: [1, 2, 3]}}
    """)
    for folder, lookup in ((sd, True), (plain, False)):
        conn = connect_ro(str(folder / "state.db"))
        assert ("SELECT a.code" in _tasks_query(conn, schema_version(conn, folder))) is lookup
        conn.close()
    assert [t["code"] for t in json.loads(status_json(plain))["tasks"]] == [None] * 3


def test_memory_of_a_big_status_is_about_twice_its_text(tmp_path: Path) -> None:
    # Rows made into lines as they are read, and one join for the text: at 20,000 tasks the peak was
    # 5.5x the 10 MB text (every row fetched first, then the text copied by five `+`), now 2.1x.
    sd = _run(tmp_path, """
        tasks:
          - {name: "ok-{x}", command: "echo ROTA_METRIC acc=0.{x}", matrix: {x: [1, 2, 3, 4]}}
          - {name: last, command: "true"}
    """)
    _grow(sd, 599)  # 3,000 tasks
    text = status_json(sd)
    data = json.loads(text)
    assert len(data["tasks"]) == 3000 and data["counts"]["succeeded"] == 3000
    tracemalloc.start()
    try:
        again = status_json(sd)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert again == text
    assert peak < 2.6 * len(text), (peak, len(text))
