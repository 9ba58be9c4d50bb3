"""rota serve's Results panel, as the report's: an interval only over replicates, never over a
sweep's trials. Before, the page took hpo-gbdt's 12 xgb trials (12 configurations) for 12
replicates of one: 'xgb auc 0.9256 [0.9164, 0.9348] n=12'."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import rota, wait_for, write_spec
from tests.integration.test_serve import Served, served  # noqa: F401 - fixture

SPEC = """
tasks:
  - name: train-s{seed}
    matrix: {seed: [1, 2, 3]}
    command: "echo ROTA_METRIC acc=0.{seed}"
  - name: hpo
    command: "python -c \\"print('ROTA_METRIC auc=' + str(1 - ({x} - 0.3) ** 2))\\""
    sweep:
      trials: 3
      metric: auc
      direction: maximize
      parallel: 1
      seed: 1
      params:
        x: {type: float, low: 0.0, high: 1.0}
"""


def test_results_never_average_sweep_trials(tmp_path: Path, served: list[Served]) -> None:  # noqa: F811
    spec = write_spec(tmp_path, SPEC)
    rota("run", spec, "--gpus", "none", "--cpus", "2", "--plain", check=True)
    s = Served(spec)
    served.append(s)
    wait_for(lambda: s.json("api/results").get("rows"), timeout=30)
    rows = s.json("api/results")["rows"]
    assert [(r["group"], r["metric"], r["n"]) for r in rows] == [("train-s{seed}", "acc", 3)]
    assert [x["sweep"] for x in s.json("api/sweeps")["sweeps"]] == ["hpo"]  # the trials: in Sweeps


def test_figures_on_the_page_name_their_group_and_study(tmp_path: Path, served: list[Served]) -> None:  # noqa: F811
    """The page draws the report's figures one under another: each says whose it is. Before, a
    results figure said only 'acc' and a sweep's 'Optimisation history', the same for every
    group and study (hpo-gbdt: three studies' figures, nothing told them apart)."""
    spec = write_spec(tmp_path, SPEC)
    rota("run", spec, "--gpus", "none", "--cpus", "2", "--plain", check=True)
    s = Served(spec)
    served.append(s)
    wait_for(lambda: s.json("api/figures").get("figures"), timeout=60)
    titles = {f["name"]: f["figure"]["layout"]["title"]["text"] for f in s.json("api/figures")["figures"]}
    assert titles["results-train-s-seed"] == "train-s{seed}"
    assert titles["sweep-hpo-history"] == "hpo: Optimisation history"
    assert titles["sweep-hpo-parallel"] == "hpo: Parallel coordinates"
