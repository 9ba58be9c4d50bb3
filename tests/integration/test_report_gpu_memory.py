"""The booked-memory chart draws a panel per GPU a task held; the GPUs nobody used are named in
its title instead. Before, each of those was an empty frame without axes or size line (hpo-gbdt:
its pool [0, 1] on 4 declared GPUs drew two blank panels)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import rota, write_spec

SPEC = """
tasks:
  - name: t-{i}
    matrix: {i: [1, 2]}
    command: "true"
    devices: [1]
    gpus: 1
    gpu_memory: 10GB
"""


def test_the_memory_chart_has_panels_only_for_gpus_a_task_held(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC)
    rota("run", spec, "--gpus", "3x80GB", "--cpus", "2", "--plain", check=True)
    figs = tmp_path / "figs"
    rota("report", spec, "--figures", figs, "--figure-format", "json", check=True)
    fig = json.loads((figs / "gpu-memory.json").read_text())
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert titles == ["gpu1 (80GB)"]
    assert fig["layout"]["title"]["text"] == "not used by any task: gpu0, gpu2"
    assert {tr["name"] for tr in fig["data"] if tr.get("stackgroup")} == {"t-{i}"}
