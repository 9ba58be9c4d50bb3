"""The report's timeline and memory chart draw the attempts the run retried, where and when they
ran: before, only each task's latest attempt was drawn, so with retries (experiment-suite at a
30% fail rate: 25 failed attempts) the GPUs looked idle where failed attempts ran, and no failed
bar was ever seen once its retry succeeded."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import rota, write_spec

SPEC = """
tasks:
  - name: flaky
    command: "if [ -e {flag} ]; then sleep 0.5; else touch {flag}; sleep 0.5; exit 1; fi"
    retries: 1
    gpus: 1
    gpu_memory: 20GB
"""


def test_a_retried_attempt_is_drawn_where_it_ran(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC.replace("{flag}", str(tmp_path / "flag")))
    rota("run", spec, "--gpus", "1x80GB", "--cpus", "2", "--retry-delay", "0.2", "--plain", check=True)
    figs = tmp_path / "figs"
    out = rota("report", spec, "--figures", figs, "--figure-format", "json", "--json", check=True)
    report = json.loads(out.stdout)
    assert report["tasks"][0]["attempts"] == 2 and report["run"]["wall_s"] >= 1.0  # from attempt 1

    timeline = json.loads((figs / "timeline.json").read_text())
    hovers = [h for tr in timeline["data"] for h in (tr.get("hovertext") or [])]
    first = [h for h in hovers if "flaky (attempt 1)" in h]
    assert len(first) == 1 and "failed" in first[0] and len(hovers) == 2

    memory = json.loads((figs / "gpu-memory.json").read_text())
    layer = next(tr for tr in memory["data"] if tr.get("stackgroup"))
    booked = [y for y in layer["y"] if y]  # 20 GB while attempt 1 ran, and again while attempt 2 did
    assert booked.count(20.0) >= 2 and layer["y"][0] == 20.0
