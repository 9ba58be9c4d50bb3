"""The Ray task's body (``run_attempt``) with real processes, outside Ray: timeouts, environment."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil

from rota.core.resources import Gpu, Machine, Node, with_cpu_headroom
from rota.executors import ray_task as rs

GB = 2**30


def _spec(tmp: Path, command: str, **extra: object) -> dict:
    log = tmp / "logs" / "t" / "attempt-1.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    return {"id": "tok:t#1", "key": "t#1", "command": command, "env": {"ROTA_TASK": "t"}, "workdir": str(tmp),
            "log_path": str(log), "rc_path": f"{log}.rc", "num_gpus": 0, **extra}


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_timeout_counts_from_the_real_start_and_stops_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    spec = _spec(tmp_path, f"sleep 60 & echo $! > {pidfile}; wait; echo never", timeout_s=1.0, grace_s=2.0)
    t = time.monotonic()
    out = rs.run_attempt(spec)
    took = time.monotonic() - t
    assert out["error"] == "timeout" and out["code"] == 143, out  # SIGTERM reached the group
    assert 1.0 <= took < 5.0, took
    assert Path(spec["rc_path"]).read_text() == "143\n"
    assert "never" not in Path(spec["log_path"]).read_text()
    pid = int(pidfile.read_text())
    deadline = time.time() + 5
    while not _gone(pid) and time.time() < deadline:
        time.sleep(0.05)
    assert _gone(pid), "the background grandchild outlived its task's timeout"


def test_grace_then_sigkill_for_a_task_that_ignores_sigterm(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "trap '' TERM; sleep 30", timeout_s=0.5, grace_s=0.5)
    t = time.monotonic()
    out = rs.run_attempt(spec)
    assert out["error"] == "timeout" and out["code"] == 137, out
    assert time.monotonic() - t < 5.0


def test_no_timeout_runs_to_the_end(tmp_path: Path) -> None:
    out = rs.run_attempt(_spec(tmp_path, "sleep 0.3; echo done; exit 3", timeout_s=None))
    assert out["code"] == 3 and out["error"] == "", out
    assert out["ended_at"] - out["started_at"] >= 0.3
    assert "done" in Path(_spec(tmp_path, "")["log_path"]).read_text()


def test_task_env_follows_the_worker_environment(monkeypatch) -> None:
    """The filtered environment is cached per worker, but never stale."""
    first = rs._task_env({"env": {"A": "1"}, "num_gpus": 0})
    assert first["A"] == "1"
    monkeypatch.setenv("ROTA_OUT", "x")  # a parent task's variable (a worker started inside a rota task)
    monkeypatch.setenv("ADDED_LATER", "y")
    monkeypatch.setenv("ROTA_EXAMPLE_TIME_SCALE", "0.5")  # the user's own setting: passes, as on local and SLURM
    second = rs._task_env({"env": {"B": "2"}, "num_gpus": 0})
    assert second["ADDED_LATER"] == "y" and "ROTA_OUT" not in second
    assert second["ROTA_EXAMPLE_TIME_SCALE"] == "0.5"
    assert "A" not in second and second["B"] == "2"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    gpu = rs._task_env({"env": {"CUDA_VISIBLE_DEVICES": "0"}, "num_gpus": 1})
    assert gpu["CUDA_VISIBLE_DEVICES"] == "3" and gpu["ROTA_GPUS"] == "3"  # Ray's grant wins
    assert os.environ.get("ROTA_OUT") == "x"  # the worker's own environment is untouched


def test_cpu_headroom_adds_cpu_slots_only() -> None:
    m = Machine((Gpu(0, 80 * GB),), 6, 64 * GB, nodes=(Node("a", 1, 4, 32 * GB), Node("b", 0, 2, 32 * GB)))
    h = with_cpu_headroom(m, 1.0)
    assert (h.cpus, [n.cpus for n in h.nodes]) == (12, [8, 4])
    assert h.gpus == m.gpus and h.memory_bytes == m.memory_bytes
    assert [(n.gpus, n.memory_bytes) for n in h.nodes] == [(1, 32 * GB), (0, 32 * GB)]
    assert with_cpu_headroom(m, 0.5).cpus == 9
    assert with_cpu_headroom(m, 0.0) is m


def test_an_attempt_queued_when_its_run_halted_does_not_start(tmp_path: Path) -> None:
    halt = tmp_path / "halted.123"
    marker = tmp_path / "ran"
    spec = _spec(tmp_path, f"touch {marker}", halt_path=str(halt))
    assert rs.run_attempt(spec)["code"] == 0 and marker.exists()  # no marker: it runs
    marker.unlink()
    halt.touch()
    out = rs.run_attempt(spec)
    assert out["lost"] is True and out["code"] is None and "not started" in out["error"], out
    assert not marker.exists()


def test_a_cancel_that_lands_while_the_process_starts_still_stops_it(tmp_path: Path, monkeypatch) -> None:
    """``ray.cancel`` arrives as the SIGINT handler's KeyboardInterrupt (``_thread.interrupt_main``).
    One that landed inside ``Popen``, after the child had started, left it running to its end with
    nothing to stop it (a CI rehearsal: a Ray task cancelled right after its start 'succeeded').
    Here the interrupt is raised inside Popen itself, as a loaded machine lets it happen."""
    import _thread
    import subprocess

    class InterruptedWhileStarting(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            _thread.interrupt_main()  # the cancel, delivered before Popen returns
            for _ in range(1000):  # bytecodes: where a pending interrupt is raised
                pass

    marker = tmp_path / "ran-to-its-end"
    monkeypatch.setattr(subprocess, "Popen", InterruptedWhileStarting)
    out = rs.run_attempt(_spec(tmp_path, f"sleep 2; touch {marker}", grace_s=2.0))
    assert out["error"] == "cancelled" and out["code"] == 143, out  # SIGTERM reached the group
    time.sleep(2.5)
    assert not marker.exists(), "the cancelled attempt ran on"
