"""`rota report --html`'s "median actual / planned" compares only tasks with an estimate
(a task without one was planned at the 60 s default, which says nothing about the plan),
and a ratio far below 1 is written with its digits, never `0.00x`."""

from __future__ import annotations

import re

from tests.helpers import rota, write_spec


def test_ratio_counts_only_tasks_with_an_estimate(tmp_path):
    spec = write_spec(tmp_path, """
    tasks:
      - {name: guessed, command: 'sleep 0.1'}
      - {name: estimated, command: 'sleep 0.5', estimate: 1s}
    """)
    run = rota("run", spec, "--gpus", "none", "--cpus", "2", "--plain")
    assert run.returncode == 0, run.stdout + run.stderr
    html = tmp_path / "r.html"
    rota("report", spec, "--html", html, check=True)
    m = re.search(r"median actual / planned: ([0-9.e-]+)x over (\d+) tasks", html.read_text())
    assert m is not None and m.group(2) == "1"
    assert 0.4 <= float(m.group(1)) <= 0.9


def test_a_tiny_ratio_keeps_its_digits(tmp_path):
    spec = write_spec(tmp_path, """
    tasks:
      - {name: overestimated, command: 'sleep 0.2', estimate: 10m}
    """)
    assert rota("run", spec, "--gpus", "none", "--cpus", "1", "--plain").returncode == 0
    html = tmp_path / "r.html"
    rota("report", spec, "--html", html, check=True)
    text = html.read_text()
    m = re.search(r"median actual / planned: ([0-9.e-]+)x", text)
    assert m is not None and "0.00x" not in text and 0 < float(m.group(1)) < 0.01


def test_durations_far_from_their_plan_go_on_log_axes(tmp_path):
    """A time-scaled example (a 4 h estimate run in seconds) drew every actual duration on 0 of a
    linear axis in hours: both axes are logarithmic where durations span more than 30x."""
    import json

    spec = write_spec(tmp_path, """
    tasks:
      - {name: 'long-{i}', matrix: {i: [1, 2]}, command: 'sleep 0.2', estimate: 4h}
      - {name: short, command: 'sleep 0.2', estimate: 1m}
    """)
    assert rota("run", spec, "--gpus", "none", "--cpus", "2", "--plain").returncode == 0
    figs = tmp_path / "figs"
    rota("report", spec, "--figures", figs, "--figure-format", "json", check=True)
    fig = json.loads((figs / "planned-vs-actual.json").read_text())
    assert fig["layout"]["xaxis"]["type"] == "log"
    bars = {tr["name"]: tr["x"] for tr in fig["data"]}
    assert min(bars["actual"]) > 0 and max(bars["planned"]) == 4.0  # hours
