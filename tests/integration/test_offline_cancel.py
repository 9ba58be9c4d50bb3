"""``rota cancel`` of a running task with no controller (it was killed with ``kill -9``): the
attempt is stopped by the request itself (scancel of the recorded SLURM job; the process group of
a local attempt, which outlives its controller in its own session), recorded ``cancelled`` with
its dependents ``skipped``; the next ``rota run`` neither waits for nor runs it. Before, the
answer said "stopping" while the job ran on until the next ``rota run``.

Real controllers, real SLURM (scripts/slurm-up.sh; skipped without it outside CI, see
tests/integration/conftest_slurm.py), real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.helpers import alive, by_name, rota, start_rota, wait_for, write_spec


def _handle(sd: Path, task: str) -> dict:
    db = sqlite3.connect(sd / "state.db")
    try:
        row = db.execute("SELECT handle FROM tasks WHERE name=?", (task,)).fetchone()
    finally:
        db.close()
    return json.loads(row[0]) if row and row[0] else {}


def _kill_controller(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)  # the controller alone: its attempts live on, as after kill -9
    proc.wait()


def _spec(tmp_path: Path, marks: Path) -> Path:
    return write_spec(tmp_path, f"""
        tasks:
          - name: long
            command: echo $$ >> {marks}; sleep 300 & echo $! >> {marks}; wait
          - {{name: after, command: "true", needs: long}}
    """)


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_offline_cancel_scancels_the_slurm_job_of_a_killed_controller(tmp_path):
    marks = tmp_path / "marks"
    spec = _spec(tmp_path, marks)
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--backend", "slurm", "--plain")
    try:
        wait_for(lambda: marks.exists() and len(marks.read_text().split()) == 2, timeout=120)
        wait_for(lambda: bool(_handle(sd, "long")), timeout=30)
    finally:
        _kill_controller(proc)
    job = str(_handle(sd, "long")["external_id"])

    def listed() -> bool:
        p = subprocess.run(["squeue", "-h", "-o", "%i", "-j", job], capture_output=True, text=True)
        return p.returncode == 0 and bool(p.stdout.strip())

    assert listed()  # the job outlived its controller
    try:
        _cancel_and_check(sd, spec, marks, listed, job)
    finally:  # a failure must not leave a job running for 5 minutes
        subprocess.run(["scancel", job], capture_output=True)


def _cancel_and_check(sd: Path, spec: Path, marks: Path, listed, job: str) -> None:
    p = rota("cancel", "long", "--spec", spec, "--grace", "2", timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "stopped and cancelled: long" in p.stdout and "skipped (they need a cancelled task): after" in p.stdout, \
        p.stdout
    wait_for(lambda: not listed(), timeout=30)  # gone now, not at the next rota run
    st = by_name(sd)
    assert st["long"]["state"] == "cancelled" and st["after"]["state"] == "skipped", st
    acct = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job], capture_output=True, text=True)
    if acct.returncode == 0 and acct.stdout.strip():  # with accounting storage: SLURM says so too
        assert acct.stdout.split()[0].startswith("CANCELLED"), acct.stdout
    p = rota("run", spec, "--backend", "slurm", "--plain", timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr  # ends at once: nothing to wait for, nothing adopted
    assert len(marks.read_text().split()) == 2  # long did not run again
    st = by_name(sd)
    assert st["long"]["state"] == "cancelled" and st["after"]["state"] == "skipped", st


def test_offline_cancel_stops_the_local_attempt_a_killed_controller_left(tmp_path):
    """Local attempts run in their own session: kill -9 of the controller leaves them running."""
    marks = tmp_path / "marks"
    spec = _spec(tmp_path, marks)
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--plain")
    try:
        wait_for(lambda: marks.exists() and len(marks.read_text().split()) == 2, timeout=60)
        wait_for(lambda: bool(_handle(sd, "long")), timeout=30)
    finally:
        _kill_controller(proc)
    pids = [int(x) for x in marks.read_text().split()]

    assert all(alive(pid) for pid in pids)
    try:
        p = rota("cancel", "long", "--spec", spec, "--grace", "2")
        assert p.returncode == 0, p.stdout + p.stderr
        assert "stopped and cancelled: long" in p.stdout, p.stdout
        assert not any(alive(pid) for pid in pids)  # the task and its grandchild
    finally:  # a failure must not leave them running for 5 minutes
        with contextlib.suppress(OSError):
            os.killpg(pids[0], signal.SIGKILL)
    st = by_name(sd)
    assert st["long"]["state"] == "cancelled" and st["after"]["state"] == "skipped", st
    p = rota("run", spec, "--plain")
    assert p.returncode == 1, p.stdout + p.stderr
    assert len(marks.read_text().split()) == 2


@pytest.mark.ray
def test_offline_cancel_stops_the_ray_task_of_a_killed_controller(tmp_path, ray_cluster):
    """The dead controller's detached supervisor still owns the task: the request reaches it at
    $RAY_ADDRESS (the address a run was given is not recorded) and cancels it there."""
    marks = tmp_path / "marks"
    spec = _spec(tmp_path, marks)
    sd = tmp_path / "st"
    ray = ("--backend", "ray", "--address", ray_cluster, "--plain", "--state-dir", sd)
    proc = start_rota("run", spec, *ray)
    try:
        wait_for(lambda: marks.exists() and len(marks.read_text().split()) == 2, timeout=120)
        wait_for(lambda: bool(_handle(sd, "long")), timeout=30)
    finally:
        _kill_controller(proc)
    pids = [int(x) for x in marks.read_text().split()]
    try:
        p = rota("cancel", "long", "--state-dir", sd, "--grace", "2", env={"RAY_ADDRESS": ray_cluster}, timeout=180)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "stopped and cancelled: long" in p.stdout, p.stdout
        wait_for(lambda: not any(alive(pid) for pid in pids), timeout=30)  # on Ray's node: soon, not at once
    finally:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    st = by_name(sd)
    assert st["long"]["state"] == "cancelled" and st["after"]["state"] == "skipped", st
    p = rota("run", spec, *ray, timeout=180)
    assert p.returncode == 1, p.stdout + p.stderr
    assert len(marks.read_text().split()) == 2


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_offline_cancel_of_a_job_still_queued_in_slurm(tmp_path):
    """A job SLURM holds PENDING when the controller is killed: cancelled before it ever starts."""
    ran = tmp_path / "ran"
    blocker = subprocess.run(["sbatch", "--parsable", "-c", "8", "-o", "/dev/null", "--wrap", "sleep 120"],
                             capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    sd = tmp_path / "st"
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: waits, command: "touch {ran}"}}
          - {{name: after, command: "true", needs: waits}}
    """)
    proc = start_rota("run", spec, "--backend", "slurm", "--plain", "--state-dir", sd)
    job = ""
    try:
        wait_for(lambda: (by_name(sd).get("waits", {}).get("queued") is True) if (sd / "state.db").exists()
                 else False, timeout=60, interval=0.2)
        _kill_controller(proc)
        job = str(_handle(sd, "waits")["external_id"])
        p = rota("cancel", "waits", "--state-dir", sd, "--grace", "2", timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "stopped and cancelled: waits" in p.stdout, p.stdout
        q = subprocess.run(["squeue", "-h", "-o", "%i", "-j", job], capture_output=True, text=True)
        assert not q.stdout.strip(), q.stdout  # gone from the queue now
    finally:
        if proc.poll() is None:
            _kill_controller(proc)
        subprocess.run(["scancel", blocker, *([job] if job else [])], capture_output=True)
    st = by_name(sd)
    assert st["waits"]["state"] == "cancelled" and st["after"]["state"] == "skipped", st
    assert "never started" in Path(st["waits"]["log_path"]).read_text()  # rota logs says why it is empty
    p = rota("run", spec, "--backend", "slurm", "--plain", "--state-dir", sd, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert not ran.exists()


def test_an_attempt_that_ended_before_the_offline_cancel_is_not_signalled(tmp_path):
    """Its process group id may be another's by now: nothing is signalled, the answer says it had
    ended, and the next run records that end (a success stays a success, as on a live run)."""
    gate, pid_file = tmp_path / "gate", tmp_path / "pid"
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: long, command: "echo $$ > {pid_file}; while [ ! -f {gate} ]; do sleep 0.05; done"}}
          - {{name: after, command: "true", needs: long}}
    """)
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--plain")
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "", timeout=60)
        wait_for(lambda: bool(_handle(sd, "long")), timeout=30)
    finally:
        _kill_controller(proc)
    gate.touch()
    pid = int(pid_file.read_text())
    wait_for(lambda: not alive(pid), timeout=30)
    p = rota("cancel", "long", "--spec", spec)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "had ended before the cancel" in p.stdout and "stopped and cancelled" not in p.stdout, p.stdout
    p = rota("run", spec, "--plain")
    assert p.returncode == 0, p.stdout + p.stderr
    st = by_name(sd)
    assert st["long"]["state"] == "succeeded" and st["after"]["state"] == "succeeded", st
