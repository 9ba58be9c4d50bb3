"""Steering a live run, issue 19's leftovers: a control request refreshes the predictions at once,
and ``rota why``'s per-GPU table shows what the controller books for processes rota did not start.

Real controllers (``rota run`` in the background), the real CLI; foreign GPU processes through the
stand-in pynvml (tests/fake_nvml, scripted by tests/fakegpu.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakegpu import FakeGpus, GiB
from tests.helpers import ROTA, by_name, open_gate, rota, start_rota, wait_for, write_spec


def test_a_priority_change_moves_the_predictions_within_seconds(tmp_path: Path) -> None:
    """Two GPUs held by gated tasks; three waiting tasks, forecast in spec order. ``rota priority``
    alone (no task ends, no count changes) reorders the predicted starts and moves the reservation
    within a few seconds, not at the next end or the predictor's 60 s refresh."""
    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: hold-{{i}}
            matrix: {{i: [0, 1]}}
            command: 'while [ ! -e {gate} ]; do sleep 0.05; done'
            gpus: 1
            estimate: 30s
            priority: 100
          - name: w-{{i}}
            matrix: {{i: [1, 2, 3]}}
            command: 'true'
            gpus: 1
            estimate: 1m
    """)
    sd = tmp_path / ".rota"
    run = start_rota("run", spec, "--gpus", "2x80GB", "--cpus", "8", "--plain")
    try:
        def starts() -> dict[str, float | None]:
            return {n: t["predicted_start_s"] for n, t in by_name(sd).items() if n.startswith("w-")}

        wait_for(lambda: sd.joinpath("state.db").exists() and None not in starts().values(), timeout=60)
        before = starts()
        assert before["w-1"] <= before["w-2"] < before["w-3"], before  # spec order: w-3 waits for a second end
        assert "reserved for it" in by_name(sd)["w-1"]["reason"]
        t0 = time.monotonic()
        out = rota("priority", "w-3", "10", "--spec", spec, check=True).stdout
        assert "priority 10: w-3" in out, out

        def moved() -> bool:
            s, tasks = starts(), by_name(sd)
            return (None not in s.values() and s["w-3"] <= s["w-1"] < s["w-2"]  # type: ignore[operator]
                    and "reserved for it" in tasks["w-3"]["reason"])

        wait_for(moved, timeout=15)
        took_s = time.monotonic() - t0
        print(f"predictions moved {took_s:.2f}s after rota priority")
        assert took_s < 15, took_s  # the predictor's interval (2 s) and a loaded machine, not its 60 s refresh
        assert {t["state"] for n, t in by_name(sd).items() if n.startswith("hold-")} == {"running"}  # nothing ended
        why = rota("why", "w-3", "--state-dir", sd, check=True).stdout
        assert "resources are reserved for it" in why, why
    finally:
        out = open_gate(run, gate)
    assert run.returncode == 0, out


@pytest.fixture
def outsider():
    """A process started outside rota (a colleague's python holding GPU memory)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield p
    p.kill()
    p.wait()


def _gpu_rows(why: str) -> list[list[str]]:
    return [ln.split() for ln in why.split("GPUs:\n", 1)[1].splitlines() if not ln.startswith("  others:")]


def test_why_shows_memory_booked_for_processes_rota_did_not_start(tmp_path: Path, outsider) -> None:
    fake = FakeGpus(tmp_path, count=2)
    fake.hold(1, outsider.pid, 30 * GiB)  # booked with the spec's 2GB margin: 32GB of GPU 1's 80GB
    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, f"""
        foreign_gpu_margin: 2GB
        tasks:
          - name: a
            command: 'while [ ! -e {gate} ]; do sleep 0.05; done'
            gpus: 1
            gpu_memory: 60GB
          - name: b
            command: 'true'
            gpus: 1
            gpu_memory: 60GB
    """)
    sd = tmp_path / ".rota"
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")} | fake.env
    run = subprocess.Popen([*ROTA, "run", str(spec), "--plain"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, env=env, start_new_session=True)
    try:
        wait_for(lambda: sd.joinpath("state.db").exists() and "GPU 1 48GB" in (by_name(sd)["b"]["reason"] or ""),
                 timeout=60)
        why = rota("why", "b", "--state-dir", sd, check=True).stdout
        rows = _gpu_rows(why)
        assert rows[0] == ["GPU", "size", "booked", "others", "free", "by"], why
        assert rows[1] == ["0", "80GB", "60GB", "-", "20GB", "a"], why
        # GPU 1: nothing of rota's, 32GB for the outsider, the 48GB free that the reason line names.
        assert rows[2][:5] == ["1", "80GB", "0B", "32GB", "48GB"], why
        assert " ".join(rows[2][5:]).startswith(f"pid {outsider.pid} ("), why
        assert "\n  others: booked for what rota did not start" in why
        got = json.loads(rota("why", "b", "--state-dir", sd, "--json", check=True).stdout)["gpus"]
        assert [(g["index"], g["booked_bytes"], g["other_bytes"]) for g in got] == [(0, 60 * GiB, 0), (1, 0, 32 * GiB)]
        assert got[1]["others"][0].startswith(f"pid {outsider.pid} (") and got[0]["others"] == []

        fake.release(outsider.pid)  # it leaves: its booking goes, b starts on GPU 1, the column goes
        wait_for(lambda: by_name(sd)["b"]["state"] == "succeeded", timeout=60)
        why = rota("why", "b", "--state-dir", sd, check=True).stdout
        assert _gpu_rows(why)[0] == ["GPU", "size", "booked", "free", "by"], why
        assert "others" not in why
    finally:
        out = open_gate(run, gate)
    assert run.returncode == 0, out
