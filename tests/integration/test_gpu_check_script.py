"""scripts/gpu-check.sh, the real-GPU proof: it parses, its job specs load, and without a GPU it
says so per check and exits non-zero (it runs for real only on an NVIDIA machine)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import rota

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"
SPECS = sorted((ROOT / "scripts" / "gpu-check").glob("*.yaml"))
CHECKS = ["machine", "quickstart", "share", "oom", "enforce", "foreign", "report"]


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_its_job_specs_load(spec: Path):
    out = rota("plan", spec, "--gpus", "1x80GB", "--cpus", "8")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_specs_are_all_there():
    assert {p.stem for p in SPECS} == {"share", "oom", "enforce", "foreign"}


def _real_gpu() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        return bool(pynvml.nvmlDeviceGetCount())
    except Exception:  # noqa: BLE001
        return False


def test_without_a_gpu_every_check_says_skipped(tmp_path: Path):
    if _real_gpu():
        pytest.skip("this machine has an NVIDIA GPU: run the script itself")
    env = {k: v for k, v in os.environ.items() if k != "ROTA_FAKE_NVML"}
    env["GPU_CHECK_WORK"] = str(tmp_path)
    out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    assert out.stdout.splitlines() == [f"SKIP {c} no NVIDIA GPU: skipped" for c in CHECKS]
    assert "no NVIDIA GPU here" in out.stderr
