"""rota serve's pure views (rota.serve.views): the table's filter, search and pages, the timeline's
cut to the tasks started last, GPU series thinned, held and queued tasks, the ETA from forecasts."""

from __future__ import annotations

from typing import Any

from rota.serve import views


def _task(name: str, state: str = "pending", **kw: Any) -> dict[str, Any]:
    return {"name": name, "state": state, "group": kw.pop("group", name.split("-")[0]), "reason": "", **kw}


def test_task_page_filters_searches_and_pages() -> None:
    tasks = [_task(f"a-{i}", "succeeded") for i in range(250)] + [
        _task("b-0", "running", queued=True, reason="queued in slurm"), _task("b-1", "running"),
        _task("b-2", "pending", held=True), _task("b-3", "failed", reason="exit 3: CUDA out of memory")]
    page = views.task_page(tasks, None, "", 100, 100)
    assert page["matching"] == 254 and [t["name"] for t in page["tasks"]][:2] == ["a-100", "a-101"]
    assert len(page["tasks"]) == 100
    assert [t["name"] for t in views.task_page(tasks, {"queued"}, "", 0, 100)["tasks"]] == ["b-0"]
    assert [t["name"] for t in views.task_page(tasks, {"running"}, "", 0, 100)["tasks"]] == ["b-1"]
    assert [t["name"] for t in views.task_page(tasks, {"held"}, "", 0, 100)["tasks"]] == ["b-2"]
    assert views.task_page(tasks, {"pending"}, "", 0, 100)["matching"] == 0
    assert [t["name"] for t in views.task_page(tasks, None, "CUDA", 0, 100)["tasks"]] == ["b-3"]  # reason
    assert views.task_page(tasks, None, "A-", 0, 100)["matching"] == 250  # case-insensitive name
    assert len(views.task_page(tasks * 2, None, "", 0, 10_000)["tasks"]) == views.PAGE_MAX  # 508 tasks


def test_timeline_draws_the_tasks_started_last_on_their_gpus() -> None:
    tasks = [_task(f"t-{i}", "succeeded", started_at=100.0 + i, ended_at=101.0 + i, gpus=[i % 2])
             for i in range(10)]
    tasks += [_task("two", "running", started_at=120.0, gpus=[0, 1]), _task("cpu", "running", started_at=121.0),
              _task("waits", "pending"), _task("q", "running", queued=True, started_at=None)]
    tl = views.timeline(tasks, now=130.0, limit=3)
    assert tl["origin_s"] == 100.0 and tl["started"] == 12 and tl["shown"] == 3
    assert [(i["name"], i["lane"], i["start_s"], i["end_s"]) for i in tl["items"]] == [
        ("t-9", "gpu 1", 9.0, 10.0), ("two", "gpu 0", 20.0, 30.0), ("two", "gpu 1", 20.0, 30.0),
        ("cpu", "cpu", 21.0, 30.0)]
    assert views.timeline([_task("x")], now=1.0)["items"] == []


def test_gpu_series_are_per_gpu_and_thinned_keeping_the_last() -> None:
    samples = [(float(t), g, 50.0, 2**30 * g, 80 * 2**30) for t in range(1000) for g in (0, 1)]
    series = views.gpu_series(samples, max_points=100)
    assert [s["gpu"] for s in series] == [0, 1]
    assert len(series[0]["t"]) == 100 and series[0]["t"][-1] == 999.0 and series[1]["used_gb"][0] == 1.0
    assert series[0]["total_gb"] == 80.0
    assert views.gpu_series([(1.0, 0, None, None, None)])[0]["util_pct"] == [None]


def test_eta_from_the_controllers_forecast_of_what_is_left() -> None:
    tasks = [_task("a", "succeeded", predicted_end_s=900.0), _task("b", "running", predicted_end_s=1030.0),
             _task("c", "pending", predicted_end_s=1100.0)]
    assert views.eta_from_predictions(tasks, now=1000.0) == 100.0
    assert views.eta_from_predictions([_task("c", "pending")], now=1000.0) is None
    assert views.running_by_gpu([_task("b", "running", gpus=[0, 1]), _task("q", "running", queued=True, gpus=[0])]) \
        == {"0": ["b"], "1": ["b"]}
