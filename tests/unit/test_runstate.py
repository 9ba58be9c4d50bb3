"""The run's state and its transitions (rota.engine.runstate), without processes.

A small run is driven event by event: placed -> submitted -> ended -> released,
and the state, the staged store rows and the transitions' kinds are checked.
The last test replays a real run's event log (the store as a journal).
"""

from __future__ import annotations

import sqlite3

import pytest

from rota.core.dag import blocked, needs_met
from rota.core.resources import Placement, Request
from rota.engine import runstate as R
from rota.engine import runstate_attempt as RA
from rota.engine import runstate_control as RC
from rota.engine.runstate import Op, RunState
from rota.executors.base import Handle
from rota.spec.load import load_spec
from rota.spec.model import Task
from rota.store import base as S
from rota.store.sqlite import SqliteStore
from tests.helpers import rota, write_spec


def _tasks(*specs: tuple[str, tuple[str, ...]], retries: int = 0, gpus: int = 0) -> list[Task]:
    req = Request(gpus=gpus, gpu_memory_bytes=8 * 2**30 if gpus else None) if gpus else Request()
    return [Task(name, f"echo {name}", needs=needs, retries=retries, request=req) for name, needs in specs]


def _start(rs: RunState, names: list[str]) -> list:
    """Ready tasks ``names``: placed, submitted and running. Returns the store changes made."""
    changes: list = []
    for n in names:
        lv = rs.tasks[n]
        assert n in rs.ready
        R.apply(rs, [RA.placed(lv, Placement(n, (), (), 1, 0), attempt=lv.attempt + 1, attempt_id=None, now=1.0,
                              deadline=None, log_path=f"/logs/{n}", out=f"/out/{n}", params=None)], changes.extend)
        R.apply(rs, [RA.submitted(lv, Handle(f"{n}#1", "local", "1"))], changes.extend)
    return changes


def _end(rs: RunState, name: str, phase: str, *, now: float = 2.0, interrupting: bool = False, **kw) -> list:
    """``name``'s attempt ends: its own transition and what it releases."""
    lv = rs.tasks[name]
    tr = RA.ended(lv, RA.End(phase, 0 if phase == "succeeded" else 1, "", now, **kw), retry_delay_s=1.0,
                 interrupting=interrupting)
    R.apply(rs, [tr])
    follow = R.released(rs, name, now)
    R.apply(rs, follow)
    return [tr, *follow]


def _initial(tasks: list[Task]) -> RunState:
    rs = RunState.of(tasks)
    R.apply(rs, [R.made_ready(n) for n, lv in rs.tasks.items() if lv.unmet == 0])
    return rs


def test_success_makes_dependents_ready_only_when_every_need_is_done():
    # a -> b, a -> c, (b, c) -> d: a diamond.
    rs = _initial(_tasks(("a", ()), ("b", ("a",)), ("c", ("a",)), ("d", ("b", "c"))))
    assert rs.ready == {"a"} and rs.tasks["d"].unmet == 2
    changes = _start(rs, ["a"])
    assert [c.event for c in changes] == ["launching", "running"]
    assert changes[0].expect == S.PENDING and changes[1].expect == S.LAUNCHING
    assert rs.running.keys() == {"a"} and rs.ready == set() and rs.tasks["a"].state == S.RUNNING
    trs = _end(rs, "a", "succeeded")
    assert [(t.kind, t.task) for t in trs] == [(Op.SUCCEEDED, "a"), (Op.READY, "b"), (Op.READY, "c")]
    assert rs.running == {} and rs.ready == {"b", "c"} and rs.fresh == {"b", "c"}
    _start(rs, ["b", "c"])
    _end(rs, "b", "succeeded")
    assert rs.tasks["d"].unmet == 1 and "d" not in rs.ready
    _end(rs, "c", "succeeded")
    assert rs.tasks["d"].unmet == 0 and rs.ready == {"d"}


