"""A live edit of the spec as transitions (rota.engine.spec_diff), without processes: the diff of
the run's tasks and the file's, applied with runstate.apply, then readiness. Also the live limits'
machine (rota.engine.respec.limited_machine)."""

from __future__ import annotations

import hashlib

import pytest

from rota.core.resources import Gpu, Machine, Placement
from rota.engine import runstate as R
from rota.engine import runstate_attempt as RA
from rota.engine import spec_diff as D
from rota.engine.respec import limited_machine
from rota.engine.runstate import Op, RunState
from rota.errors import MachineError
from rota.executors.base import Handle
from rota.spec.model import Task
from rota.store import base as S


def _fp(t: Task) -> str:
    return hashlib.sha256(t.command.encode()).hexdigest()[:8]


def _t(name: str, *needs: str, cmd: str | None = None) -> Task:
    return Task(name, cmd or f"echo {name}", needs=tuple(needs))


def _run(*tasks: Task) -> RunState:
    rs = RunState.of(tasks)
    R.apply(rs, [R.made_ready(n) for n, lv in rs.tasks.items() if lv.unmet == 0])
    return rs


def _set(rs: RunState, name: str, state: str) -> None:
    """Move ``name`` through the real transitions to ``state`` (running, succeeded or failed)."""
    lv = rs.tasks[name]
    R.apply(rs, [RA.placed(lv, Placement(name), attempt=lv.attempt + 1, attempt_id=None, now=1.0, deadline=None,
                          log_path="/l", out="/o", params=None)])
    R.apply(rs, [RA.submitted(lv, Handle(f"{name}#1", "local", "1"))])
    if state == S.RUNNING:
        return
    R.apply(rs, [RA.ended(lv, RA.End(state, 0 if state == S.SUCCEEDED else 1, "", 2.0), retry_delay_s=1.0,
                         interrupting=False)])
    R.apply(rs, R.released(rs, name, 2.0))


def _edit(rs: RunState, new: list[Task], **kw: object) -> tuple[D.SpecDiff, list[R.Transition]]:
    diff = D.diff_specs(rs, new, fingerprint=_fp, **kw)  # type: ignore[arg-type]
    R.apply(rs, diff.transitions)
    rs.count_unmet()
    follow = D.readiness(rs, set(diff.updated) | set(diff.rerun))
    R.apply(rs, follow)
    return diff, follow


def test_added_tasks_join_with_their_needs_and_become_ready_when_those_are_done():
    rs = _run(_t("a"), _t("b", "a"))
    _set(rs, "a", S.SUCCEEDED)
    diff, follow = _edit(rs, [_t("a"), _t("b", "a"), _t("c", "a"), _t("d", "c")])
    assert diff.added == ["c", "d"] and not diff.updated and not diff.dropped
    assert [tr.kind for tr in diff.transitions] == [Op.ADDED, Op.ADDED]
    assert rs.ready == {"b", "c"} and rs.tasks["d"].unmet == 1 and rs.dependents["c"] == ["d"]
    assert {tr.task for tr in follow if tr.kind is Op.READY} == {"c"}
    assert diff.order == ["a", "b", "c", "d"]


def test_a_pending_task_removed_from_the_file_is_dropped_a_changed_one_redefined():
    rs = _run(_t("a"), _t("b", "a"), _t("c", "a"))
    diff, _ = _edit(rs, [_t("a"), _t("c", "a", cmd="echo new")])
    assert diff.dropped == ["b"] and diff.updated == ["c"] and "b" not in rs.tasks
    assert rs.tasks["c"].task.command == "echo new" and rs.dependents["a"] == ["c"]
    assert rs.ready == {"a"}


def test_a_redefined_ready_task_is_offered_again_and_one_with_a_new_need_waits():
    rs = _run(_t("a"), _t("b"))
    _, follow = _edit(rs, [_t("a", cmd="sleep 1"), _t("b", "a")])
    assert rs.ready == {"a"} and rs.tasks["b"].unmet == 1
    assert {(tr.kind, tr.task) for tr in follow} == {(Op.READY, "a"), (Op.WAITING, "b")}
    assert rs.tasks["a"].attempts == 0 and rs.tasks["a"].not_before == 0.0


