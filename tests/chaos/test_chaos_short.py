"""The short chaos suite in CI: controller and tasks SIGKILLed at random, nothing lost (local, Ray, SLURM)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


def _chaos() -> Any:
    """bench/chaos.py, loaded once (it is a script, not a package module)."""
    if "rota_bench_chaos" not in sys.modules:
        spec = importlib.util.spec_from_file_location("rota_bench_chaos", BENCH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["rota_bench_chaos"]


def _chaos_holds(capsys: pytest.CaptureFixture[str], *args: str) -> None:
    """Run the chaos suite with ``args``: every check holds, and controllers were killed."""
    code = _chaos().main(["--short", "--seed", "7", *args])
    out = capsys.readouterr().out
    print(out)
    assert code == 0, out
    assert "controller kills (SIGKILL)" in out


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_chaos_short(capsys: pytest.CaptureFixture[str]) -> None:
    _chaos_holds(capsys, "--runs", "2")


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(300)
def test_chaos_short_on_ray(capsys: pytest.CaptureFixture[str], ray_cluster: str) -> None:
    """The same, with --backend ray: controller kills are adopted through the supervisor actor."""
    _chaos_holds(capsys, "--runs", "1", "--ray", ray_cluster)


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("slurm_cluster")
def test_chaos_short_on_slurm(capsys: pytest.CaptureFixture[str]) -> None:
    """The same, with --backend slurm: a killed controller's jobs are reattached by their job ids."""
    _chaos_holds(capsys, "--runs", "1", "--slurm")
