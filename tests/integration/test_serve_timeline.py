"""rota serve's timeline: rows per GPU in index order, and tasks packed on one GPU (by
``gpu_memory``) each in a row of their own (``gpu 0 · 2``), as the report's timeline draws them.

Before, a lane was a plotly category in order of first appearance (``gpu 2`` above ``gpu 0``
when gpu 2's task started first) and tasks sharing a GPU were drawn over each other in one row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rota.serve import views
from tests.helpers import rota, wait_for, write_spec
from tests.integration.test_serve import Served, browser, served  # noqa: F401 - fixtures


def _task(name: str, start: float, end: float, gpus: list[int]) -> dict[str, Any]:
    return {"name": name, "state": "succeeded", "group": name, "started_at": start, "ended_at": end, "gpus": gpus}


def test_timeline_rows_are_in_gpu_order_and_packed_tasks_never_overlap() -> None:
    tasks = [_task("late-cpu", 100.0, 105.0, []), _task("on-10", 100.0, 101.0, [10]),
             _task("on-2", 100.0, 104.0, [2]), _task("beside", 101.0, 103.0, [2]),
             _task("third", 102.0, 103.5, [2]), _task("after", 104.0, 106.0, [2]), _task("on-0", 103.0, 104.0, [0])]
    tl = views.timeline(tasks, now=110.0)
    assert tl["rows"] == ["gpu 0", "gpu 2", "gpu 2 · 2", "gpu 2 · 3", "gpu 10", "cpu"]
    row = {i["name"]: i["row"] for i in tl["items"]}
    assert row == {"late-cpu": "cpu", "on-10": "gpu 10", "on-2": "gpu 2", "beside": "gpu 2 · 2",
                   "third": "gpu 2 · 3", "after": "gpu 2", "on-0": "gpu 0"}
    assert all(i["lane"] == i["row"].split(" · ")[0] for i in tl["items"])  # the GPU stays in "lane"
    for r in tl["rows"]:
        bars = sorted((i["start_s"], i["end_s"]) for i in tl["items"] if i["row"] == r)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(bars, bars[1:], strict=False))
    assert views.timeline([], now=1.0)["rows"] == []


PACKED = """
tasks:
  - name: then-{i}
    matrix: {i: [1, 2]}
    needs: [packed-1]
    command: "true"
    gpus: 1
  - name: packed-{i}
    matrix: {i: [1, 2, 3]}
    command: "sleep 1"
    gpus: 1
    gpu_memory: 20GB
"""


def test_the_page_draws_packed_tasks_in_rows_of_their_own(tmp_path: Path, browser: Any,  # noqa: F811
                                                          served: list[Served]) -> None:  # noqa: F811
    spec = write_spec(tmp_path, PACKED)
    rota("run", spec, "--gpus", "1x80GB", "--cpus", "4", "--plain", check=True)
    s = Served(spec)
    served.append(s)
    browser.get(s.url)
    drawn = ("const g = document.getElementById('timeline');"
             "return g && g.data ? [g.layout.yaxis.categoryarray, g.data.flatMap(t => t.y)] : null;")
    wait_for(lambda: browser.execute_script(drawn) and browser.execute_script(drawn)[1], timeout=60)
    rows, ys = browser.execute_script(drawn)
    assert rows == ["gpu 0", "gpu 0 · 2", "gpu 0 · 3"]
    names = browser.execute_script("return document.getElementById('timeline').data.map(t => t.name)")
    assert names == ["packed-{i}", "then-{i}"]  # the legend by first start, not by the table's order
    assert sorted(ys[:3]) == rows and set(ys[3:]) == {"gpu 0"}  # the three ran at once: a row each

    # One colour per group on the whole page: the timeline's and the report's memory figure's.
    colors = ("const f = document.getElementById('fig-gpu-memory'), t = document.getElementById('timeline');"
              "if (!f || !f.data || !t || !t.data) return null;"
              "return [Object.fromEntries(t.data.map(x => [x.name, x.marker.color])),"
              "        Object.fromEntries(f.data.filter(x => x.fillcolor).map(x => [x.name, x.fillcolor]))];")
    wait_for(lambda: browser.execute_script(colors) is not None, timeout=60)
    on_timeline, on_figure = browser.execute_script(colors)
    assert set(on_timeline) == set(on_figure) == {"packed-{i}", "then-{i}"}
    assert on_timeline == on_figure and len(set(on_timeline.values())) == 2
    browser.save_screenshot(str(tmp_path / "serve-timeline.png"))