def test_failure_skips_every_pending_dependent_once_naming_the_failed_task():
    rs = _initial(_tasks(("a", ()), ("b", ("a",)), ("c", ("a",)), ("d", ("b", "c")), ("e", ())))
    _start(rs, ["a", "e"])
    trs = _end(rs, "a", "failed")
    assert trs[0].kind is Op.FAILED and rs.tasks["a"].state == S.FAILED
    skipped = [t.task for t in trs if t.kind is Op.SKIPPED]
    assert sorted(skipped) == ["b", "c", "d"]  # d is reached twice (through b and c), skipped once
    assert all(rs.tasks[n].reason == "needs a, which did not succeed" for n in skipped)
    assert rs.tasks["e"].state == S.RUNNING and rs.running.keys() == {"e"}  # unrelated work goes on


def test_retries_back_off_then_fail_for_good():
    rs = _initial(_tasks(("a", ()), ("b", ("a",)), retries=2))
    _start(rs, ["a"])
    tr, again = _end(rs, "a", "failed", now=10.0)
    assert tr.kind is Op.RETRY and tr.fields["not_before"] == 11.0 and tr.state == S.PENDING
    assert again.kind is Op.READY and again.delayed
    assert rs.ready == {"a"} and rs.delayed == {"a"} and rs.fresh == set() and rs.tasks["a"].handle is None
    rs.delayed.clear()
    rs.fresh.add("a")  # the back-off is over (the engine's _launch moves it)
    _start(rs, ["a"])
    tr, _ = _end(rs, "a", "failed", now=20.0)
    assert tr.kind is Op.RETRY and tr.fields["not_before"] == 22.0  # doubled
    rs.delayed.clear()
    _start(rs, ["a"])
    trs = _end(rs, "a", "failed", now=30.0)
    assert [t.kind for t in trs] == [Op.FAILED, Op.SKIPPED] and rs.tasks["a"].attempts == 3
    assert rs.tasks["a"].attempt == 3 and trs[0].attempt["attempt"] == 3


def test_lost_and_preempted_attempts_retry_at_once_for_free():
    rs = _initial(_tasks(("a", ())))
    _start(rs, ["a"])
    tr, ready = _end(rs, "a", "lost")
    assert tr.kind is Op.RETRY and tr.fields["free_attempts"] == 1 and tr.attempt["state"] == "lost"
    assert not ready.delayed and rs.fresh == {"a"}
    _start(rs, ["a"])
    tr, _ = _end(rs, "a", "failed", retry_free=True)
    assert tr.kind is Op.RETRY and rs.tasks["a"].free_attempts == 2  # retries: 0, yet it runs again


def test_no_retry_while_interrupting():
    rs = _initial(_tasks(("a", ()), retries=3))
    _start(rs, ["a"])
    assert _end(rs, "a", "failed", interrupting=True)[0].kind is Op.FAILED


def test_oom_rebooks_more_gpu_memory_for_the_retry():
    rs = _initial(_tasks(("a", ()), retries=1, gpus=1))
    _start(rs, ["a"])
    tr = _end(rs, "a", "failed", oom=True, oom_booking=16 * 2**30)[0]
    assert tr.kind is Op.RETRY and tr.fields["reason"] == "cuda out of memory"
    assert rs.tasks["a"].gpu_override == 16 * 2**30 and "booking 16GB per GPU" in tr.note


def test_queued_attempt_start_and_interrupt():
    rs = RunState.of(_tasks(("a", ()), ("b", ())), queues=True)
    R.apply(rs, [R.made_ready("a"), R.made_ready("b")])
    _start(rs, ["a", "b"])
    assert rs.tasks["a"].queued
    changes: list = []
    R.apply(rs, [RA.started(rs.tasks["a"], 5.0, 65.0)], changes.extend)
    assert not rs.tasks["a"].queued and rs.tasks["a"].deadline == 65.0 and changes[0].event == "started"
    trs = RA.interrupted(rs, 9.0)
    R.apply(rs, trs, changes.extend)
    assert {t.task for t in trs} == {"a", "b"} and rs.running == {}
    assert all(lv.state == S.INTERRUPTED for lv in rs.tasks.values())
    assert [c.event for c in changes[1:]] == ["interrupted", "interrupted"]


