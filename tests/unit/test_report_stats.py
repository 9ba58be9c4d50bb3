"""Report statistics: Student t without scipy (checked against scipy), summaries,
grouping by matrix variables, memory flags, task table, run summary."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sst

from rota.errors import RotaError
from rota.report.model import GpuInfo, ReportData, ReportError, TaskRow
from rota.report.stats import (
    default_by,
    group_metrics,
    memory_flags,
    run_summary,
    summarize,
    t_cdf,
    t_ppf,
    task_table,
)

GB = 2**30


def _close(a: float, b: float, rel: float = 1e-9) -> bool:
    return abs(a - b) <= rel * max(1.0, abs(b))


# --------------------------------------------------------------- Student t


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 10, 29, 30, 100, 1000, 10_000])
@pytest.mark.parametrize("p", [0.6, 0.75, 0.9, 0.95, 0.975, 0.99, 0.995, 0.9995, 0.025, 0.3])
def test_t_ppf_matches_scipy_on_usual_quantiles(df: int, p: float) -> None:
    assert _close(t_ppf(p, df), float(sst.t.ppf(p, df)), 1e-10)


@settings(max_examples=300, deadline=None)
@given(
    df=st.floats(min_value=1.0, max_value=5000.0, allow_nan=False),
    p=st.floats(min_value=1e-8, max_value=1 - 1e-8).filter(lambda p: abs(p - 0.5) > 1e-6),
)
def test_t_ppf_matches_scipy_random(df: float, p: float) -> None:
    assert _close(t_ppf(p, df), float(sst.t.ppf(p, df)), 1e-8)


@settings(max_examples=200, deadline=None)
@given(
    df=st.floats(min_value=0.5, max_value=1e4, allow_nan=False),
    t=st.floats(min_value=-1e3, max_value=1e3, allow_nan=False),
)
def test_t_cdf_matches_scipy(df: float, t: float) -> None:
    expected = float(sst.t.cdf(t, df))
    assert abs(t_cdf(t, df) - expected) <= 1e-12 + 1e-9 * expected


def test_t_ppf_closed_forms_and_symmetry() -> None:
    assert t_ppf(0.975, 1) == pytest.approx(12.706204736174698, rel=1e-12)
    assert t_ppf(0.975, 2) == pytest.approx(4.302652729749464, rel=1e-12)
    assert t_ppf(0.5, 7) == 0.0
    for df in (1, 2, 3, 17):
        assert t_ppf(0.1, df) == pytest.approx(-t_ppf(0.9, df), rel=1e-14)
        assert t_ppf(0.25, df) == -t_ppf(0.75, df)  # both exact in binary
    # Far tail keeps its precision (no 1 - p cancellation).
    assert t_ppf(1e-12, 5) == pytest.approx(float(sst.t.ppf(1e-12, 5)), rel=1e-9)


@pytest.mark.parametrize("p,df", [(0.0, 3), (1.0, 3), (-0.1, 3), (0.9, 0), (0.9, -1)])
def test_t_ppf_rejects_bad_input(p: float, df: float) -> None:
    with pytest.raises(RotaError):
        t_ppf(p, df)


# --------------------------------------------------------------- summarize

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(finite, min_size=2, max_size=60))
def test_summary_matches_statistics_and_scipy(values: list[float]) -> None:
    s = summarize(values)
    n = len(values)
    mean = statistics.fmean(values)
    std = statistics.stdev(values)
    scale = 1e-9 * (1.0 + max(abs(v) for v in values))
    assert s.n == n
    assert abs(s.mean - mean) <= scale
    assert s.std is not None and abs(s.std - std) <= scale
    if std == 0:
        assert s.ci_low == s.ci_high == pytest.approx(mean)
        return
    lo, hi = sst.t.interval(0.95, n - 1, loc=mean, scale=std / math.sqrt(n))
    assert s.ci_low is not None and s.ci_high is not None
    assert abs(s.ci_low - lo) <= scale
    assert abs(s.ci_high - hi) <= scale
    assert s.ci_low <= s.mean <= s.ci_high


@pytest.mark.parametrize("confidence", [0.5, 0.9, 0.99, 0.999])
def test_summary_other_confidence_levels(confidence: float) -> None:
    values = [0.91, 0.88, 0.93, 0.9, 0.87]
    s = summarize(values, confidence)
    sem = statistics.stdev(values) / math.sqrt(5)
    lo, hi = sst.t.interval(confidence, 4, loc=statistics.fmean(values), scale=sem)
    assert s.ci_low == pytest.approx(lo, rel=1e-10)
    assert s.ci_high == pytest.approx(hi, rel=1e-10)
    assert s.confidence == confidence


def test_summary_of_one_value_has_no_spread() -> None:
    s = summarize([0.7])
    assert (s.mean, s.std, s.n, s.ci_low, s.ci_high) == (0.7, None, 1, None, None)


@pytest.mark.parametrize("values", [[], [1.0, math.nan], [math.inf, 1.0]])
def test_summary_rejects_empty_and_non_finite(values: list[float]) -> None:
    with pytest.raises(ReportError):
        summarize(values)


def test_summary_known_three_seeds() -> None:
    # acc over seeds {42,123,456}: mean 0.872, sd 0.006557, t(0.975,2)=4.302653
    s = summarize([0.871, 0.879, 0.866])
    assert s.mean == pytest.approx(0.872)
    assert s.std == pytest.approx(0.0065574385, rel=1e-8)
    assert s.ci_high is not None
    assert s.ci_high - s.mean == pytest.approx(
        4.302652729749464 * 0.0065574385 / math.sqrt(3), rel=1e-8
    )


# --------------------------------------------------------------- grouping


def _task(name: str, state: str = "succeeded", base: str | None = "train", **kw: object) -> TaskRow:
    return TaskRow(name=name, state=state, base=base, **kw)  # type: ignore[arg-type]


def _grid() -> list[TaskRow]:
    rows = []
    acc = {("small", "42"): 0.80, ("small", "1"): 0.82, ("small", "2"): 0.84,
           ("big", "42"): 0.90, ("big", "1"): 0.92, ("big", "2"): math.nan}  # fmt: skip
    for (model, seed), a in acc.items():
        rows.append(
            _task(
                f"train[model={model},seed={seed}]",
                vars={"model": model, "seed": seed, "lr": "0.1"},
                metrics={"acc": a, "loss": 1 - a if math.isfinite(a) else 9.0},
            )
        )
    rows.append(_task("train[model=big,seed=7]", state="failed", vars={"model": "big", "seed": "7"},
                      metrics={"acc": 0.1}))  # fmt: skip
    rows.append(_task("train[model=big,seed=8]", state="cached", vars={"model": "big", "seed": "8"},
                      metrics={"acc": 0.94}))  # fmt: skip
    rows.append(
        _task("probe[model=small]", base="probe", vars={"model": "small"}, metrics={"acc": 0.5})
    )
    rows.append(_task("aggregate", base="aggregate"))
    return rows


def test_group_by_model_aggregates_over_seeds() -> None:
    groups = group_metrics(_grid(), ["model"])
    keys = [(g.base, g.vars["model"], g.metric) for g in groups]
    assert keys == [
        ("train", "small", "acc"),
        ("train", "small", "loss"),
        ("train", "big", "acc"),
        ("train", "big", "loss"),
        ("probe", "small", "acc"),
    ]
    small_acc = groups[0]
    assert small_acc.summary.n == 3
    assert small_acc.summary.mean == pytest.approx(0.82)
    assert small_acc.tasks == ("train[model=small,seed=42]", "train[model=small,seed=1]",
                               "train[model=small,seed=2]")  # fmt: skip
    big_acc = groups[2]
    # the failed seed is left out, the cached one counts, the NaN is counted apart
    assert big_acc.summary.n == 3
    assert big_acc.summary.mean == pytest.approx((0.90 + 0.92 + 0.94) / 3)
    assert big_acc.non_finite == 1
    assert "train[model=big,seed=7]" not in big_acc.tasks
    assert groups[3].summary.n == 3 and groups[3].non_finite == 0  # loss 9.0 is finite


def test_group_by_nothing_and_by_missing_variable() -> None:
    whole = group_metrics(_grid(), [])
    assert [(g.base, g.metric, g.summary.n) for g in whole] == [
        ("train", "acc", 6),
        ("train", "loss", 6),
        ("probe", "acc", 1),
    ]
    by_lr = group_metrics(_grid(), ["lr"])
    assert {g.vars["lr"] for g in by_lr} == {"0.1", "-"}
    two = group_metrics(_grid(), ["model", "seed"])
    assert all(g.summary.n == 1 and g.summary.std is None for g in two)


def test_default_by_drops_replicate_variables() -> None:
    rows = [
        _task("a", vars={"model": "x", "seed": "1", "data_seed": "3", "fold": "2", "task": "sst2"})
    ]
    assert default_by(rows) == ["model", "task"]


# --------------------------------------------------------------- flags, table, summary


def test_memory_flags() -> None:
    rows = [
        _task("over", gpu_memory_bytes=40 * GB, peak_gpu_memory_bytes=8 * GB),
        _task("under", state="failed", gpu_memory_bytes=60 * GB, peak_gpu_memory_bytes=68 * GB),
        _task("fine", gpu_memory_bytes=30 * GB, peak_gpu_memory_bytes=22 * GB),
        _task("edge", gpu_memory_bytes=20 * GB, peak_gpu_memory_bytes=10 * GB),
        _task("unmeasured", gpu_memory_bytes=30 * GB),
        _task("whole-gpu", peak_gpu_memory_bytes=70 * GB),
    ]
    flags = memory_flags(rows)
    assert [(f.task, f.kind) for f in flags] == [("over", "over"), ("under", "under")]
    assert flags[0].suggested_bytes == 10 * GB  # 8GB * 1.2 -> 9.6 -> 10GB
    assert flags[1].suggested_bytes == 82 * GB
    assert "82GB" in flags[1].message
    assert [f.task for f in memory_flags(rows, ratio=1.5)] == ["over", "under", "edge"]
    with pytest.raises(ReportError):
        memory_flags(rows, ratio=1.0)


def test_task_table_orders_by_start_then_input() -> None:
    rows = [
        _task("late", start_s=50.0, end_s=60.0, metrics={"acc": 1.0}),
        _task("never", state="pending"),
        _task("early", start_s=10.0, end_s=15.5),
        _task("also-never", state="skipped"),
    ]
    table = task_table(rows)
    assert [r.name for r in table] == ["early", "late", "never", "also-never"]
    assert table[0].duration_s == 5.5
    assert table[2].duration_s is None


def test_run_summary_gpu_busy_uses_union_per_gpu() -> None:
    rows = [
        _task("a", start_s=0.0, end_s=50.0, gpus=(0,)),
        _task("b", start_s=25.0, end_s=75.0, gpus=(0,)),  # packed with a: union 75s
        _task("c", start_s=0.0, end_s=100.0, gpus=(1,)),
        _task("d", state="running", start_s=90.0, gpus=(1,)),
    ]
    data = ReportData("r", "s.yaml", gpus=(GpuInfo(0, "T4", 16 * GB), GpuInfo(1, "T4", 16 * GB)),
                      cpus=8, tasks=tuple(rows), started_at=0.0, ended_at=100.0)  # fmt: skip
    s = run_summary(data)
    assert s.wall_s == 100.0
    assert s.gpu_busy_pct == pytest.approx((75 + 100) / 200 * 100)
    assert s.mean_util_pct is None
    assert s.states == {"succeeded": 3, "running": 1}


def test_model_rejects_bad_rows() -> None:
    with pytest.raises(ReportError):
        TaskRow(name="x", state="exploded")
    with pytest.raises(ReportError):
        TaskRow(name="x", state="failed", start_s=10.0, end_s=5.0)
    with pytest.raises(ReportError):
        ReportData("r", "s", tasks=(TaskRow("x", "pending"), TaskRow("x", "failed")))
    data = ReportData("r", "s", gpus=[(0, "H100", 80 * GB)])  # type: ignore[arg-type]
    assert data.gpus == (GpuInfo(0, "H100", 80 * GB),)
