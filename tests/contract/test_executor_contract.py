"""What every executor (local, SLURM, Ray) must do, tested for real."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rota.executors.base import Executor, Handle, Launch
from tests.helpers import wait_ended, wait_for


def _launch(tmp_path: Path, key: str, command: str, **kw) -> Launch:
    return Launch(
        key=key,
        task=key.split("#")[0],
        attempt=1,
        command=command,
        env={"ROTA_TASK": key.split("#")[0], "MY_VAR": "hello world", **kw.pop("env", {})},
        workdir=str(tmp_path),
        log_path=str(tmp_path / "logs" / f"{key.replace('#', '-')}.log"),
        **kw,
    )


def test_is_an_executor(executor):
    assert isinstance(executor, Executor)
    assert executor.name


def test_success_env_workdir_and_log(executor, tmp_path):
    h = executor.submit(_launch(tmp_path, "ok#1", 'echo "var=$MY_VAR task=$ROTA_TASK"; pwd; echo to-stderr >&2'))
    assert json.loads(json.dumps(h.to_json()))["key"] == "ok#1"
    st = wait_ended(executor, [h])["ok#1"]
    assert st.phase == "succeeded" and st.exit_code == 0
    log = Path(tmp_path / "logs" / "ok-1.log").read_text()
    assert "var=hello world task=ok" in log
    assert str(tmp_path) in log
    assert "to-stderr" in log


def test_failure_reports_exit_code(executor, tmp_path):
    h = executor.submit(_launch(tmp_path, "bad#1", "exit 7"))
    st = wait_ended(executor, [h])["bad#1"]
    assert st.phase == "failed"
    assert st.exit_code == 7


def test_poll_is_batched_over_many(executor, tmp_path):
    hs = [executor.submit(_launch(tmp_path, f"m{i}#1", f"exit {i % 2}")) for i in range(6)]
    res = wait_ended(executor, hs)
    assert [res[f"m{i}#1"].phase for i in range(6)] == ["succeeded", "failed"] * 3


def test_cancel_stops_a_running_attempt(executor, tmp_path):
    """Cancel reaches the attempt after it started and before it wrote its markers: neither
    the task nor its background grandchild ever writes one (each would 10 s after the start: a
    loaded machine may take seconds to deliver a cancel through Ray or SLURM)."""
    started, marker, grandchild = tmp_path / "started", tmp_path / "finished", tmp_path / "grandchild"
    h = executor.submit(_launch(tmp_path, "long#1",
                                f"touch {started}; (sleep 10; touch {grandchild}) & sleep 10; touch {marker}"))
    wait_for(started.exists, timeout=60)
    seen_started = time.time()
    executor.cancel([h], grace_s=2.0)
    st = wait_ended(executor, [h], timeout_s=60)[h.key]
    assert st.phase in ("failed", "lost")
    # Past the moment both markers were due (10 s after the start), with a margin.
    wait_for(lambda: time.time() > seen_started + 11.5, timeout=20)
    assert not marker.exists(), "the cancelled task ran to its end"
    assert not grandchild.exists(), "the cancelled task's grandchild outlived it"


def test_adopt_after_controller_restart(executor, fresh_executor, tmp_path):
    """A handle serialized by one controller is followed by a fresh executor object."""
    h = executor.submit(_launch(tmp_path, "adopt#1", "sleep 2; exit 5"))
    saved = json.loads(json.dumps(h.to_json()))
    fresh = fresh_executor()
    h2 = Handle.from_json(saved)
    assert fresh.adopt(h2) is True
    st = wait_ended(fresh, [h2])[h2.key]
    assert st.phase == "failed" and st.exit_code == 5


def test_adopt_unknown_handle_is_false(executor, tmp_path):
    h = executor.submit(_launch(tmp_path, "gone#1", "true"))
    wait_ended(executor, [h])
    bogus = Handle("nope#1", h.executor, "999999999", {**h.data, "pid": 999999999, "rc_path": str(tmp_path / "none.rc"),
                                                        "job_id": "999999999"})
    assert executor.adopt(bogus) is False


def test_submit_many_when_offered(executor, tmp_path):
    many = getattr(executor, "submit_many", None)
    launches = [_launch(tmp_path, f"arr{i}#1", f"echo item {i}", array_group="arr") for i in range(5)]
    hs = many(launches) if many else [executor.submit(la) for la in launches]
    assert [h.key for h in hs] == [la.key for la in launches]
    res = wait_ended(executor, hs)
    assert all(s.phase == "succeeded" for s in res.values())
    for i in range(5):
        assert f"item {i}" in Path(launches[i].log_path).read_text()


def test_cancel_before_start_leaves_a_log_saying_so(executor, tmp_path):
    """An attempt cancelled while it waits in the backend's queue (SLURM PENDING, Ray's queue)
    never ran: its log says so, so ``rota logs`` has something true to show; the running one
    cancelled beside it keeps its own output."""
    if not executor.queues:
        pytest.skip("this backend starts every attempt at once: nothing waits in a queue")
    cap = executor.capacity()
    blocker = executor.submit(_launch(tmp_path, "blocker#1", "echo blocker-ran; sleep 120", cpus=cap.cpus))
    # SLURM: a second whole node must wait for the first. Ray has been seen to start two whole-node
    # tasks at once on the shared test cluster (see the report of 2026-12-07): one GPU more than the
    # cluster has keeps it in Ray's queue for sure (sbatch would refuse that outright)
    wait_kw = {"gpu_count": len(cap.gpus) + 1} if executor.name == "ray" else {"cpus": cap.cpus}
    waiting = executor.submit(_launch(tmp_path, "waiting#1", "echo waiting-ran", **wait_kw))
    blocker_log, waiting_log = Path(blocker.data["rc_path"][: -len(".rc")]), Path(waiting.data["rc_path"][: -len(".rc")])
    try:
        wait_for(lambda: "blocker-ran" in (blocker_log.read_text() if blocker_log.exists() else ""), timeout=120)
        assert executor.poll([blocker])[blocker.key].phase == "running", blocker_log.read_text()
        assert not waiting_log.exists(), waiting_log.read_text()
        executor.cancel([waiting], grace_s=1.0)
        st = wait_ended(executor, [waiting], timeout_s=60)[waiting.key]
        assert st.phase in ("failed", "lost")
        text = waiting_log.read_text()
        assert "never started" in text and "waiting-ran" not in text, text
    finally:
        executor.cancel([blocker, waiting], grace_s=1.0)
    assert "never started" not in blocker_log.read_text()
