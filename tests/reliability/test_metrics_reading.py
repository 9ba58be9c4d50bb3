"""Metrics from a log in bounded memory: giant lines, chunk edges, last line without newline."""

from __future__ import annotations

from pathlib import Path

import pytest

from rota.engine.attempt import read_metrics

MB = 2**20
CASES = [
    ("ROTA_METRIC a=1\n", {"a": 1.0}),
    ("ROTA_METRIC a=1", {"a": 1.0}),
    ("x" * (3 * MB) + "ROTA_METRIC glued=1\nROTA_METRIC ok=2\n", {"ok": 2.0}),
    ("y\n" * MB + "ROTA_METRIC z=3\n" + "w" * 100, {"z": 3.0}),
    ("\0" * (MB - 5) + "\nROTA_METRIC edge=4\n", {"edge": 4.0}),
    ("q" * (MB - 6) + "\nROTA_METRIC split=5\n", {"split": 5.0}),
    ("  ROTA_METRIC indented=1\nROTA_METRIC nan=nan\nROTA_METRIC inf=inf\nROTA_METRIC x=abc\n", {}),
    ("ROTA_METRIC a=1\nROTA_METRIC a=2\n", {"a": 2.0}),
]


@pytest.mark.parametrize("text,want", CASES)
def test_read_metrics(tmp_path: Path, text: str, want: dict[str, float]) -> None:
    log = tmp_path / "attempt-1.log"
    log.write_text(text)
    assert read_metrics(str(log), None) == want


def test_giant_line_does_not_grow_memory(tmp_path: Path) -> None:
    import tracemalloc

    log = tmp_path / "attempt-1.log"
    with open(log, "wb") as f:
        for _ in range(64):
            f.write(b"\0" * MB)
        f.write(b"\nROTA_METRIC big=1\n")
    tracemalloc.start()
    try:
        assert read_metrics(str(log), None) == {"big": 1.0}
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MB, f"reading a 64 MB line peaked at {peak / MB:.0f} MB"
