"""The forecast counts GPU memory held outside rota: a real controller, the stand-in pynvml.

A process rota did not start holds 50 GB of the one 80 GB GPU (booked with its 1 GB margin: 29 GB
left). A 20 GB task runs; another 20 GB task fits beside the outsider once the first ends, so it
gets a real predicted start; a 40 GB task can never fit while the outsider stays, so it and the
task that needs it get none (null in ``rota status --json``), and ``rota why`` says why.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fakegpu import FakeGpus, GiB
from tests.helpers import ROTA, by_name, rota, wait_for, write_spec


def test_a_task_blocked_by_memory_held_outside_rota_has_no_predicted_start(tmp_path: Path) -> None:
    fake = FakeGpus(tmp_path, count=1)
    outsider = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    go = tmp_path / "go"
    fake.hold(0, outsider.pid, 50 * GiB)
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: first
            command: '{fake.task_holds(20 * GiB)}; while [ ! -e {go} ]; do sleep 0.05; done'
            gpus: 1
            gpu_memory: 20GB
            estimate: 10m
            priority: 10
          - name: beside
            command: 'true'
            gpus: 1
            gpu_memory: 20GB
            estimate: 5m
          - name: big
            command: 'true'
            gpus: 1
            gpu_memory: 40GB
            estimate: 1m
          - name: after-big
            needs: [big]
            command: 'true'
            estimate: 1m
    """)
    sd = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")} | fake.env
    run = subprocess.Popen([*ROTA, "run", str(spec), "--state-dir", str(sd), "--cpus", "8", "--plain"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                           start_new_session=True)
    try:
        wait_for(lambda: (sd / "state.db").exists() and "held outside rota" in (by_name(sd)["big"]["reason"] or ""),
                 timeout=60)
        wait_for(lambda: by_name(sd)["beside"]["predicted_start_s"] is not None, timeout=30)
        tasks = by_name(sd)
        assert tasks["first"]["state"] == "running" and tasks["beside"]["state"] == "pending"
        # Beside the outsider: starts when 'first' ends (its 10 minutes), as before.
        assert tasks["beside"]["predicted_start_s"] >= tasks["first"]["predicted_end_s"] - 0.5
        assert tasks["beside"]["predicted_end_s"] >= tasks["beside"]["predicted_start_s"] + 290
        # Never while the outsider stays: no prediction, nor for what needs it ("now" before this change).
        for name in ("big", "after-big"):
            assert tasks[name]["predicted_start_s"] is None and tasks[name]["predicted_end_s"] is None, tasks[name]
        assert f"pid {outsider.pid}" in tasks["big"]["reason"], tasks["big"]["reason"]
        why = rota("why", "big", "--state-dir", sd, check=True).stdout
        assert "predicted start: none: it waits for GPU memory held outside rota" in why, why
        assert "no predicted start while it stays" in why, why

        # The outsider leaves: the big task gets a prediction again, and everything runs.
        fake.release(outsider.pid)
        wait_for(lambda: by_name(sd)["after-big"]["predicted_start_s"] is not None
                 or by_name(sd)["big"]["state"] != "pending", timeout=60)
        go.touch()
        out, _ = run.communicate(timeout=120)
        assert run.returncode == 0, out
    finally:
        go.touch()
        outsider.kill()
        outsider.wait()
        if run.poll() is None:
            os.killpg(run.pid, 9)
            run.wait()
    assert {t["state"] for t in by_name(sd).values()} == {"succeeded"}
