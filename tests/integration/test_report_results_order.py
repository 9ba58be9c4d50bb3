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


def test_a_results_figure_on_its_own_names_its_group(tmp_path: Path) -> None:
    """A results figure said only its metrics ("acc"), the same for every group: as a --figures
    file or on rota serve's page (which draws these figures one under another) nothing said which
    group it showed. The HTML report names it in a heading, so its copy has no title."""
    spec = write_spec(tmp_path, SPEC)
    rota("run", spec, "--gpus", "none", "--cpus", "2", "--plain", check=True)
    figs, html = tmp_path / "figs", tmp_path / "r.html"
    rota("report", spec, "--figures", figs, "--figure-format", "json", "--html", html, check=True)
    fig = json.loads((figs / "results-train-model-s-seed.json").read_text())
    assert fig["layout"]["title"]["text"] == "train-{model}-s{seed}"
    text = html.read_text()
    assert "<h3>train-{model}-s{seed}</h3>" in text
    embedded = json.loads(text.split('id="fig-results-train-model-s-seed-json">', 1)[1].split("</script>", 1)[0])
    assert "title" not in embedded["layout"] or not embedded["layout"]["title"].get("text")