def test_submit_failure_is_recorded_then_ends_as_a_failure():
    rs = _initial(_tasks(("a", ())))
    lv = rs.tasks["a"]
    changes: list = []
    R.apply(rs, [RA.placed(lv, Placement("a", (), (), 1, 0), attempt=1, attempt_id=7, now=1.0, deadline=None,
                          log_path="/l", out="/o", params=None)], changes.extend)
    assert lv.attempt_id == 7 and changes[0].attempt["id"] == 7
    tr = RA.submitted(lv, OSError("no bash"))
    R.apply(rs, [tr], changes.extend)
    assert tr.kind is Op.SUBMIT_FAILED and lv.handle is None and lv.reason == "could not start: no bash"
    assert _end(rs, "a", "failed")[0].kind is Op.FAILED


def test_ready_is_memory_only_and_every_stored_kind_has_an_expected_state():
    changes: list = []
    rs = RunState.of(_tasks(("a", ())))
    R.apply(rs, [R.made_ready("a")], changes.extend)
    assert changes == [] and rs.ready == {"a"}
    # A live edit's transitions are memory only too: rota.engine.respec writes their rows itself.
    assert set(R.EXPECT) == set(Op) - {Op.READY, Op.ADDED, Op.REDEFINED, Op.DROPPED, Op.WAITING}


def test_dag_helpers_work_on_indices_as_the_simulator_uses_them():
    # 0 -> 1, 0 -> 2, (1, 2) -> 3
    users = [[1, 2], [3], [3], []]
    unmet = [0, 1, 1, 2]
    assert needs_met(users[0], unmet) == [1, 2] and unmet == [0, 0, 0, 2]
    assert needs_met(users[1], unmet) == [] and needs_met(users[2], unmet) == [3]
    dead = [True, False, False, False]
    assert sorted(blocked(users.__getitem__, [0], lambda u: not dead[u])) == [(1, 0), (2, 0), (3, 2)]


def test_replaying_a_finished_runs_event_log_gives_its_state(tmp_path):
    """The store's events are a journal: replayed through apply(), they give every task's state,
    attempts, exit code and reason as the run left them."""
    spec = write_spec(tmp_path, """
        tasks:
          - {name: a, command: "true"}
          - {name: b, command: "true", needs: [a]}
          - {name: flaky, command: "test -f {out}/once || { touch {out}/once; exit 3; }", retries: 1}
          - {name: bad, command: "exit 4"}
          - {name: after-bad, command: "true", needs: [bad]}
          - {name: after-after, command: "true", needs: [after-bad, a]}
    """)
    p = rota("run", spec, "--plain", "--retry-delay", "0")
    assert p.returncode == 1, p.stdout + p.stderr
    store = SqliteStore(tmp_path / ".rota", readonly=True)
    try:
        rows = {r.name: r for r in store.tasks()}
        rs = R.replay(load_spec(str(spec)).tasks, store.events())
    finally:
        store.close()
    got = {n: (lv.state, lv.attempts, lv.exit_code, lv.reason) for n, lv in rs.tasks.items()}
    want = {n: (r.state, r.attempts, r.exit_code, r.reason) for n, r in rows.items()}
    assert got == want
    assert want["flaky"][:2] == (S.SUCCEEDED, 2) and want["after-after"][0] == S.SKIPPED
    assert rs.ready == set() and rs.running == {}


