"""The results figure's x axis in the spec's order: names as the matrix lists them (as the table
under the figure does), numbers by value. Before, every axis was sorted as text where any value
was not a number: ``model: [small, medium, large]`` was drawn large, medium, small, and the
experiment-suite's tasks agnews, sst2, trec above a table listing sst2, agnews, trec."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import rota, write_spec

SPEC = """
tasks:
  - name: train-{model}-s{seed}
    matrix: {model: [small, medium, large], seed: [1, 2]}
    command: echo ROTA_METRIC acc=0.{seed}
  - name: sweep-b{batch}-s{seed}
    matrix: {batch: [16, 8, 128], seed: [1, 2]}
    command: echo ROTA_METRIC ms={batch}
"""


def test_results_axes_keep_the_matrix_order_of_names_and_sort_numbers(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC)
    rota("run", spec, "--gpus", "none", "--cpus", "2", "--plain", check=True)
    figs = tmp_path / "figs"
    rota("report", spec, "--figures", figs, "--figure-format", "json", check=True)

    def ticks(name: str) -> list[str]:
        fig = json.loads((figs / name).read_text())
        return list(fig["layout"]["xaxis"]["ticktext"])

    assert ticks("results-train-model-s-seed.json") == ["small", "medium", "large"]
    assert ticks("results-sweep-b-batch-s-seed.json") == ["8", "16", "128"]
