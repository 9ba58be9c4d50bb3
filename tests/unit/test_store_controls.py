"""Schema 3: requests to the controller (``controls``) and the steering columns of ``tasks``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from rota.store import base as S
from rota.store.schema import SCHEMA_VERSION
from rota.store.sqlite import Change, SqliteStore


def _row(name: str) -> dict[str, object]:
    return {"name": name, "state": S.PENDING, "attempts": 0, "free_attempts": 0, "reason": "", "gpus": [],
            "gpu_bytes": [], "cpus": 1, "memory_bytes": 0, "vars": {}, "command": "true"}


def test_a_control_is_taken_once_with_its_changes(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path)
    st.upsert_tasks([_row("a"), _row("b")])
    cid = st.add_control("hold", ["a", "b"], {"by": "test"})
    (c,) = st.controls()
    assert (c.id, c.kind, c.targets, c.data, c.taken_at) == (cid, "hold", ["a", "b"], {"by": "test"}, None)
    changes = [Change(n, S.PENDING, "hold", {"held": 1}) for n in ("a", "b")]
    assert st.take_control(cid, "held a, b", changes)
    assert not st.take_control(cid, "again", changes)  # exactly once
    assert st.controls() == []
    taken = st.control(cid)
    assert taken is not None and taken.result == "held a, b" and taken.taken_at is not None
    assert [st.task(n).held for n in ("a", "b")] == [1, 1]  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unknown control kind"):
        st.add_control("explode")


def test_schema_2_is_migrated_and_read(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path)
    st.upsert_tasks([_row("a")])
    st.close()
    conn = sqlite3.connect(tmp_path / "state.db")
    for col in ("held", "priority", "predicted_start", "predicted_end"):
        conn.execute(f"ALTER TABLE tasks DROP COLUMN {col}")
    conn.execute("ALTER TABLE attempts DROP COLUMN code")
    conn.execute("DROP TABLE controls")
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()
    ro = SqliteStore(tmp_path, readonly=True)  # a reader reads schema 2 as it is, without writing
    rec = ro.task("a")
    assert rec is not None and (rec.held, rec.priority, rec.predicted_start) == (0, None, None)
    assert ro.controls() == []
    ro.close()
    rw = SqliteStore(tmp_path)
    assert rw.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    assert rw.task("a").held == 0  # type: ignore[union-attr]
    assert rw.add_control("retry", ["a"]) == 1


def test_marked_tasks_are_the_rows_that_say_more_than_their_spec(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path)
    st.upsert_tasks([_row(n) for n in ("a", "b", "c", "d")])
    st.apply([Change("b", S.PENDING, "hold", {"held": 1}), Change("d", S.PENDING, "priority", {"priority": 5})])
    st.apply([Change("c", S.PENDING, "cancelling", {"reason": "stopping"})])
    assert st.marked_tasks("stopping") == [("b", 1, None, ""), ("c", 0, None, "stopping"), ("d", 0, 5, "")]
    assert st.marked_tasks("other") == [("b", 1, None, ""), ("d", 0, 5, "")]
    st.apply([Change("b", S.PENDING, "release", {"held": 0})])
    assert [m[0] for m in st.marked_tasks("other")] == ["d"]
    st.close()


def test_a_rewritten_task_keeps_its_place_and_what_the_user_steered(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path)
    st.upsert_tasks([_row(n) for n in ("a", "b", "c")])
    st.apply([Change("a", S.PENDING, "hold", {"held": 1, "priority": 7, "attempt": 3})])
    changed = dict(_row("a"), command="echo new", reason="redefined")
    st.upsert_tasks([changed, _row("d")], event="respec", resets=["a"])
    assert [t.name for t in st.tasks()] == ["a", "b", "c", "d"]  # its row, not a new one at the end
    a = st.task("a")
    assert a is not None and (a.command, a.reason, a.held, a.priority, a.attempt) == ("echo new", "redefined", 1, 7, 3)
    d = st.task("d")
    assert d is not None and (d.held, d.priority, d.attempt) == (0, None, 0)
    st.close()