def test_replaying_several_runs_event_log_gives_the_last_runs_state(tmp_path):
    """Across runs: each run's sync logs a RESET per task it sends back to pending (a failure, a
    --rerun, a consumer of what reruns, a changed command) and replay recounts at each sync; a
    timeout is a TIMED_OUT transition before the attempt's end."""
    body = """
        tasks:
          - {name: a, command: "echo A"}
          - {name: b, command: "true", needs: [a]}
          - {name: c, command: "test -f %s", needs: [b]}
          - {name: d, command: "true", needs: [c]}
          - {name: slow, command: "sleep 30", timeout: 1s}
          - {name: other, command: "true"}
    """
    flag = tmp_path / "flag"
    spec = write_spec(tmp_path, body % flag)
    assert rota("run", spec, "--plain", "--retry-delay", "0", "--grace", "1").returncode == 1
    flag.touch()  # c succeeds now; d runs after it; slow times out again
    assert rota("run", spec, "--plain", "--retry-delay", "0", "--grace", "1").returncode == 1
    spec.write_text(spec.read_text().replace("echo A", "echo A2"))  # a changed: a, b, c, d run again
    assert rota("run", spec, "--plain", "--retry-delay", "0", "--grace", "1", "--rerun", "other").returncode == 1
    store = SqliteStore(tmp_path / ".rota", readonly=True)
    try:
        rows = {r.name: r for r in store.tasks()}
        events = store.events()
        rs = R.replay(load_spec(str(spec)).tasks, events)
    finally:
        store.close()
    got = {n: (lv.state, lv.attempts, lv.exit_code, lv.reason) for n, lv in rs.tasks.items()}
    want = {n: (r.state, r.attempts, r.exit_code, r.reason) for n, r in rows.items()}
    assert got == want
    assert {n: r.state for n, r in rows.items()} == {
        "a": S.SUCCEEDED, "b": S.SUCCEEDED, "c": S.SUCCEEDED, "d": S.SUCCEEDED, "slow": S.FAILED,
        "other": S.SUCCEEDED}
    assert rows["slow"].reason == "timeout"
    kinds = [(e["kind"], e["task"]) for e in events]
    assert kinds.count((Op.TIMED_OUT.value, "slow")) == 3
    assert kinds.count((Op.RESET.value, "other")) == 1  # --rerun once; kept as done in run 2
    assert kinds.count((Op.RESET.value, "d")) == 2  # skipped in run 1; run again after a changed a in run 3


@pytest.mark.parametrize("kind", list(Op))
def test_every_op_is_a_store_event_kind_string(kind):
    # Event kinds in the store are a public contract (rota report, the events table): plain strings.
    assert isinstance(kind.value, str) and sqlite3.connect(":memory:").execute("SELECT ?", (kind,)).fetchone()[0] == kind


def test_plan_blocks_exactly_what_the_run_skips():
    """One DAG bookkeeping (rota.core.dag): the tasks ``rota plan`` reports blocked behind an
    unschedulable task are the tasks a run skips when that task fails, and the rest run in both."""
    from rota.core.resources import Gpu, Machine
    from rota.plan.simulate import simulate

    gb = 2**30
    huge = Request(gpus=1, gpu_memory_bytes=200 * gb)
    tasks = [
        Task("big", "x", request=huge), Task("b", "x", needs=("big",)), Task("c", "x", needs=("b", "e")),
        Task("d", "x", needs=("c",)), Task("e", "x"), Task("f", "x", needs=("e",)), Task("g", "x", needs=("b", "c")),
    ]
    plan = simulate(tasks, Machine((Gpu(0, 80 * gb),), 4, 64 * gb), {t.name: 1.0 for t in tasks})
    assert plan.unschedulable and plan.unschedulable[0][0] == "big"
    rs = _initial(tasks)
    _start(rs, ["big", "e"])
    _end(rs, "e", "succeeded")
    skipped = {t.task for t in _end(rs, "big", "failed") if t.kind is Op.SKIPPED}
    assert skipped == {name for name, _ in plan.blocked} == {"b", "c", "d", "g"}
    assert {s.name for s in plan.slots} == {"e", "f"} and rs.ready == {"f"}