def test_running_tasks_are_left_alone_even_when_changed_or_gone():
    rs = _run(_t("a"), _t("b"), _t("c", "b"))
    _set(rs, "a", S.RUNNING)
    _set(rs, "b", S.RUNNING)
    diff, _ = _edit(rs, [_t("b", cmd="echo changed"), _t("c", "b")])
    assert diff.transitions == [] and not diff.dropped
    assert dict(diff.left_running).keys() == {"a", "b"}
    assert rs.tasks["b"].task.command == "echo b" and set(rs.running) == {"a", "b"}
    assert diff.order == ["b", "c", "a"]


def test_a_done_task_whose_command_changed_reruns_only_with_rerun_and_its_users_after_it():
    def fresh() -> RunState:
        rs = _run(_t("a"), _t("b", "a"), _t("c", "b"))
        for n in ("a", "b", "c"):
            _set(rs, n, S.SUCCEEDED)
        return rs

    new = [_t("a", cmd="echo v2"), _t("b", "a"), _t("c", "b")]
    rs = fresh()
    diff, _ = _edit(rs, new)
    assert diff.changed_done == ["a"] and not diff.rerun and rs.tasks["a"].state == S.SUCCEEDED and not rs.ready
    rs = fresh()
    diff, _ = _edit(rs, new, rerun=lambda n: n == "a")
    assert diff.rerun == ["a", "b", "c"] and all(rs.tasks[n].state == S.PENDING for n in "abc")
    assert rs.ready == {"a"} and rs.tasks["b"].unmet == 1 and rs.tasks["c"].unmet == 1
    rs = fresh()
    diff, _ = _edit(rs, new, rerun=lambda n: n == "a", rerun_dependents=False)
    assert diff.rerun == ["a"] and rs.tasks["b"].state == S.SUCCEEDED


def test_a_task_added_under_a_failed_need_is_skipped():
    rs = _run(_t("a"))
    _set(rs, "a", S.FAILED)
    _, follow = _edit(rs, [_t("a"), _t("b", "a"), _t("c", "b")])
    assert {(tr.kind, tr.task) for tr in follow} == {(Op.SKIPPED, "b"), (Op.SKIPPED, "c")}
    assert rs.tasks["c"].state == S.SKIPPED and not rs.ready


def test_a_task_put_back_that_the_state_folder_holds_done_stays_done():
    rs = _run(_t("a"))
    a2 = _t("x")
    rec = {"x": D.Recorded(S.SUCCEEDED, _fp(a2), 3), "y": D.Recorded(S.PENDING, "", 2)}
    diff, _ = _edit(rs, [_t("a"), a2, _t("y")], recorded=rec)
    assert rs.tasks["x"].state == S.SUCCEEDED and rs.tasks["x"].attempt == 3
    assert rs.tasks["y"].state == S.PENDING and rs.tasks["y"].attempt == 2 and rs.ready == {"a", "y"}


def test_an_unchanged_file_changes_nothing():
    rs = _run(_t("a"), _t("b", "a"))
    diff, follow = _edit(rs, [_t("a"), _t("b", "a")])
    assert not diff.changed and follow == []


def test_live_limits_pick_gpus_from_the_machine_the_run_started_with():
    base = Machine(tuple(Gpu(i, 80 * 2**30) for i in range(4)), cpus=8, memory_bytes=64 * 2**30)
    three = limited_machine(base, base, gpus="0,1,2")
    assert three.gpu_indices == (0, 1, 2) and three.cpus == 8
    assert limited_machine(base, three, gpus="0,1,2,3").gpu_indices == (0, 1, 2, 3)
    assert limited_machine(base, three, cpus=3).cpus == 3 and limited_machine(base, three, cpus=3).gpu_indices == (0, 1, 2)
    assert limited_machine(base, base, memory="8GB").memory_bytes == 8 * 2**30
    assert len(limited_machine(base, base, gpus="2x24GB").gpus) == 2
    with pytest.raises(MachineError):
        limited_machine(base, base, gpus="0,7")
    with pytest.raises(MachineError):
        limited_machine(base, base, cpus=0)
