"""`rota plan` obeys every limit `rota run` obeys: the plan's most tasks at once per group
equals what a real run of the same spec shows (`rota status --json` start/end times).

Limits covered: a sweep's ``parallel:`` (two sweeps, 2 and 1), a ``devices:`` pool
packed by ``gpu_memory`` (declared GPUs), RAM (``memory:`` against ``--memory``), and
the machine's CPUs; and `rota plan` refuses what `rota run` refuses (exit 2, same line).
"""

from __future__ import annotations

import json

from tests.helpers import rota, status, write_spec

SPEC = """
defaults: {estimate: 1s}
tasks:
  - name: s
    command: 'sleep 0.6; echo "ROTA_METRIC loss={x}"'
    sweep:
      trials: 6
      metric: loss
      parallel: 2
      seed: 1
      params: {x: {type: float, low: 0, high: 1}}
  - name: q
    command: 'sleep 0.6; echo "ROTA_METRIC loss={x}"'
    sweep:
      trials: 3
      metric: loss
      parallel: 1
      seed: 2
      params: {x: {type: float, low: 0, high: 1}}
  - name: pool-{i}
    command: sleep 0.6
    matrix: {i: [1, 2, 3, 4]}
    gpus: 1
    devices: [0]
    gpu_memory: 8GB
  - name: wide-{i}
    command: sleep 0.6
    matrix: {i: [1, 2, 3, 4]}
    memory: 6GB
"""
MACHINE = ("--gpus", "2x16GB", "--cpus", "8", "--memory", "13GB")
GROUPS = {"s-trial-": 2, "q-trial-": 1, "pool-": 2, "wide-": 2}


def most_at_once(spans: list[tuple[float, float]]) -> int:
    ev = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])  # an end before a start at one instant
    most = now = 0
    for _, d in ev:
        now += d
        most = max(most, now)
    return most


def test_plan_concurrency_per_group_matches_a_real_run(tmp_path):
    spec = write_spec(tmp_path, SPEC)
    planned = json.loads(rota("plan", spec, *MACHINE, "--json", check=True).stdout)
    run = rota("run", spec, *MACHINE, "--plain", timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    tasks = status(tmp_path / ".rota")["tasks"]
    assert len(tasks) == 6 + 3 + 4 + 4 and all(t["state"] == "succeeded" for t in tasks)
    for prefix, want in GROUPS.items():
        plan_spans = [(t["start_s"], t["end_s"]) for t in planned["tasks"] if t["name"].startswith(prefix)]
        real_spans = [(t["started_at"], t["ended_at"]) for t in tasks if t["name"].startswith(prefix)]
        assert most_at_once(plan_spans) == most_at_once(real_spans) == want, prefix
    # Trials run one wave per `parallel` slots: 3 waves of s, 3 of q (1 s each as planned).
    assert planned["makespan_s"] == 3.0 and planned["lower_bound"]["parallel_s"] == 3.0


def test_plan_refuses_what_run_refuses_with_the_same_line(tmp_path):
    spec = write_spec(tmp_path, """
    tasks:
      - {name: features, command: 'true', cpus: 16, estimate: 1m}
    """)
    planned = rota("plan", spec, "--gpus", "none", "--cpus", "4")
    ran = rota("run", spec, "--gpus", "none", "--cpus", "4", "--plain")
    assert planned.returncode == ran.returncode == 2
    line = planned.stderr.strip()
    assert line == ran.stderr.strip() and len(line.splitlines()) == 1 and planned.stdout == ""
    assert line.startswith("rota: error: ") and "features" in line and "cpus" in line
    assert "--cpus 16" in line and "lower the task's 'cpus:'" in line  # the fix, not only the fault
    assert not (tmp_path / ".rota").exists()
    # A machine named with --machine is hypothetical: compared, not refused.
    spec2 = write_spec(tmp_path / "m", """
    machines:
      small: {cpus: 4}
    tasks:
      - {name: features, command: 'true', cpus: 16, estimate: 1m}
    """)
    out = rota("plan", spec2, "--machine", "small", "--json", check=True)
    assert json.loads(out.stdout)["unschedulable"][0]["task"] == "features"
