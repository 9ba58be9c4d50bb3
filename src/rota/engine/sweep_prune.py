"""Intermediate values for sweep pruning: ``ROTA_REPORT step=<int> value=<float>`` lines.

A trial prints one such line per step to its log; the controller reads the new
complete lines on each tick (never a half-written one), hands them to Optuna
and, when the study's pruner says so, stops the trial. Pure file reading; no
Optuna here.
"""

from __future__ import annotations

import math
import re

REPORT_PREFIX = b"ROTA_REPORT"
_REPORT = re.compile(rb"^ROTA_REPORT\s+step=(\d+)\s+value=(\S+)\s*$")
MAX_READ = 4 * 2**20  # bytes read per log per scan; the rest waits for the next scan


class ReportReader:
    """Reads each attempt log incrementally from where the previous scan stopped."""

    def __init__(self) -> None:
        self._offsets: dict[str, int] = {}

    def new_reports(self, key: str, path: str | None) -> list[tuple[int, float]]:
        """``(step, value)`` pairs from complete lines appended since the last call for ``key``.

        Lines with a non-finite or unparsable value are ignored. A missing log gives ``[]``.
        """
        if not path:
            return []
        start = self._offsets.get(key, 0)
        try:
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read(MAX_READ)
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) >= MAX_READ:  # one enormous line: skip it
                self._offsets[key] = start + len(data)
            return []
        self._offsets[key] = start + end + 1
        out: list[tuple[int, float]] = []
        for raw in data[: end + 1].splitlines():
            if not raw.startswith(REPORT_PREFIX):
                continue
            m = _REPORT.match(raw.strip())
            if m is None:
                continue
            try:
                value = float(m.group(2))
            except ValueError:
                continue
            if math.isfinite(value):
                out.append((int(m.group(1)), value))
        return out

    def forget(self, key: str) -> None:
        self._offsets.pop(key, None)

