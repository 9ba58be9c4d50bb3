"""What rota books on Ray, end to end: the real CLI against the real local Ray cluster
(tests/ray_cluster.py: 4 CPUs, 4 declared GPUs).

The contract: a task that declares ``cpus: N`` holds N of the cluster's CPUs for as
long as its process runs, so tasks whose CPUs together exceed the cluster's never
run at the same time, even though rota submits some of them ahead (queue-ahead).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from tests.helpers import by_name, open_gate, read_records, rota, start_rota, wait_for, write_spec

pytestmark = pytest.mark.ray

REC = str(Path(__file__).resolve().parent.parent / "recorder.py")
PY = sys.executable


def _overlaps(spans: dict[str, tuple[float, float]]) -> list[tuple[str, str]]:
    names = sorted(spans, key=lambda n: spans[n][0])
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if spans[b][0] < spans[a][1]]


def test_whole_cluster_tasks_never_run_at_once_on_ray(tmp_path, ray_cluster):
    """Three tasks of ``cpus: 4`` on a 4-CPU cluster: one at a time, though rota books ahead."""
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: whole-{{i}}
            command: {PY} {REC} {rec} whole-{{i}} 2.0
            matrix: {{i: [0, 1, 2]}}
            cpus: 4
    """)
    state = tmp_path / "st"
    p = rota("run", spec, "--backend", "ray", "--address", ray_cluster, "--plain", "--state-dir", state,
             timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    spans = {r["name"]: (r["start"], r["end"]) for r in read_records(rec)}
    assert len(spans) == 3, spans
    assert not _overlaps(spans), spans
    st = by_name(state)
    assert all(t["state"] == "succeeded" and t["attempts"] == 1 for t in st.values()), st


def test_a_cancelled_task_keeps_its_cpus_until_its_process_ends_on_ray(tmp_path, ray_cluster):
    """``cpus: 4`` on a 4-CPU cluster, cancelled while a second ``cpus: 4`` task waits in Ray's queue
    (booked ahead): the first traps SIGTERM and takes 3 s to stop; the second starts only after that.
    (A cancelled task that asked its supervisor for the grace with ``ray.get`` gave its CPUs back to
    Ray while it waited, and Ray started the second beside it.)"""
    rec = tmp_path / "rec"
    rec.mkdir()
    first = (f'trap \'sleep 3; echo "$(date +%s.%N)" > {rec}/first-end; exit 0\' TERM; '
             f'echo "$(date +%s.%N)" > {rec}/first-start; sleep 120 & wait')
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: first
            command: {first}
            cpus: 4
            priority: 10
          - name: second
            command: {PY} {REC} {rec} second 0.5
            cpus: 4
    """)
    state = tmp_path / "st"
    run = start_rota("run", spec, "--backend", "ray", "--address", ray_cluster, "--plain", "--state-dir", state,
                     "--grace", "20")
    try:
        def both_booked() -> bool:
            if not (rec / "first-start").exists():
                return False
            st = by_name(state)
            return st["first"]["state"] == "running" and st["second"]["state"] == "running"

        wait_for(both_booked, timeout=120, interval=0.2)
        assert not list(rec.glob("*.jsonl")), "the second whole-cluster task ran beside the first"
        p = rota("cancel", "first", "--state-dir", state)
        assert p.returncode == 0, p.stdout + p.stderr
        out, _ = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode == 1, out  # first was cancelled
    first_end = float((rec / "first-end").read_text())
    (second,) = read_records(rec)
    assert second["start"] >= first_end, (
        f"second started {first_end - second['start']:.2f} s before the cancelled first task's process ended")
    st = by_name(state)
    assert st["first"]["state"] == "cancelled" and st["second"]["state"] == "succeeded", st


def test_why_a_task_waits_for_cpus_names_the_ray_cluster_not_a_cpus_flag(tmp_path, ray_cluster):
    """Three ``cpus: 4`` tasks on the 4-CPU cluster, run without ``--cpus``: one runs, one waits in
    Ray's queue (booked ahead), and ``rota why`` of the third names the cluster's 4 CPUs and the 4
    booked ahead. It said "0 of 8 free (the run's --cpus)", a flag the user never gave."""
    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: whole-{{i}}
            command: while [ ! -e {gate} ]; do sleep 0.1; done
            matrix: {{i: [0, 1, 2]}}
            cpus: 4
    """)
    state = tmp_path / "st"
    run = start_rota("run", spec, "--backend", "ray", "--address", ray_cluster, "--plain", "--state-dir", state)
    answer: dict[str, str] = {}
    try:
        def explained() -> bool:
            if not (state / "state.db").exists():
                return False
            pending = [n for n, t in by_name(state).items() if t["state"] == "pending"]
            if len(pending) != 1:
                return False
            p = rota("why", pending[0], "--state-dir", state)
            answer["text"] = p.stdout + p.stderr
            return "CPU slot" in p.stdout

        wait_for(explained, timeout=120, interval=0.3)
    finally:
        out = open_gate(run, gate, timeout=180)
    text = answer["text"]
    assert "no 4 CPU slots free: 0 of 8 free (the Ray cluster's 4 CPUs + 4 booked ahead in Ray's queue)" in text, text
    assert "--cpus" not in text, text
    assert run.returncode == 0, out