def test_controls_cancel_retry_hold_and_priority_are_transitions():
    """rota cancel / retry / hold / priority (engine.control) as pure transitions: a cancelled
    pending task skips its users; a cancelling attempt's end is CANCELLED, never a retry; a retry
    brings back the task and what it left skipped; --force reruns a done task and its consumers."""
    rs = _initial(_tasks(("a", ()), ("b", ("a",)), ("c", ("b",)), ("d", ()), ("e", ("d",)), retries=3))
    # a pending task cancelled: never starts, its users skipped transitively
    R.apply(rs, [RC.cancelled("d", 1.0)])
    follow = R.released(rs, "d", 1.0)
    assert [(f.kind, f.task) for f in follow] == [(Op.SKIPPED, "e")]
    R.apply(rs, follow)
    assert "d" not in rs.ready and rs.tasks["d"].state == S.CANCELLED
    # a running one: marked, then its end (a SIGTERM's exit) is CANCELLED with retries left
    _start(rs, ["a"])
    R.apply(rs, [RC.cancelling("a")])
    assert rs.tasks["a"].cancelling and rs.tasks["a"].reason == RC.CANCELLING_REASON
    kinds = [(t.kind, t.task) for t in _end(rs, "a", "failed")]
    assert kinds == [(Op.CANCELLED, "a"), (Op.SKIPPED, "b"), (Op.SKIPPED, "c")]
    assert "a" not in rs.running
    # retry: a and everything it left skipped come back, a fresh budget; only a is ready
    trs = RC.retried(rs, ["a"])
    assert [(t.kind, t.task) for t in trs] == [(Op.REQUEUED, "a"), (Op.REQUEUED, "b"), (Op.REQUEUED, "c")]
    R.apply(rs, trs)
    for t in trs:
        R.apply(rs, R.released(rs, t.task))
    assert rs.ready == {"a"} and rs.tasks["a"].attempts == 0 and not rs.tasks["a"].cancelling
    _start(rs, ["a"])
    _end(rs, "a", "succeeded")
    assert rs.ready == {"b"}
    # --force on a done task: its users wait for it again; without force it is left alone
    assert RC.retried(rs, ["a"]) == []
    trs = RC.retried(rs, ["a"], force=True)
    assert [t.task for t in trs] == ["a"]  # b is pending (ready), not done: only the unmet count changes
    R.apply(rs, trs)
    R.apply(rs, R.released(rs, "a"))
    assert rs.ready == {"a"} and rs.tasks["b"].unmet == 1
    # hold / release / priority: columns, and the held set the launcher filters on
    R.apply(rs, [RC.held("b", True), RC.prioritised("b", 5)])
    assert rs.held == {"b"} and rs.tasks["b"].held == 1 and rs.tasks["b"].priority == 5
    R.apply(rs, [RC.held("b", False)])
    assert rs.held == set() and rs.tasks["b"].held == 0
    # every control's store change has a compare-and-set state
    assert {Op.CANCELLING, Op.CANCELLED, Op.REQUEUED, Op.HELD, Op.RELEASED, Op.PRIORITY} <= set(R.EXPECT)


def test_an_attempt_lost_while_being_cancelled_is_cancelled_not_run_again():
    rs = _initial(_tasks(("a", ()), ("b", ("a",))))
    _start(rs, ["a"])
    lv = rs.tasks["a"]
    assert RA.lost(lv, 3.0).kind is Op.LOST  # vanished with its controller: runs again
    lv.cancelling = True  # recovery read the dead controller's CANCELLING mark
    tr = RA.lost(lv, 3.0)
    assert (tr.kind, tr.state, tr.attempt and tr.attempt["state"]) == (Op.CANCELLED, S.CANCELLED, S.CANCELLED)
    R.apply(rs, [tr])
    assert [(f.kind, f.task) for f in R.released(rs, "a", 3.0)] == [(Op.SKIPPED, "b")]
