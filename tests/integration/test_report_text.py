"""`rota report` in the terminal: a group without replicates (a grid without seeds) lists its values,
without the mean ± std, n and interval columns that said '± -', '1' and '-' on every row
(experiment-suite: six of its eight group tables, some 150 lines of them)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import rota, write_spec

SPEC = """
tasks:
  - name: grid-{method}
    matrix: {method: [bow, lstm]}
    command: "echo ROTA_METRIC acc=0.7"
  - name: main-{method}-s{seed}
    matrix: {method: [bow, lstm], seed: [1, 2, 3]}
    command: "echo ROTA_METRIC acc=0.{seed}"
"""


def test_a_group_without_replicates_lists_values_only(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC)
    rota("run", spec, "--gpus", "none", "--cpus", "2", "--plain", check=True)
    text = rota("report", spec, check=True, env={"COLUMNS": "160"}).stdout
    grid = text.split("Metrics of grid-{method}", 1)[1].split("Metrics of", 1)[0]
    assert "(one run each)" in " ".join(grid.split()) and "± -" not in grid and "95% CI" not in grid
    assert "│ bow    │ acc    │   0.7 │" in grid
    main = text.split("Metrics of main-{method}-s{seed} by method (95% CI)", 1)[1]
    assert "0.2 ± 0.1" in main and "[0.1, 0.3]" in main  # the group with seeds keeps its intervals
