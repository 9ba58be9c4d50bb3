"""rota run inside a real SLURM allocation packs tasks into exactly what SLURM granted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import read_records, wait_for, write_spec

ROOT = Path(__file__).resolve().parents[2]
REC = str(ROOT / "tests" / "recorder.py")
pytestmark = pytest.mark.slurm


def test_sbatch_script_runs_rota_inside_the_allocation(tmp_path, slurm_cluster):
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: small-{{i}}
            command: {sys.executable} {REC} {rec} small-{{i}} 1.0
            matrix: {{i: [0, 1, 2, 3]}}
            gpus: 1
            gpu_memory: 30GB
    """)
    script = tmp_path / "rota.sbatch"
    text = (ROOT / "examples" / "slurm" / "rota.sbatch").read_text()
    # The cluster for tests is small: ask for 2 GPUs, 2 CPUs, little memory, a short time.
    text = (text.replace("--gres=gpu:4", "--gres=gpu:2").replace("--cpus-per-task=32", "--cpus-per-task=4")
            .replace("--mem=256G", "--mem=1G").replace("--time=24:00:00", "--time=00:10:00")
            .replace("--output=rota-%j.out", f"--output={tmp_path}/rota-%j.out"))
    script.write_text(text.replace("exec rota run", f"exec {sys.executable} -m rota.cli run"))
    out = subprocess.run(["sbatch", "--parsable", str(script), str(spec), "--gpus", "2x80GB"],
                         capture_output=True, text=True, check=True, cwd=tmp_path)
    job = out.stdout.strip().split(";")[0]
    wait_for(lambda: not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip(),
             timeout=180, interval=0.5)
    log = (tmp_path / f"rota-{job}.out").read_text()
    assert "4 succeeded" in log, log
    recs = read_records(rec)
    assert len(recs) == 4
    granted = {r["cvd"] for r in recs}
    # Every task pinned to exactly one of the allocation's GPUs; 30GB tasks packed two per 80GB GPU.
    assert all(c is not None and len(c.split(",")) == 1 for c in granted)
    st = json.loads(subprocess.run([sys.executable, "-m", "rota.cli", "status", "--json", str(spec)],
                                   capture_output=True, text=True, check=True).stdout)
    assert st["counts"]["succeeded"] == 4
