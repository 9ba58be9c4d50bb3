"""The HTML report in a real headless Chromium: it must open offline and draw charts.

A realistic small run (4 GPUs, 13 tasks, packed GPUs, a 2-GPU job, a failure,
an interruption, GPU samples) is rendered to one HTML file, opened from disk by
Chromium with networking disabled, and the screenshot is decoded (zlib +
struct, no imaging library) to check that the Gantt bars are really drawn in
their group colours with the failed one outlined in red. Driven by Selenium
(Debian's chromedriver), the page must log no console error and draw every
figure. Skips only when Chromium is missing and ``CI`` is unset.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from rota.report.gantt import lanes_from_report
from rota.report.html import render_gantt_file, render_html
from rota.report.model import GpuInfo, GpuSample, Lane, ReportData, ReportError, TaskRow
from rota.report.timeline import PALETTE, STATE_STYLE, gantt_figure, run_group_colors
from tests.helpers import wait_for

GB = 2**30
T0 = 1_763_900_000.0
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def sample_run() -> ReportData:
    """Scenario 5 in miniature: seeds x models packed on 4 H100, a DDP job, a failure."""
    tasks = []
    small = {"42": 0.871, "123": 0.879, "456": 0.866}
    for i, (seed, acc) in enumerate(small.items()):  # two small runs share gpu0
        start = T0 + 60 + (1500 if i == 2 else 0)
        tasks.append(TaskRow(
            f"train[model=small,seed={seed}]", "succeeded", 1, 0, start_s=start,
            end_s=start + 1400 + 37 * i, gpus=(0,), cpus=4, gpu_memory_bytes=30 * GB,
            peak_gpu_memory_bytes=(22 + i) * GB, estimate_s=1500.0, base="train",
            vars={"model": "small", "seed": seed}, metrics={"acc": acc, "loss": 0.41 - 0.01 * i},
            planned_start_s=60.0, planned_end_s=1560.0))  # fmt: skip
    medium: dict[str, float | None] = {"42": 0.912, "123": None, "456": 0.918}
    for i, (seed, score) in enumerate(medium.items()):
        ok = score is not None
        start = T0 + 60 + (2300 if i == 2 else 0)
        tasks.append(TaskRow(
            f"train[model=medium,seed={seed}]", "succeeded" if ok else "failed", 1 if ok else 3,
            0 if ok else 1, "" if ok else "exit 1 after 3 attempts (CUDA out of memory)",
            start_s=start + 5 * i, end_s=start + (2100 if ok else 900), gpus=(1 if i != 1 else 3,),
            cpus=4, gpu_memory_bytes=60 * GB, peak_gpu_memory_bytes=(58 if ok else 68) * GB,
            estimate_s=2000.0, base="train", vars={"model": "medium", "seed": seed},
            metrics={"acc": score, "loss": 0.3} if score is not None else {},
            log_path=f"/runs/r1/logs/train-medium-{seed}.log",
            log_tail="" if ok else "epoch 3/10 step 1200 loss=0.31\nTraceback (most recent call last):\n"
            '  File "train.py", line 88\ntorch.OutOfMemoryError: CUDA out of memory <script>x</script>',
            planned_start_s=60.0, planned_end_s=2060.0))  # fmt: skip
    tasks += [
        TaskRow("prep", "cached", start_s=T0, end_s=T0 + 55, cpus=16, base="prep",
                planned_start_s=0.0, planned_end_s=60.0),
        TaskRow("features", "succeeded", 1, 0, start_s=T0 + 60, end_s=T0 + 1200, cpus=16,
                base="features", estimate_s=900.0),
        TaskRow("probe[layer=4]", "succeeded", 1, 0, start_s=T0 + 1200, end_s=T0 + 1900,
                gpus=(2,), cpus=2, gpu_memory_bytes=40 * GB, peak_gpu_memory_bytes=8 * GB,
                vars={"layer": "4"}, metrics={"acc": 0.7}, base="probe", estimate_s=500.0),
        TaskRow("xsum[gpus=2]", "succeeded", 2, 0, start_s=T0 + 3000, end_s=T0 + 5200,
                gpus=(2, 3), cpus=8, peak_gpu_memory_bytes=70 * GB, metrics={"rouge": 0.21},
                base="xsum", planned_start_s=3000.0, planned_end_s=4800.0),
        TaskRow("latency[bs=32]", "interrupted", 1, -15, "rota stopped (SIGTERM)",
                T0 + 4000, T0 + 4600, gpus=(0,), cpus=2, base="latency",
                log_tail="bs=32 warmup done\nreceived SIGTERM", estimate_s=900.0),
        TaskRow("aggregate", "pending", cpus=1, base="aggregate", estimate_s=30.0),
        TaskRow("ablation[size=large]", "skipped", reason="upstream failed", base="ablation"),
    ]  # fmt: skip
    samples = []
    for k in range(0, 5400, 30):
        for g in range(4):
            t = T0 + k
            busy = any(r.start_s and r.end_s and r.start_s <= t <= r.end_s and g in r.gpus
                       for r in tasks)  # fmt: skip
            util = 70 + 25 * math.sin(k / 300 + g) if busy else 0.0
            mem = int((20 + 30 * abs(math.sin(k / 900 + g))) * GB) if busy else 0
            samples.append(GpuSample(t, g, util, mem, 80 * GB))
    gpus = tuple(GpuInfo(i, "NVIDIA H100 80GB HBM3", 80 * GB) for i in range(4))
    return ReportData("r-20251123-1349", "experiments/suite.yaml", gpus, 64, tuple(tasks),
                      tuple(samples), T0, T0 + 5400)  # fmt: skip


# --------------------------------------------------------------- PNG + browser


def read_png(path: Path) -> tuple[int, int, list[bytes], int]:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG: (width, height, rows, bytes per pixel)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, hdr = 8, [], None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    assert hdr is not None
    w, h, depth, color, _, _, interlace = hdr
    assert depth == 8 and color in (2, 6) and interlace == 0, f"unsupported PNG {hdr}"
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(b"".join(idat)), w * bpp
    prev, rows = bytearray(stride), []
    for y in range(h):
        f, cur = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = cur[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if f == 1:
                cur[i] = (cur[i] + a) & 255
            elif f == 2:
                cur[i] = (cur[i] + b) & 255
            elif f == 3:
                cur[i] = (cur[i] + ((a + b) >> 1)) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(cur))
        prev = cur
    return w, h, rows, bpp


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def bar_rows(rows: list[bytes], bpp: int, color: tuple[int, int, int], min_run: int) -> int:
    """How many pixel rows hold a run of at least ``min_run`` pixels of exactly ``color``."""
    target, count = bytes(color), 0
    for row in rows:
        run = best = 0
        for x in range(0, len(row), bpp):
            run = run + 1 if row[x : x + 3] == target else 0
            best = max(best, run)
        count += best >= min_run
    return count


def browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI is set but no Chromium ({', '.join(BROWSERS)}) is installed")
    pytest.skip("Chromium is not installed (apt-get install -y chromium)")


def screenshot(page: Path, out: Path, tmp: Path, height: int = 2000) -> Path:
    """Chromium's screenshot of ``page``; a browser that hangs (seen once on a loaded 2-core
    machine: no exit in 120 s) is killed and started once more with a fresh profile."""
    for attempt in (1, 2):
        profile = tmp / f"profile-{out.stem}-{attempt}"
        profile.mkdir()
        cmd = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--hide-scrollbars", "--run-all-compositor-stages-before-draw",
               "--virtual-time-budget=10000", f"--user-data-dir={profile}",
               f"--screenshot={out}", f"--window-size=1400,{height}", page.resolve().as_uri()]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the browser and its renderer/GPU children
            _, err = proc.communicate()
            if attempt == 2:
                raise AssertionError(f"Chromium did not finish in 120 s, twice: {err[-2000:]}") from None
            continue
        assert out.exists(), f"no screenshot (rc {proc.returncode}): {err[-2000:]}"
        return out
    raise AssertionError("unreachable")


# --------------------------------------------------------------- tests


def test_report_opens_offline_in_chromium_and_draws_the_gantt(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(sample_run(), ["model"]), encoding="utf-8")
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\ssrc\s*=", text, re.I), "every script must be inline"
    assert not re.search(r"""<(link|img|iframe)[^>]*(href|src)\s*=\s*["']?https?://""", text, re.I)
    assert text.count("<script") >= 2 and "Plotly.newPlot" in text
    assert text.count('id="rota-plotly-gz"') == 1 and len(text) < 2_500_000  # plotly.js once, packed

    w, h, rows, bpp = read_png(screenshot(page, tmp_path / "report.png", tmp_path, height=3000))
    assert (w, h) == (1400, 3000)
    # Bars: wide solid runs of the first group's colour (train), over many pixel rows
    # (the timeline, and its booked memory stacked in the GPU memory chart).
    colors = run_group_colors(sample_run())
    assert bar_rows(rows, bpp, _rgb(colors["train"]), 150) >= 60
    assert bar_rows(rows, bpp, _rgb(colors["probe"]), 60) >= 8
    assert colors["train"] != colors["probe"]
    # The failed task's bar is outlined in red: horizontal red edges as long as the bar.
    assert bar_rows(rows, bpp, _rgb(STATE_STYLE["failed"][1]), 60) >= 2
    # The page is a chart, not a blank or error page: many distinct colours.
    colours = {row[x : x + 3] for row in rows[::4] for x in range(0, len(row), bpp * 4)}
    assert len(colours) > 800  # a page without plotly.js has ~400 (text only)


