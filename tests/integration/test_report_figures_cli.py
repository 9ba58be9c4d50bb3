"""`rota report --html/--figures` on a real run with seeds and a sweep: results over seeds
only, Optuna's figures per sweep, each figure as a file, and every figure drawn in Chromium."""

from __future__ import annotations

import json

from tests.helpers import rota, write_spec
from tests.integration.test_report_html import drawn_figures

SPEC = """
tasks:
  - name: train-{model}-s{seed}
    matrix: {model: [small, big], seed: [1, 2, 3]}
    command: "python -c \\"print('ROTA_METRIC acc=' + str({seed} * 0.01 + (0.9 if '{model}' == 'big' else 0.8)))\\""
  - name: hpo
    command: "python -c \\"print('ROTA_METRIC auc=' + str(1 - ({x} - 0.3) ** 2 + {d} / 100))\\""
    sweep:
      trials: 4
      metric: auc
      direction: maximize
      parallel: 2
      seed: 1
      params:
        x: {type: float, low: 0.0, high: 1.0}
        d: {type: int, low: 1, high: 3}
"""


def test_report_html_and_figures_of_a_run_with_seeds_and_a_sweep(tmp_path):
    spec = write_spec(tmp_path, SPEC)
    run = rota("run", spec, "--gpus", "none", "--cpus", "2", "--plain")
    assert run.returncode == 0, run.stdout + run.stderr

    html = tmp_path / "r.html"
    figs = tmp_path / "figs"
    out = rota("report", spec, "--json", "--html", html, "--figures", figs, check=True)  # one call: ~10 s each
    report = json.loads(out.stdout)
    groups = report["groups"]
    assert {(g["base"], g["vars"]["model"], g["n"]) for g in groups} == {
        ("train-{model}-s{seed}", "small", 3), ("train-{model}-s{seed}", "big", 3)}  # no group of trials
    assert all(g["ci_method"] in ("t", "bootstrap") and 0 <= g["ci_low"] <= g["ci_high"] <= 1 for g in groups)
    assert sorted(t["trial"] for t in report["tasks"] if t["trial"] is not None) == [0, 1, 2, 3]

    names = sorted(p.name for p in figs.iterdir())
    assert names == ["results-train-model-s-seed.html", "sweep-hpo-history.html", "sweep-hpo-importance.html",
                     "sweep-hpo-parallel.html", "timeline.html"]
    text = html.read_text()
    assert "Optimisation history" in text and "hpo-trial-" in text  # the best trials' table
    assert text.count('id="rota-plotly-gz"') == 1 and len(text) < 3_000_000

    fig = json.loads(text.split('id="fig-results-train-model-s-seed-json">', 1)[1].split("</script>", 1)[0])
    means = next(tr for tr in fig["data"] if tr.get("error_y"))
    assert sorted(round(y, 4) for y in means["y"]) == [0.82, 0.92]  # mean over seeds 1, 2, 3

    ids, errors = drawn_figures(html, tmp_path)
    assert [i for i, _, _ in ids] == ["fig-results-train-model-s-seed", "fig-sweep-hpo-history",
                                      "fig-sweep-hpo-parallel", "fig-sweep-hpo-importance", "fig-timeline"]
    assert all(svgs >= 1 and marks >= 1 for _, svgs, marks in ids), ids
    assert not errors, errors
