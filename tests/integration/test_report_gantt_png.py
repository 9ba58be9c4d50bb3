"""``rota plan --gantt plan.png`` without kaleido (matplotlib): a legend says which colour is which
task group, and a group has the colour the HTML Gantt of the same plan gives it. Before, the PNG
had no legend at all and coloured groups in lane order (experiment-suite's ablation-large was green
in the PNG and brown in the HTML)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rota.report.gantt_file import _gantt_png_matplotlib
from rota.report.model import Lane
from rota.report.timeline import gantt_figure

pytest.importorskip("matplotlib")


def test_png_gantt_has_the_html_colours_and_a_legend(tmp_path: Path) -> None:
    # gpu0's first task starts after gpu1's: lane order and start order disagree.
    lanes = [Lane("gpu0", (("late-1", 50.0, 90.0), ("mid-1", 90.0, 120.0)), ("", ""), ("late", "mid")),
             Lane("gpu1", (("early-1", 0.0, 40.0), ("mid-2", 40.0, 95.0)), ("", ""), ("early", "mid"))]
    html = json.loads(gantt_figure(lanes).to_json())
    want = {tr["name"]: tr["marker"]["color"] for tr in html["data"] if tr.get("legendgroup") == "groups"}
    legend = _gantt_png_matplotlib(lanes, tmp_path / "g.png", "plan")
    assert legend == want and list(legend) == ["early", "mid", "late"]
    assert (tmp_path / "g.png").stat().st_size > 5_000
