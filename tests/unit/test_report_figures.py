"""The report's figures and statistics without a browser: intervals over replicates only,
bootstrap where a t-interval leaves the metric's range, the timeline's colours and labels,
booked GPU memory stacked by task, planned vs actual, one packed plotly.js per page, and
Optuna's own sweep figures."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rota.lanes import Lane
from rota.report.figures import plan_vs_actual_figure, planned_tasks, ratio_text
from rota.report.html import render_html, report_figures
from rota.report.load import history_before
from rota.report.model import GpuInfo, GpuSample, ReportData, ReportError, TaskRow
from rota.report.page import figure_dict, figure_div, figure_written, page
from rota.report.results import results_by_group, results_figure
from rota.report.stats import bootstrap_ci, group_metrics, metric_bounds, summarize
from rota.report.timeline import (
    PALETTE,
    STATE_STYLE,
    fit_label,
    gantt_figure,
    gpu_memory_figure,
    group_colors,
)

GB = 2**30
T0 = 1_700_000_000.0


def _row(name: str, base: str, seed: int, acc: float, **kw: object) -> TaskRow:
    return TaskRow(name, "succeeded", 1, 0, start_s=T0, end_s=T0 + 10, base=base,
                   vars={"model": "a", "seed": str(seed)}, metrics={"acc": acc}, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------- statistics


def test_an_interval_leaving_the_metrics_range_becomes_a_bootstrap() -> None:
    values = [0.6, 0.99, 1.0]
    t = summarize(values)
    assert t.method == "t" and t.ci_high is not None and t.ci_high > 1.0  # the issue's [0.2758, 1.299]
    b = summarize(values, bounds=(0.0, 1.0))
    assert b.method == "bootstrap" and b.mean == t.mean and b.std == t.std
    assert b.ci_low is not None and b.ci_high is not None
    assert 0.6 <= b.ci_low < b.mean < b.ci_high <= 1.0
    assert summarize(values, bounds=(0.0, 1.0)) == b  # deterministic
    inside = summarize([0.87, 0.88, 0.86], bounds=(0.0, 1.0))
    assert inside.method == "t"  # a t-interval inside the range stays
    assert summarize([0.5]).method == ""


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=2, max_size=12))
def test_intervals_of_a_unit_metric_stay_in_its_range_and_hold_the_mean(values: list[float]) -> None:
    s = summarize(values, bounds=metric_bounds(values))
    assert s.ci_low is not None and s.ci_high is not None
    assert 0.0 <= s.ci_low <= s.mean <= s.ci_high <= 1.0


def test_bootstrap_interval_lies_within_the_values() -> None:
    lo, hi = bootstrap_ci([1.0, 2.0, 3.0, 10.0], 0.95)
    assert 1.0 <= lo < hi <= 10.0
    assert bootstrap_ci([4.0, 4.0], 0.95) == (4.0, 4.0)


@pytest.mark.parametrize(("values", "bounds"), [
    ([0.1, 0.9, 1.0], (0.0, 1.0)), ([0.0, 3.5], (0.0, None)), ([-1.0, 2.0], (None, None)), ([], (None, None)),
])  # fmt: skip
def test_metric_bounds(values: list[float], bounds: tuple[float | None, float | None]) -> None:
    assert metric_bounds(values) == bounds


def test_sweep_trials_and_other_groups_are_never_replicates() -> None:
    tasks = [
        _row("train-s1", "train", 1, 0.80), _row("train-s2", "train", 2, 0.82),
        _row("other-s1", "other", 1, 0.10), _row("other-s2", "other", 2, 0.12),
        _row("hpo-trial-0", "hpo", 0, 0.5, trial=0), _row("hpo-trial-1", "hpo", 1, 0.9, trial=1),
    ]  # fmt: skip
    groups = group_metrics(tasks, ["model"])
    assert [(g.base, g.summary.n, g.tasks) for g in groups] == [
        ("train", 2, ("train-s1", "train-s2")), ("other", 2, ("other-s1", "other-s2"))]
    # the metric lives in [0, 1] over the run: no interval may leave it
    assert all(0.0 <= (g.summary.ci_low or 0) and (g.summary.ci_high or 0) <= 1.0 for g in groups)


def test_results_figure_has_a_point_and_error_bar_per_configuration() -> None:
    tasks = [TaskRow(f"t-{m}-{s}", "succeeded", base="t", vars={"model": m, "seed": str(s)},
                     metrics={"acc": a, "loss": 1 - a})
             for m, accs in (("small", (0.80, 0.82, 0.81)), ("big", (0.90, 0.93, 0.91)))
             for s, a in enumerate(accs)]  # fmt: skip
    groups = results_by_group(group_metrics(tasks, ["model"]), ["model"])
    (mine, rows), = groups.values()
    assert mine == ["model"] and list(groups) == ["t"]
    fig = figure_dict(results_figure("t", mine, rows, tasks))
    means = [tr for tr in fig["data"] if tr.get("error_y")]
    assert len(means) == 2  # one per metric panel
    acc = next(tr for tr in means if tr["xaxis"] in ("x", None))
    small = next(g for g in rows if g.metric == "acc" and g.vars["model"] == "small")
    k = list(acc["y"]).index(pytest.approx(small.summary.mean))
    assert acc["error_y"]["array"][k] == pytest.approx(small.summary.ci_high - small.summary.mean)
    assert acc["error_y"]["arrayminus"][k] == pytest.approx(small.summary.mean - small.summary.ci_low)
    dots = [tr for tr in fig["data"] if not tr.get("error_y")]
    assert sum(len(tr["y"]) for tr in dots) == 12  # every replicate's value, both metrics
    assert fig["layout"]["xaxis"]["ticktext"] == ["small", "big"]  # the order the tasks give, not sorted as text


def test_a_group_of_one_task_gets_no_results_figure() -> None:
    assert results_by_group(group_metrics([_row("solo", "solo", 1, 0.5)], ["model"]), ["model"]) == {}


# --------------------------------------------------------------- timeline and memory


def test_fit_label() -> None:
    assert fit_label("train", 200) == "train"
    assert fit_label("a-rather-long-task-name", 80) == "a-rather-…"
    assert fit_label("a-rather-long-task-name", 30) == ""


def test_gantt_colours_groups_and_marks_states() -> None:
    lanes = [
        Lane("gpu0", (("train-1", 0.0, 500.0), ("train-2", 0.0, 400.0), ("x", 500.0, 501.0)),
             ("succeeded", "failed", "running"), ("train", "train", "eval")),
        Lane("cpu", (("prep", 0.0, 50.0),), ("cached",)),
    ]  # fmt: skip
    fig = figure_dict(gantt_figure(lanes))
    bars = {tr["name"]: tr for tr in fig["data"] if tr.get("legendgroup") == "groups"}
    assert list(bars) == ["train", "prep", "eval"]  # by first start, ties in lane order
    assert bars["train"]["marker"]["color"] == PALETTE[0]
    assert list(bars["train"]["marker"]["pattern"]["shape"]) == ["", STATE_STYLE["failed"][0]]
    assert list(bars["train"]["marker"]["line"]["color"]) == ["white", STATE_STYLE["failed"][1]]
    assert list(bars["train"]["y"]) == ["gpu0 · 2", "gpu0"]  # two at once on gpu0: a second row (shorter first)
    assert list(bars["eval"]["text"]) == [""]  # 1 s of 501 s: no room for a label
    assert "x" in bars["eval"]["hovertext"][0]  # ...but the hover names it
    states = [tr["name"] for tr in fig["data"] if tr.get("legendgroup") == "states"]
    assert states == ["succeeded", "failed", "cached", "running"]
    assert group_colors(["a", "b", "a"]) == {"a": PALETTE[0], "b": PALETTE[1]}


def _packed_run(samples: bool) -> ReportData:
    tasks = [
        TaskRow("a", "succeeded", start_s=T0, end_s=T0 + 100, gpus=(0,), gpu_memory_bytes=30 * GB, base="g"),
        TaskRow("b", "succeeded", start_s=T0 + 50, end_s=T0 + 150, gpus=(0,), gpu_memory_bytes=40 * GB, base="g"),
        TaskRow("whole", "succeeded", start_s=T0, end_s=T0 + 150, gpus=(1,), base="w"),
        TaskRow("cpu", "succeeded", start_s=T0, end_s=T0 + 20, base="c"),
    ]  # fmt: skip
    got = tuple(GpuSample(T0 + k, 0, 50.0, 25 * GB, 80 * GB) for k in range(0, 150, 10)) if samples else ()
    return ReportData("r", "s.yaml", (GpuInfo(0, "H100", 80 * GB), GpuInfo(1, "H100", 80 * GB)), 8,
                      tuple(tasks), got, T0, T0 + 150)  # fmt: skip


def test_gpu_memory_stacks_booked_memory_per_task_with_the_measured_line() -> None:
    fig = figure_dict(gpu_memory_figure(_packed_run(samples=True)))
    stacked = [tr for tr in fig["data"] if tr.get("stackgroup")]
    assert [tr["stackgroup"] for tr in stacked] == ["gpu0", "gpu0", "gpu1"]
    a, b, whole = stacked
    assert list(a["x"]) == list(b["x"]) == [0.0, 50.0, 100.0, 150.0]
    assert list(a["y"]) == [30.0, 30.0, 0.0, 0.0] and list(b["y"]) == [0.0, 40.0, 40.0, 0.0]
    assert list(whole["y"])[0] == 80.0  # a whole GPU books all of it
    assert a["line"]["shape"] == "hv" and a["fillcolor"] == b["fillcolor"]  # one group, one colour
    measured = [tr for tr in fig["data"] if tr["name"] == "measured (NVML)"]
    assert len(measured) == 1 and measured[0]["y"][0] == 25.0
    assert not [tr for tr in figure_dict(gpu_memory_figure(_packed_run(False)))["data"]
                if tr["name"] == "measured (NVML)"]  # fmt: skip


# --------------------------------------------------------------- planned vs actual


def test_planned_vs_actual_only_with_an_estimate_or_history() -> None:
    rows = [
        TaskRow("est", "succeeded", start_s=T0, end_s=T0 + 5, estimate_s=10.0, planned_start_s=0, planned_end_s=10),
        TaskRow("hist", "succeeded", start_s=T0, end_s=T0 + 5, planned_start_s=0, planned_end_s=4,
                duration_source="history"),
        TaskRow("guess", "succeeded", start_s=T0, end_s=T0 + 5, planned_start_s=0, planned_end_s=60,
                duration_source="default"),
        TaskRow("legacy", "succeeded", start_s=T0, end_s=T0 + 5, planned_start_s=0, planned_end_s=60),
    ]  # fmt: skip
    data = ReportData("r", "s", tasks=tuple(rows))
    assert [t.name for t in planned_tasks(data)] == ["est", "hist"]
    fig = figure_dict(plan_vs_actual_figure(data))
    assert list(fig["data"][0]["y"]) == ["est", "hist"]
    assert plan_vs_actual_figure(ReportData("r", "s", tasks=tuple(rows[2:]))) is None
    assert ratio_text(0.00123) == "0.0012x" and ratio_text(0.5) == "0.50x" and "0.00x" not in ratio_text(0.004)


def test_history_counts_only_attempts_before_the_run() -> None:
    attempts = [
        {"command": "a", "state": "succeeded", "started_at": 0.0, "ended_at": 10.0},
        {"command": "a", "state": "succeeded", "started_at": 20.0, "ended_at": 40.0},
        {"command": "a", "state": "failed", "started_at": 0.0, "ended_at": 1.0},
        {"command": "b", "state": "succeeded", "started_at": 100.0, "ended_at": 110.0},  # this run's own
    ]
    assert history_before(attempts, 50.0) == {"a": 15.0}
    assert history_before(attempts, None) == {}


# --------------------------------------------------------------- the page


def _git_code(commit: int, dirty: bool = False) -> dict[str, object]:
    """A git code record as the engine writes it (rota.engine.codever)."""
    diff = f"{commit + 7:x}" * 64 if dirty else None
    return {"kind": "git", "repo": "/work/repo", "commit": f"{commit + 10:x}" * 40, "dirty": dirty, "diff_sha256": diff,
            **({"diff_path": f"code/{diff}.diff"} if dirty else {})}


def _hundred_task_run() -> ReportData:
    tasks, samples = [], []
    for i in range(100):
        start = T0 + 60 * (i // 4)
        tasks.append(TaskRow(f"train-m{i % 5}-s{i // 5}", "failed" if i == 7 else "succeeded", 1, 0,
                             start_s=start, end_s=start + 55, gpus=(i % 4,), gpu_memory_bytes=20 * GB,
                             peak_gpu_memory_bytes=15 * GB, estimate_s=60.0, base=f"train-{i % 3}",
                             vars={"model": f"m{i % 5}", "seed": str(i // 5)},
                             metrics={"acc": 0.5 + 0.01 * (i % 7), "loss": 1.0 / (1 + i)},
                             code=_git_code(i % 2, dirty=i % 10 == 9)))  # fmt: skip
    for k in range(0, 25 * 60, 2):
        for g in range(4):
            samples.append(GpuSample(T0 + k, g, 60.0 + g, (10 + g) * GB, 80 * GB))
    return ReportData("big", "s.yaml", tuple(GpuInfo(g, "H100", 80 * GB) for g in range(4)), 32, tuple(tasks),
                      tuple(samples), T0, T0 + 25 * 60)  # fmt: skip


def test_a_100_task_report_is_one_page_under_5_mb_with_plotly_once() -> None:
    text = render_html(_hundred_task_run(), ["model"])
    assert len(text.encode()) < 5_000_000
    assert text.count('id="rota-plotly-gz"') == 1 and text.count("Plotly.newPlot") == 1
    ids = re.findall(r'<div class=rota-fig id="([^"]+)"', text)
    assert len(ids) == len(set(ids)) == len(re.findall(r'type="application/json" id="[^"]+-json"', text))
    assert {"fig-timeline", "fig-gpu-memory", "fig-gpu-util", "fig-planned-vs-actual"} <= set(ids)
    assert sum(i.startswith("fig-results-") for i in ids) == 3  # one per task group
    # every task group says which code its tasks ran; replicates over seeds that ran two commits warn
    assert text.count("<p class=note>code: ") == 3 + 3  # in the results and in the task tables
    head = text.split("<nav>", 1)[0]  # the first five warnings at the top, then how many more
    assert head.count("<div class=warn>") == 6 and "and 10 more groups of replicates ran different code" in head
    assert text.count("<div class=warn>") == 6 + 15  # each group's own in its results


def test_html_shows_each_groups_code_versions_and_warns_when_replicates_differ() -> None:
    clean, dirty = _git_code(0), _git_code(1, dirty=True)
    script = {"kind": "script", "path": "/x/<b>train.py", "sha256": "ab" * 32}
    tasks = [_row("t-1", "t-{seed}", 1, 0.8, code=clean), _row("t-2", "t-{seed}", 2, 0.9, code=clean),
             _row("t-3", "t-{seed}", 3, 0.7, code=dirty),
             _row("u-1", "u-{seed}", 1, 0.5, code=script), _row("u-2", "u-{seed}", 2, 0.6, code=script)]
    text = render_html(ReportData("r", "s.yaml", (), 2, tuple(tasks)), [])
    head = text.split("<nav>", 1)[0]  # the warning is visible before anything else
    assert head.count("<div class=warn>") == 1
    assert "replicates of t-{seed} ran different code: git:aaaaaaaaaaaa: t-1, t-2; " \
           "git:bbbbbbbbbbbb+888888888888: t-3" in head
    results = text.split("<h2 id=results>", 1)[1].split("<h2 id=timeline>", 1)[0]
    assert f'<code title="/work/repo">git {clean["commit"][:12]}</code> (2 tasks)' in results
    assert ("<code title=\"code/" + "8" * 64 + ".diff\">git bbbbbbbbbbbb <span class=dirty>dirty</span> "
            "(diff 888888888888)</code> (1 task)") in results
    assert results.count("<div class=warn>") == 1  # t-{seed}'s; u-{seed} ran one script
    assert "script &lt;b&gt;train.py abababababab</code> (2 tasks)" in results and "<b>train" not in text
    tables = text.split("<h2 id=tasks>", 1)[1]
    assert "<th>code</th>" in tables and "<code>git:bbbbbbbbbbbb+888888888888</code>" in tables
    # grouped by seed, no two replicates differ: no warning, the versions are still shown
    by_seed = render_html(ReportData("r", "s.yaml", (), 2, tuple(tasks)), ["seed"])
    assert "<div class=warn>" not in by_seed and "dirty</span>" in by_seed
    # without records, nothing about code
    bare = render_html(ReportData("r", "s.yaml", (), 2, tuple(_row(f"t-{i}", "t", i, 0.5) for i in range(3))), [])
    assert "code: " not in bare and "<th>code</th>" not in bare


def test_figure_json_cannot_close_its_script() -> None:
    div = figure_div({"data": [{"type": "bar", "name": "</script><script>alert(1)</script>"}], "layout": {}}, "f")
    assert "</script><script>alert" not in div
    body = re.search(r'<script type="application/json" id="f-json">(.*)</script>$', div)
    assert body is not None and json.loads(body.group(1))["data"][0]["name"].startswith("</script>")


def test_cdn_pages_link_plotly_instead_of_carrying_it() -> None:
    text = page("t", "<p>x</p>", plotlyjs="cdn")
    assert re.search(r'<script src="https://cdn\.plot\.ly/plotly-[0-9.]+\.min\.js">', text)
    assert 'id="rota-plotly-gz"' not in text and len(text) < 10_000
    with pytest.raises(ReportError, match="inline' or 'cdn"):
        page("t", "", plotlyjs="nope")  # type: ignore[arg-type]


def test_report_figures_are_named_for_files(tmp_path: Path) -> None:
    figs = report_figures(_hundred_task_run(), ["model"])
    assert list(figs) == ["results-train-0", "results-train-1", "results-train-2", "timeline", "gpu-memory",
                          "gpu-util", "planned-vs-actual"]  # fmt: skip
    as_json = figure_written(figs["timeline"], tmp_path / "timeline.json")
    assert json.loads(as_json.read_text())["data"][0]["type"] == "bar"
    as_page = figure_written(figs["timeline"], tmp_path / "timeline.html").read_text()
    assert as_page.count('id="rota-plotly-gz"') == 1 and 'id="figure"' in as_page


# --------------------------------------------------------------- sweeps


def test_sweep_figures_are_optunas_own() -> None:
    optuna = pytest.importorskip("optuna")
    from rota.report.sweep_figures import study_figures

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    study.set_user_attr("rota_metric", "auc")
    assert study_figures(study) == {}  # no complete trial: nothing to draw
    study.optimize(lambda t: -(t.suggest_float("lr", 0.0, 1.0) - 0.3) ** 2 + 0.1 * t.suggest_int("depth", 1, 4),
                   n_trials=8)  # fmt: skip
    figs = study_figures(study)
    assert list(figs) == ["history", "parallel", "importance"]
    history = figure_dict(figs["history"])
    assert any(len(tr.get("y", [])) == 8 for tr in history["data"])
    assert "parallel" in str(figure_dict(figs["parallel"])["layout"]["title"]).lower()
    importance = figure_dict(figs["importance"])["data"][0]
    assert sorted(importance["y"]) == ["depth", "lr"]
    assert math.isclose(sum(importance["x"]), 1.0, abs_tol=0.02)


def test_a_gpu_with_many_tasks_stacks_its_memory_per_group() -> None:
    tasks = tuple(TaskRow(f"t{i}", "succeeded", start_s=T0 + 10 * (i // 2), end_s=T0 + 10 * (i // 2) + 10,
                          gpus=(0,), gpu_memory_bytes=10 * GB, base=f"g{i % 2}") for i in range(70))  # fmt: skip
    data = ReportData("r", "s", (GpuInfo(0, "H100", 80 * GB),), 8, tasks, (), T0, T0 + 350)
    stacked = [tr for tr in figure_dict(gpu_memory_figure(data))["data"] if tr.get("stackgroup")]
    assert [tr["name"] for tr in stacked] == ["g0", "g1"]  # 70 tasks > MAX_STACKED_TASKS: one layer a group
    assert all(max(tr["y"]) == 10.0 and tr["y"][-1] == 0.0 for tr in stacked)  # one task of each at a time


def _lab(hex_color: str) -> tuple[float, float, float]:
    """CIE L*a*b* (D65) of an sRGB ``#rrggbb``."""
    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(int(hex_color[i:i + 2], 16) / 255) for i in (1, 3, 5))
    x, y, z = ((0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047, 0.2126 * r + 0.7152 * g + 0.0722 * b,
               (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883)

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116

    return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


def test_group_colours_are_told_apart_up_to_sixteen_groups() -> None:
    """experiment-suite has 13 task groups: the 12th and 13th were near-copies of the 1st and 8th."""
    import itertools

    from rota.report.timeline import PALETTE

    assert len(set(PALETTE)) == len(PALETTE) == 16
    close = [(a, b) for a, b in itertools.combinations(PALETTE, 2) if math.dist(_lab(a), _lab(b)) < 19]
    assert close == []
