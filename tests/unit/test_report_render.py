"""Report rendering without a browser: JSON format, CSV, rich tables, text Gantt."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
from rich.console import Console

from rota.report.model import GpuInfo, GpuSample, Lane, ReportData, ReportError, TaskRow
from rota.report.render import (
    JSON_FORMAT,
    gantt_text,
    header_lines,
    lanes_from_report,
    stack_rows,
    to_csv,
    to_json,
    to_rich_tables,
)

GB = 2**30
T0 = 1_700_000_000.0


def _data() -> ReportData:
    tasks = [
        TaskRow("train[model=a,seed=1]", "succeeded", 1, 0, start_s=T0, end_s=T0 + 100, gpus=(0,),
                cpus=4, gpu_memory_bytes=20 * GB, peak_gpu_memory_bytes=5 * GB,
                vars={"model": "a", "seed": "1"}, metrics={"acc": 0.5, "loss": math.nan},
                base="train", planned_start_s=0.0, planned_end_s=90.0),
        TaskRow("train[model=a,seed=2]", "succeeded", 1, 0, start_s=T0 + 10, end_s=T0 + 120,
                gpus=(0,), vars={"model": "a", "seed": "2"}, metrics={"acc": 0.7}, base="train"),
        TaskRow("ddp", "failed", 3, 1, "exit 1 after 3 attempts", T0 + 20, T0 + 80, gpus=(1, 2),
                log_tail="Traceback\nRuntimeError: NCCL [boom]", base="ddp"),
        TaskRow("prep", "succeeded", 1, 0, start_s=T0, end_s=T0 + 30, cpus=16, base="prep"),
        TaskRow("later", "pending", base="later"),
    ]  # fmt: skip
    samples = [
        GpuSample(T0 + k, g, 50.0, 4 * GB, 16 * GB) for k in range(0, 120, 10) for g in (0, 1)
    ]
    return ReportData("run-1", "spec.yaml", (GpuInfo(0, "T4", 16 * GB), GpuInfo(1, "T4", 16 * GB),
                      GpuInfo(2, "T4", 16 * GB)), 32, tuple(tasks), tuple(samples), T0, T0 + 130)  # fmt: skip


def test_json_is_strict_json_with_documented_keys() -> None:
    out = to_json(_data(), ["model"])
    text = json.dumps(out, allow_nan=False)  # NaN metrics became null
    back = json.loads(text)
    assert back["format"] == JSON_FORMAT
    assert set(back) == {"format", "run", "machine", "by", "tasks", "groups", "flags"}
    assert back["run"]["wall_s"] == 130.0
    assert back["run"]["states"] == {"succeeded": 3, "failed": 1, "pending": 1}
    assert back["machine"]["gpus"][0] == {"index": 0, "name": "T4", "memory_bytes": 16 * GB}
    names = [t["name"] for t in back["tasks"]]
    assert names == ["train[model=a,seed=1]", "prep", "train[model=a,seed=2]", "ddp", "later"]
    first = back["tasks"][0]
    assert first["metrics"] == {"acc": 0.5, "loss": None}
    assert first["duration_s"] == 100.0 and first["gpus"] == [0]
    acc = next(g for g in back["groups"] if g["metric"] == "acc")
    assert acc["vars"] == {"model": "a"} and acc["n"] == 2 and acc["mean"] == pytest.approx(0.6)
    assert acc["ci_low"] < 0.6 < acc["ci_high"]
    assert [f["kind"] for f in back["flags"]] == ["over"]


def test_csv_tasks_and_groups() -> None:
    data = _data()
    rows = list(csv.DictReader(io.StringIO(to_csv(data, []))))
    assert rows[0]["name"] == "train[model=a,seed=1]"
    assert rows[0]["var.model"] == "a" and rows[0]["metric.acc"] == "0.5"
    assert rows[0]["metric.loss"] == ""  # NaN -> empty
    assert next(r for r in rows if r["name"] == "ddp")["gpus"] == "1;2"
    groups = list(csv.DictReader(io.StringIO(to_csv(data, ["model"]))))
    assert [(g["base"], g["var.model"], g["metric"], g["n"]) for g in groups] == [
        ("train", "a", "acc", "2")
    ]
    assert to_csv(data, ["model"], table="tasks").startswith("name,")
    with pytest.raises(ReportError):
        to_csv(data, [], table="nope")  # type: ignore[arg-type]


def test_rich_tables_show_names_literally_and_failures() -> None:
    console = Console(width=200, record=True)
    console.print(*to_rich_tables(_data(), ["model"]))
    text = console.export_text()
    assert "train[model=a,seed=1]" in text  # not eaten as markup
    assert "0.6 ± 0.14" in text
    assert "RuntimeError: NCCL [boom]" in text
    assert "failed: ddp" in text


def test_lanes_from_report_multi_gpu_and_cpu() -> None:
    lanes = {lane.name: lane for lane in lanes_from_report(_data())}
    assert list(lanes) == ["gpu0", "gpu1", "gpu2", "cpu"]
    assert [i[0] for i in lanes["gpu0"].items] == ["train[model=a,seed=1]", "train[model=a,seed=2]"]
    assert lanes["gpu1"].items == lanes["gpu2"].items == (("ddp", 20.0, 80.0),)
    assert lanes["gpu1"].states == ("failed",)
    assert lanes["cpu"].items == (("prep", 0.0, 30.0),)


def test_stack_rows() -> None:
    assert stack_rows([(0, 10), (10, 20), (5, 15), (16, 30)]) == [0, 0, 1, 1]
    assert stack_rows([(0, 10), (10, 20), (5, 15), (12, 30)]) == [0, 0, 1, 2]
    assert stack_rows([]) == []
    # back-to-back tasks whose epoch times lost a few ulps still share a row
    t0 = 1_763_900_000.123
    ends = [(t0 + 0.1 * k) - t0 for k in range(1, 50)]
    assert set(stack_rows(list(zip([0.0, *ends[:-1]], ends, strict=True)))) == {0}


def test_gantt_text_shape() -> None:
    lanes = [
        Lane("gpu0", (("a", 0, 50), ("b", 25, 100), ("c", 50, 60))),
        Lane("cpu", (("prep", 0, 10),)),
        Lane("gpu1", ()),
    ]
    text = gantt_text(lanes, width=60)
    lines = text.splitlines()
    assert all(len(line) <= 60 for line in lines)
    assert lines[0].startswith("gpu0 |[a") and lines[1].startswith("     |")  # b stacked below a
    assert lines[2].startswith("cpu  |[pre]")
    assert lines[3].startswith("gpu1 |") and set(lines[3][6:-1]) == {" "}
    assert lines[-1].split() == ["0s", "30s", "1m00s", "1m30s"]  # round ticks
    assert gantt_text([], 60) == "(no lanes)"
    with pytest.raises(ReportError):
        gantt_text(lanes, width=10)
    # (name, items) pairs work too, and tiny items stay visible
    assert "#" in gantt_text(
        [("x", [("tiny", 500.0, 500.001), ("long", 1.0, 100.0), ("z", 900, 1e3)])], 40
    )


def test_gantt_text_states_legend() -> None:
    lanes = lanes_from_report(_data())
    text = gantt_text(lanes, width=100)
    assert "x failed" in text and "= succeeded" in text


def test_lane_validation() -> None:
    with pytest.raises(ReportError):
        Lane("gpu0", (("a", 5.0, 1.0),))
    with pytest.raises(ReportError):
        Lane("gpu0", (("a", 0.0, 1.0),), ("succeeded", "failed"))


def test_downsample_keeps_peaks_and_bounds_points() -> None:
    from rota.report.figures import downsample

    pts = [GpuSample(float(t), 0, float(t % 100), (40 if t == 5_001 else 1) * GB, 80 * GB)
           for t in range(10_000)]  # fmt: skip
    t, util, mem = downsample(pts, most=500)
    assert len(t) == len(util) == len(mem) <= 500
    assert t[0] == 0.0 and max(m or 0.0 for m in mem) == 40 * GB  # the one-sample spike survives
    assert 45 < sum(u or 0.0 for u in util) / len(util) < 55
    small = pts[:10]
    assert downsample(small, most=500)[0] == [s.t_s for s in small]
    gaps = [GpuSample(0.0, 0, None, None, None), GpuSample(1.0, 0, 50.0, GB, None)]
    assert downsample(gaps, most=1) == ([0.0], [50.0], [float(GB)])
    assert downsample(gaps) == ([0.0, 1.0], [None, 50.0], [None, float(GB)])


def test_launching_is_a_state_and_plan_lanes_show_in_html() -> None:
    from rota.report.html import render_html

    row = TaskRow("warm", "launching", start_s=T0 + 5, gpus=(0,))
    nvml_gaps = (GpuSample(T0, 0, None, None, None), GpuSample(T0 + 5, 0, 30.0, GB, None))
    data = ReportData("r", "s.yaml", (GpuInfo(0, "T4", 16 * GB),), 4, (row,), nvml_gaps, T0, None)
    assert "(still running)" in "\n".join(v for _, v in header_lines(data))
    text = render_html(data, [], plan=[("gpu0", [("warm", 0.0, 60.0)])])
    assert "Plan (simulated)" in text and "launching" in text


def _many_metrics_data() -> ReportData:
    """A suite as a real one looks: a 3x3 grid with 20 metrics each, a lone prep task, a
    multi-GPU task, long names."""
    metrics = {f"metric_{k:02d}_score": 0.0912345 + k / 7 for k in range(20)}
    tasks = [TaskRow("prep-corpus", "succeeded", 1, 0, start_s=T0, end_s=T0 + 30, cpus=16, base="prep-corpus")]
    for i, ds in enumerate(["sst2", "agnews", "trec"]):
        for seed in (42, 123, 456):
            tasks.append(TaskRow(
                f"main-medium-{ds}-s{seed}", "succeeded", 2, 0, start_s=T0 + 30 + i, end_s=T0 + 4000 + i,
                gpus=(i,), cpus=4, gpu_memory_bytes=70 * GB, peak_gpu_memory_bytes=61 * GB,
                vars={"dataset": ds, "seed": str(seed)}, metrics=metrics, base="main-medium-{dataset}-s{seed}"))
    tasks.append(TaskRow("xsum-train", "succeeded", 1, 0, start_s=T0 + 40, end_s=T0 + 9000, gpus=(0, 1, 2, 3),
                         base="xsum-train", metrics={"rouge_l": 0.3561}))
    return ReportData("run-2", "/very/long/path/to/examples/experiment-suite/rota.yaml",
                      tuple(GpuInfo(g, "H100", 80 * GB) for g in range(4)), 64, tuple(tasks), (), T0, T0 + 9000)


@pytest.mark.parametrize("width", [80, 160])
def test_text_report_never_truncates_a_cell(width: int) -> None:
    """At a terminal's 160 columns and a pipe's 80, every cell is whole: no `dura…`, no `0.09…`."""
    console = Console(width=width, record=True)
    console.print(*to_rich_tables(_many_metrics_data(), ["dataset"]))
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    for word in ("duration", "main-medium-agnews-s456", "metric_19_score", "0.09123", "2.806", "rouge_l"):
        assert word in text, word
    # one table per task group
    assert "Tasks of main-medium-{dataset}-s{seed} (9)" in text
    assert "Metrics of main-medium-{dataset}-s{seed} by dataset (95% CI)" in text


def test_text_report_metrics_are_columns_when_they_fit_and_rows_when_not() -> None:
    few = Console(width=160, record=True)
    few.print(*to_rich_tables(_data(), ["model"]))
    header = next(line for line in few.export_text().splitlines() if "duration" in line)
    assert "acc" in header and "loss" in header  # two metrics: columns
    many = Console(width=160, record=True)
    many.print(*to_rich_tables(_many_metrics_data(), ["dataset"]))
    text = many.export_text()
    header = next(line for line in text.splitlines() if "duration" in line and "metric" in line)
    assert "metric_00_score" not in header and "value" in header  # twenty: one row per metric
    assert sum("metric_07_score" in line for line in text.splitlines()) >= 9  # once per task, plus the groups


def test_header_names_each_gpu_kind_and_its_size_once() -> None:
    declared = tuple(GpuInfo(i, "declared 80GB", 80 * GB) for i in range(4))
    data = ReportData("run-1", "spec.yaml", declared, 64, (), (), T0, T0 + 1)
    assert dict(header_lines(data))["machine"] == "4x declared 80GB, 64 CPU"
    assert dict(header_lines(_data()))["machine"] == "3x T4 16GB, 32 CPU"


def test_a_large_spread_is_written_without_an_exponent() -> None:
    """experiment-suite's throughput over 16 configurations read '1079 ± 7e+02' in the terminal."""
    from rota.report.tables import fmt_mean_std

    assert fmt_mean_std(1079.0, 740.3) == "1079 ± 740"
    assert fmt_mean_std(38.46, 51.2) == "38.46 ± 51"
    assert fmt_mean_std(0.9123, 0.0123) == "0.9123 ± 0.012"
    assert fmt_mean_std(0.5, None) == "0.5 ± -"
