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
