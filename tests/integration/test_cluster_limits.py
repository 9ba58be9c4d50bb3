"""--gpus/--cpus/--memory on SLURM and Ray cap what the run takes from the cluster (issue 17, items 11-12).

Real runs of the ``rota`` CLI: on the one-node SLURM cluster of
scripts/slurm-up.sh (8 CPUs, 4 fake GPUs) and on the local Ray head of
tests/ray_cluster.py (4 CPUs, 4 declared GPUs). Before the fix both backends
booked the whole cluster whatever the flags said: 4 one-GPU tasks under
``--gpus 1x80GB --cpus 1`` ran at once on 4 GPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROTA, read_records, rota, write_spec

REC = str(Path(__file__).resolve().parent.parent / "recorder.py")
PY = sys.executable
TASK_S = 2.0  # each task's sleep: long enough that two running at once overlap by far more than SLURM's 1 s clock


def _backend(name: str, ray_address: str | None) -> list[str]:
    return ["--backend", "ray", "--address", str(ray_address)] if name == "ray" else ["--backend", "slurm"]


@pytest.fixture(params=[pytest.param("slurm", marks=pytest.mark.slurm), pytest.param("ray", marks=pytest.mark.ray)])
def backend(request) -> list[str]:
    if request.param == "slurm":
        request.getfixturevalue("slurm_cluster")
        return _backend("slurm", None)
    return _backend("ray", request.getfixturevalue("ray_cluster"))


def _spec(tmp_path: Path, n: int, gpus: int) -> tuple[Path, Path]:
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: t-{{i}}
            command: {PY} {REC} {rec} t-{{i}} {TASK_S}
            matrix: {{i: {list(range(n))}}}
            gpus: {gpus}
            cpus: 1
    """)
    return spec, rec


