"""rota cancel and rota retry on a live run, on every backend (local, SLURM, Ray): the engine's
cancel goes through the executor (process group, scancel, Ray cancel), and a retried task runs
again on the same backend. Real ``rota run --backend NAME`` controllers, controls from the CLI."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from rota import api
from rota.errors import StateError
from tests.helpers import rota, start_rota, wait_for, write_spec


def _backend_flags(backend) -> list[str]:
    if backend.NAME == "slurm":
        from tests.integration.conftest_slurm import ensure_cluster

        ensure_cluster()
        return ["--backend", "slurm", "--gpus", "4x80GB"]
    if backend.NAME == "ray":
        from tests.ray_cluster import ensure_cluster as ensure_ray

        return ["--backend", "ray", "--address", ensure_ray(), "--gpus", "4x80GB"]
    return ["--cpus", "4"]


def _state(sd: Path, name: str) -> str:
    try:
        return next((str(t["state"]) for t in api.status(state_dir=sd)["tasks"] if t["name"] == name), "")
    except StateError:
        return ""


def test_cancel_and_retry_a_live_run(backend, tmp_path):
    flags = _backend_flags(backend)
    started, marker, grandchild = tmp_path / "started", tmp_path / "finished", tmp_path / "grandchild"
    fixed, done = tmp_path / "fixed", tmp_path / "done"
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: long
            command: touch {started}; (sleep 10; touch {grandchild}) & sleep 10; touch {marker}
          - {{name: uses-long, command: "true", needs: long}}
          - {{name: flaky, command: "test -f {fixed}"}}
          - {{name: uses-flaky, command: "true", needs: flaky}}
          - {{name: keeper, command: "while [ ! -f {done} ]; do sleep 0.1; done"}}
    """)
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--plain", "--grace", "2", *flags)
    try:
        wait_for(started.exists, timeout=120)
        wait_for(lambda: _state(sd, "long") == "running", timeout=60)
        seen_started = time.time()
        out = rota("cancel", "long", "--spec", spec, check=True).stdout
        assert "stopping" in out, out
        wait_for(lambda: _state(sd, "long") == "cancelled", timeout=60)
        assert _state(sd, "uses-long") == "skipped"
        # Past both markers' moment (10 s: a loaded machine may take seconds to see it run and cancel).
        wait_for(lambda: time.time() > seen_started + 11.5, timeout=20)
        assert not marker.exists() and not grandchild.exists(), "the cancelled task (or its child) ran on"
        wait_for(lambda: _state(sd, "flaky") == "failed", timeout=120)
        fixed.touch()
        out = rota("retry", "flaky", "--spec", spec, check=True).stdout
        assert "pending again: flaky" in out and "uses-flaky" in out, out
        wait_for(lambda: _state(sd, "uses-flaky") == "succeeded", timeout=120)
        done.touch()
        log, _ = proc.communicate(timeout=120)
    finally:
        done.touch()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert proc.returncode == 1, log  # long was cancelled
    st = {t["name"]: t["state"] for t in api.status(state_dir=sd)["tasks"]}
    assert st == {"long": "cancelled", "uses-long": "skipped", "flaky": "succeeded", "uses-flaky": "succeeded",
                  "keeper": "succeeded"}
