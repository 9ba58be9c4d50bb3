"""The short chaos suite in CI: controller and tasks SIGKILLed at random, nothing lost."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_chaos_short(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("rota_bench_chaos", BENCH)
    assert spec is not None and spec.loader is not None
    chaos = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = chaos
    spec.loader.exec_module(chaos)
    code = chaos.main(["--short", "--runs", "2", "--seed", "7"])
    out = capsys.readouterr().out
    print(out)
    assert code == 0, out
    assert "controller kills (SIGKILL)" in out