def _max_at_once(intervals: list[tuple[float, float]], slack_s: float = 0.0) -> int:
    """The most intervals open at one instant (an end ``slack_s`` after a start does not count as overlap)."""
    events = sorted([(s + slack_s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda x: (x[0], x[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def _run_and_check(spec: Path, rec: Path, state: Path, backend: list[str], *flags: str, at_most: int,
                   n: int) -> list[dict]:
    p = rota("run", spec, *backend, *flags, "--plain", "--state-dir", state, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    tasks = json.loads(rota("status", "--json", "--state-dir", state, check=True).stdout)["tasks"]
    assert [t["state"] for t in tasks] == ["succeeded"] * n
    # rota's own record of each task's start and end (SLURM gives starts in whole seconds: 1 s slack)...
    assert _max_at_once([(t["started_at"], t["ended_at"]) for t in tasks], slack_s=1.0) <= at_most, tasks
    # ...and the tasks' own clocks, exactly
    recs = read_records(rec)
    assert len(recs) == n
    assert _max_at_once([(r["start"], r["end"]) for r in recs]) <= at_most, recs
    return recs


def test_gpu_count_cap_runs_one_gpu_task_at_a_time(tmp_path, backend):
    """The issue's case: 4 one-GPU tasks under --gpus 1x80GB --cpus 1 never overlap."""
    spec, rec = _spec(tmp_path, 4, gpus=1)
    recs = _run_and_check(spec, rec, tmp_path / "st", backend, "--gpus", "1x80GB", "--cpus", "1", at_most=1, n=4)
    assert all(r["cvd"] and len(r["cvd"].split(",")) == 1 for r in recs)  # the backend's one GPU each


def test_gpu_cap_without_cpu_cap(tmp_path, backend):
    """--gpus 2x80GB alone: at most 2 of 4 one-GPU tasks at once (the CPUs would allow 4)."""
    spec, rec = _spec(tmp_path, 4, gpus=1)
    _run_and_check(spec, rec, tmp_path / "st", backend, "--gpus", "2x80GB", at_most=2, n=4)


def test_cpu_cap_runs_one_cpu_task_at_a_time(tmp_path, backend):
    """--cpus 1: CPU tasks one after another (on Ray, no attempt is booked ahead into Ray's queue either)."""
    spec, rec = _spec(tmp_path, 3, gpus=0)
    _run_and_check(spec, rec, tmp_path / "st", backend, "--cpus", "1", at_most=1, n=3)


@pytest.mark.parametrize("flags,says", [
    (["--gpus", "none"], "can never run here: asks for 1 GPU"),
    (["--gpus", "0,2"], "--gpus 0,2: GPU indices have no meaning with --backend"),
    (["--cpus", "1"], "can never run here: asks for 2 CPUs"),
    (["--memory", "1GB"], "can never run here: asks for 2GB RAM"),
])
def test_what_the_caps_rule_out_is_refused_before_anything_runs(tmp_path, backend, flags, says):
    spec = write_spec(tmp_path, """
        tasks:
          - name: big
            command: echo ran
            gpus: 1
            cpus: 2
            memory: 2GB
    """)
    p = rota("run", spec, *backend, *flags, "--plain", "--state-dir", tmp_path / "st", timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    line = p.stderr.strip()
    assert line.startswith("rota: error: ") and "\n" not in line and says in line, line
    assert not (tmp_path / "st").exists()  # nothing written, nothing submitted


@pytest.mark.slurm
def test_cpu_task_on_slurm_gets_empty_cuda_visible_devices(tmp_path, slurm_cluster):
    """SLURM sets CUDA_VISIBLE_DEVICES only for jobs that asked for GPUs; a CPU task gets it empty, as on the
    local and Ray backends, so it never uses a GPU it did not book. A GPU task keeps the one SLURM granted."""
    spec = write_spec(tmp_path, """
        tasks:
          - name: cpu-{i}
            command: echo "cvd=[${CUDA_VISIBLE_DEVICES-unset}]"
            matrix: {i: [0, 1]}
          - name: alone
            command: echo "cvd=[${CUDA_VISIBLE_DEVICES-unset}]"
          - name: gpu
            command: echo "cvd=[${CUDA_VISIBLE_DEVICES-unset}]"
            gpus: 1
    """)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    p = subprocess.run([*ROTA, "run", str(spec), "--backend", "slurm", "--plain", "--state-dir", str(tmp_path / "st")],
                       capture_output=True, text=True, env=env, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    logs = tmp_path / "st" / "logs"
    for name in ("cpu-0", "cpu-1", "alone"):  # an array of two, and a job of its own
        assert (logs / name / "attempt-1.log").read_text().splitlines()[-1] == "cvd=[]", name
    assert (logs / "gpu" / "attempt-1.log").read_text().splitlines()[-1] in {f"cvd=[{i}]" for i in range(4)}
    # Nothing left to run: the hint keeps the backend (a plain 'rota run' would continue on local).
    again = subprocess.run([*ROTA, "run", str(spec), "--backend", "slurm", "--plain", "--state-dir", str(tmp_path / "st")],
                           capture_output=True, text=True, env=env, timeout=240)
    assert again.returncode == 0 and "--backend slurm --rerun PATTERN' runs tasks again" in again.stdout, again.stdout


def test_memory_shared_gpu_tasks_under_a_gpu_cap_hold_one_gpu(tmp_path, backend):
    """40GB tasks under --gpus 1x80GB share one GPU two at a time. One placed beside a running shared job in a
    later round must not take a second GPU (beyond the cap): on SLURM it waits for that job instead."""
    rec = tmp_path / "rec"
    rec.mkdir()
    tasks = "".join(f"""
          - name: s{i}
            command: {PY} {REC} {rec} s{i} {sleep_s}
            gpus: 1
            gpu_memory: 40GB
            cpus: 1""" for i, sleep_s in enumerate((1.0, 4.0, 1.0, 1.0)))
    spec = write_spec(tmp_path, "tasks:" + tasks + "\n")
    p = rota("run", spec, *backend, "--gpus", "1x80GB", "--plain", "--state-dir", tmp_path / "st", timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    recs = read_records(rec)
    assert len(recs) == 4
    assert _max_at_once([(r["start"], r["end"]) for r in recs]) <= 2
    for a in recs:  # tasks running at the same time run on the same SLURM GPU
        for b in recs:
            if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:
                assert a["cvd"] == b["cvd"], (a, b)
