"""`rota report` of a run that is still going: a running task reaches the time of the read.

Before, the report took the last task that *ended* for the run's end: ``run.ended_at`` was set
while tasks ran (report-json.md: null while it runs), the wall time stopped there, and every task
that started after it (in ``rota serve``'s figures: all of them, at the start of a run) was
drawn zero-wide, its booked GPU memory left out of the memory chart.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rota.report.gantt import lanes_from_report
from rota.report.load import load_report
from rota.report.timeline import gpu_memory_figure
from tests.helpers import by_name, open_gate, rota, start_rota, wait_for, write_spec

SPEC = """
tasks:
  - name: quick
    command: "true"
    gpus: 1
    gpu_memory: 20GB
  - name: slow
    needs: [quick]
    command: "while [ ! -e {gate} ]; do sleep 0.05; done"
    gpus: 1
    gpu_memory: 30GB
"""


def test_a_running_task_reaches_the_time_of_the_read(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, SPEC.replace("{gate}", str(gate)))
    run = start_rota("run", spec, "--gpus", "1x80GB", "--cpus", "2", "--plain")
    try:
        state = tmp_path / ".rota"
        wait_for(lambda: (state / "state.db").exists()
                 and by_name(state).get("slow", {}).get("state") == "running", timeout=60)
        started = by_name(state)["slow"]["started_at"]
        wait_for(lambda: time.time() > started + 1.5, timeout=10)  # the bar is 1.5 s long by now

        data = load_report(state)
        assert data.ended_at is None  # still running
        assert data.horizon_s is not None and data.horizon_s >= started + 1.5
        slow = next(item for lane in lanes_from_report(data) for item in lane.items if item[0] == "slow")
        assert slow[2] - slow[1] >= 1.5  # not cut at quick's end

        fig = gpu_memory_figure(data)
        assert fig is not None
        layer = next(tr for tr in fig.data if tr.hovertext and any("slow" in h for h in tr.hovertext))
        assert max(layer.y) == 30.0  # booked while it runs

        report = json.loads(rota("report", spec, "--json", check=True).stdout)
        assert report["run"]["ended_at"] is None and report["run"]["wall_s"] >= 1.5
    finally:
        out = open_gate(run, gate)
    assert run.returncode == 0, out
    assert load_report(tmp_path / ".rota").ended_at is not None
