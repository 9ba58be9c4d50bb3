"""A task that waits for GPU memory held outside rota keeps nothing back: a real controller, the
stand-in pynvml.

One 80 GB GPU; a process rota did not start holds 30 GB of it. ``whole`` (a whole GPU, high
priority) cannot start while that process stays; ``small`` (20 GB) fits beside it and must start
now: a reservation for ``whole`` would have no end (the process's end is unknown) and kept
``small`` pending for as long as the process stayed. ``later`` (after ``small``) gets a real
predicted start, ``whole`` none; once the process leaves, everything runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fakegpu import FakeGpus, GiB
from tests.helpers import ROTA, by_name, wait_for, write_spec


def test_a_task_that_fits_beside_foreign_memory_is_not_kept_back_by_one_that_does_not(tmp_path: Path) -> None:
    fake = FakeGpus(tmp_path, count=1)
    outsider = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    go = tmp_path / "go"
    fake.hold(0, outsider.pid, 30 * GiB)
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: whole
            command: 'true'
            gpus: 1
            estimate: 1m
            priority: 10
          - name: small
            command: '{fake.task_holds(20 * GiB)}; while [ ! -e {go} ]; do sleep 0.05; done'
            gpus: 1
            gpu_memory: 20GB
            estimate: 10m
          - name: later
            needs: [small]
            command: 'true'
            gpus: 1
            gpu_memory: 20GB
            estimate: 1m
    """)
    sd = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")} | fake.env
    run = subprocess.Popen([*ROTA, "run", str(spec), "--state-dir", str(sd), "--cpus", "8", "--plain"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                           start_new_session=True)
    try:
        wait_for(lambda: (sd / "state.db").exists() and by_name(sd)["small"]["state"] == "running", timeout=60)
        wait_for(lambda: by_name(sd)["later"]["predicted_start_s"] is not None
                 and "held outside rota" in (by_name(sd)["whole"]["reason"] or ""), timeout=30)
        tasks = by_name(sd)
        assert tasks["whole"]["state"] == "pending", tasks["whole"]
        assert tasks["whole"]["predicted_start_s"] is None, tasks["whole"]
        assert f"pid {outsider.pid}" in tasks["whole"]["reason"], tasks["whole"]["reason"]
        assert tasks["later"]["predicted_start_s"] >= tasks["small"]["predicted_end_s"] - 0.5, tasks
        fake.release(outsider.pid)
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