def drawn_figures(page: Path, tmp: Path) -> tuple[list[tuple[str, int, int]], list[dict[str, object]]]:
    """Open ``page`` in Chromium through Selenium and Debian's chromedriver (no browser
    download), wait until its loader says every figure is drawn, and return
    ``([(figure div id, svg count, drawn marks)], severe console messages)``."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    if driver_path is None:
        browser()  # fails under CI, skips elsewhere, when Chromium itself is missing
        pytest.skip("chromedriver is not installed (apt-get install -y chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser()
    profile = tmp / f"profile-selenium-{page.stem}"
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,2000",
                f"--user-data-dir={profile}"):  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.set_page_load_timeout(120)
        driver.get(page.resolve().as_uri())
        drawn = "return document.body.getAttribute('data-figures-drawn')"
        wait_for(lambda: driver.execute_script(drawn) == "1", timeout=90)
        ids = driver.execute_script(
            "return Array.from(document.querySelectorAll('div.rota-fig'), d => [d.id, "
            "d.querySelectorAll('svg.main-svg').length, "
            "d.querySelectorAll('.point, .bars path, .scatterlayer .trace, .parcoords-line-layers').length])"
        )
        logs = driver.get_log("browser")
    finally:
        driver.quit()
    return [tuple(i) for i in ids], [e for e in logs if e.get("level") == "SEVERE"]


def test_report_draws_every_figure_without_console_errors(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(sample_run(), ["model"]), encoding="utf-8")
    ids, errors = drawn_figures(page, tmp_path)
    names = [i for i, _, _ in ids]
    assert names == ["fig-results-train", "fig-timeline", "fig-gpu-memory", "fig-gpu-util", "fig-planned-vs-actual"]
    assert all(svgs >= 1 and marks >= 1 for _, svgs, marks in ids), ids
    assert not errors, errors


def test_report_escapes_names_and_notes_missing_samples(tmp_path: Path) -> None:
    run = sample_run()
    evil = TaskRow("<img src=x onerror=alert(1)>", "failed", 1, 1, "<b>bad</b>", T0, T0 + 10,
                   log_tail="</pre><script>alert(2)</script>")  # fmt: skip
    data = ReportData(run.run_id, run.spec_path, run.gpus, run.cpus, (*run.tasks, evil), (),
                      run.started_at, run.ended_at)  # fmt: skip
    text = render_html(data, ["model"])
    assert "<img src=x" not in text and "<script>alert(2)" not in text and "<b>bad" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "No GPU samples were recorded" in text
    empty = render_html(ReportData("r0", "s.yaml"), [])
    assert "No succeeded task reported metrics" in empty and "No task failed" in empty


def test_plan_gantt_html_file_renders_in_chromium(tmp_path: Path) -> None:
    plan = [
        Lane("gpu0", (("embed", 0.0, 3 * 3600.0), ("gat[cfg=1]", 3 * 3600.0, 4.5 * 3600))),
        Lane("gpu1", (("gat[cfg=2]", 3 * 3600.0, 4.5 * 3600),)),
        Lane("cpu", (("edges", 0.0, 900.0), ("knn", 0.0, 1200.0), ("bpr", 900.0, 3600.0))),
    ]
    out = render_gantt_file(plan, tmp_path / "plan.html")
    assert 1_000_000 < out.stat().st_size < 2_500_000  # plotly.js inline, once, packed
    w, h, rows, bpp = read_png(screenshot(out, tmp_path / "plan.png", tmp_path, height=600))
    assert bar_rows(rows, bpp, _rgb(PALETTE[0]), 200) >= 15  # "embed", the first group, 3 h long


def test_gantt_png_or_clear_error(tmp_path: Path) -> None:
    lanes = lanes_from_report(sample_run())
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        have_mpl = False
    else:
        have_mpl = True
    if have_mpl:
        out = render_gantt_file(lanes, tmp_path / "g.png")
        w, h, rows, bpp = read_png(out)
        train = next(tr.marker.color for tr in gantt_figure(lanes).data if tr.name == "train")  # as in the HTML
        assert w > 500 and bar_rows(rows, bpp, _rgb(train), 50) >= 5
    with pytest.raises(ReportError, match=r"\.html or \.png"):
        render_gantt_file(lanes, tmp_path / "g.svgz")
    with pytest.raises(ReportError, match="cannot write"):
        render_gantt_file(lanes, tmp_path / "missing-dir" / "g.html")


def test_missing_plotly_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['plotly'] = None\n"
        "from rota.report.html import render_html\n"
        "from rota.report.model import ReportData\n"
        "from rota.errors import RotaError\n"
        "try:\n    render_html(ReportData('r', 's'), [])\n"
        "except RotaError as e:\n    print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install 'rota[report]'" in proc.stdout, proc.stderr
