"""A task writing ~200 MB (one line, no newline) leaves the controller's RSS flat."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_big_log.py"


@pytest.mark.slow
def test_200mb_log_keeps_controller_memory_flat(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("rota_bench_big_log", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    code = mod.main(["--size", "200M"])
    out = capsys.readouterr().out
    print(out)
    assert code == 0, out
