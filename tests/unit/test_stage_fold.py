"""The engine's staging: an attempt that ends before its handle is committed costs one write, not two."""

from __future__ import annotations

from rota.engine.state import EngineState
from rota.store import base as S
from rota.store.sqlite import Change, SqliteStore


class _Staging(EngineState):
    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self._staged = []
        self._staged_handles = {}


def _store(tmp_path) -> SqliteStore:
    store = SqliteStore(tmp_path)
    store.upsert_tasks([{"name": n, "grp": n, "fingerprint": "f", "state": S.PENDING, "attempts": 0,
                         "free_attempts": 0, "reason": "", "gpus": [], "gpu_bytes": [], "cpus": 1, "memory_bytes": 0,
                         "vars": {}, "command": "true"} for n in ("a", "b")])
    return store


def _launching(name: str) -> Change:
    return Change(name, S.PENDING, "launching", {"state": S.LAUNCHING, "attempts": 1, "started_at": 1.0},
                  {"attempt": 1, "state": S.LAUNCHING, "started_at": 1.0})


def _running(name: str) -> Change:
    h = {"key": f"{name}#1", "executor": "local", "external_id": "42", "data": {"pid": 42}}
    return Change(name, S.LAUNCHING, "running", {"state": S.RUNNING, "handle": h},
                  {"attempt": 1, "state": S.RUNNING, "handle": h})


def _succeeded(name: str) -> Change:
    return Change(name, S.ACTIVE, "succeeded", {"state": S.SUCCEEDED, "exit_code": 0, "ended_at": 2.0, "handle": None},
                  {"attempt": 1, "state": S.SUCCEEDED, "ended_at": 2.0, "exit_code": 0}, {"acc": 0.5})


def test_end_staged_after_uncommitted_handle_is_one_transition(tmp_path):
    store = _store(tmp_path)
    eng = _Staging(store)
    eng._stage(_launching("a"), _launching("b"))
    eng._flush()
    eng._stage(_running("a"), _running("b"))
    eng._stage(_succeeded("a"))  # a ended within the round; b still runs
    assert [c.event for c in eng._staged] == ["succeeded", "running"]
    eng._flush()
    a, b = store.task("a"), store.task("b")
    assert (a.state, a.exit_code, a.handle) == (S.SUCCEEDED, 0, None)
    assert b.state == S.RUNNING and b.handle["data"]["pid"] == 42
    att = {r["task"]: r for r in store.attempts()}
    assert att["a"]["state"] == S.SUCCEEDED and att["a"]["handle"]["data"]["pid"] == 42  # the handle is kept
    assert store.metrics() == {"a": {"acc": 0.5}}
    kinds = [(e["task"], e["kind"]) for e in store.events() if e["task"]]
    assert kinds == [("a", "launching"), ("b", "launching"), ("a", "succeeded"), ("b", "running")]


def test_committed_handle_is_not_folded(tmp_path):
    store = _store(tmp_path)
    eng = _Staging(store)
    eng._stage(_launching("a"))
    eng._flush()
    eng._stage(_running("a"))
    eng._flush()
    eng._stage(_succeeded("a"))
    eng._flush()
    assert [e["kind"] for e in store.events() if e["task"] == "a"] == ["launching", "running", "succeeded"]
    assert store.task("a").state == S.SUCCEEDED


def _started(name: str) -> Change:
    return Change(name, S.ACTIVE, "started", {"started_at": 1.5, "deadline": None, "reason": ""},
                  {"attempt": 1, "state": S.RUNNING, "started_at": 1.5})


def test_start_seen_before_the_handle_commit_folds_into_it_and_the_end_still_folds(tmp_path):
    """A queued backend's attempt (Ray) seen starting, then ending, in one round: still one transition."""
    store = _store(tmp_path)
    eng = _Staging(store)
    eng._stage(_launching("a"), _launching("b"))
    eng._flush()
    eng._stage(_running("a"), _running("b"))
    eng._stage(_started("a"), _started("b"))
    assert [c.event for c in eng._staged] == ["running", "running"]
    eng._stage(_succeeded("a"))
    assert [c.event for c in eng._staged] == ["succeeded", "running"]
    eng._flush()
    a, b = store.task("a"), store.task("b")
    assert (a.state, a.started_at, a.ended_at) == (S.SUCCEEDED, 1.5, 2.0)
    assert (b.state, b.started_at, b.reason) == (S.RUNNING, 1.5, "") and b.handle["data"]["pid"] == 42
    att = {r["task"]: r for r in store.attempts()}
    assert att["a"]["started_at"] == 1.5 and att["a"]["handle"]["data"]["pid"] == 42
    kinds = [(e["task"], e["kind"]) for e in store.events() if e["task"]]
    assert kinds == [("a", "launching"), ("b", "launching"), ("a", "succeeded"), ("b", "running")]
