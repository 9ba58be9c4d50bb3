"""The plan obeys the run's concurrency caps (a sweep's ``parallel:``) as well as the machine.

Real specs (``rota.spec.load.load_spec``) expanded into sweep slots, simulated with
rota's policy; the integration twin (tests/integration/test_plan_limits.py) compares
with a real run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rota.core.resources import Gpu, Machine
from rota.plan.compare import MachineOption, plan
from rota.plan.estimates import resolve_durations
from rota.plan.limits import Cap, concurrency_caps
from rota.plan.simulate import simulate
from rota.spec.load import load_spec
from tests.helpers import write_spec

GB = 2**30


def max_running(slots, names=None) -> int:
    """The most slots (of ``names``, default all) that overlap at any instant (ends before starts)."""
    ev = sorted((t, d) for s in slots if names is None or s.name in names for t, d in ((s.start_s, 1), (s.end_s, -1)))
    most = now = 0
    for _, d in ev:
        now += d
        most = max(most, now)
    return most


def sweep_spec(tmp: Path, trials: int, parallel: int | None) -> str:
    par = f"\n          parallel: {parallel}" if parallel is not None else ""
    return str(write_spec(tmp, f"""
    tasks:
      - name: s
        command: echo {{x}}
        estimate: 10s
        sweep:
          trials: {trials}
          metric: loss{par}
          params:
            x: {{type: float, low: 0, high: 1}}
      - {{name: other, command: 'true', estimate: 10s}}
    """))


def test_sweep_parallel_one_runs_trials_one_at_a_time(tmp_path):
    """The issue's case: 6 trials with parallel: 1 on a machine with room for all of them."""
    spec = load_spec(sweep_spec(tmp_path, 6, 1))
    m = Machine((), 8, 16 * GB)
    p = plan(spec.tasks, MachineOption("m", m), resolve_durations(spec.tasks, {}))
    trials = {t.name for t in spec.tasks if t.sweep is not None}
    assert max_running(p.schedule.slots, trials) == 1
    assert p.makespan_s == pytest.approx(60.0)  # 6 x 10 s, not 10 s
    assert p.bound.parallel_s == pytest.approx(60.0) and p.bound.binding == "sweep s parallel"
    assert p.efficiency == pytest.approx(1.0)
    # Trials start in slot order, as the engine's may_launch picks the lowest numbers first.
    order = [s.name for s in sorted(p.schedule.slots, key=lambda s: s.start_s) if s.name in trials]
    assert order == [f"s-trial-{i}" for i in range(6)]
    # The uncapped task runs beside them at once.
    assert {s.name: s.start_s for s in p.schedule.slots}["other"] == 0.0


def test_without_parallel_trials_fill_the_machine(tmp_path):
    spec = load_spec(sweep_spec(tmp_path, 6, None))
    p = plan(spec.tasks, MachineOption("m", Machine((), 8, 16 * GB)), resolve_durations(spec.tasks, {}))
    assert p.makespan_s == pytest.approx(10.0) and concurrency_caps(spec.tasks) == {}


def test_hpo_example_plans_catboost_one_at_a_time():
    spec = load_spec(str(Path(__file__).parents[2] / "examples" / "hpo-gbdt" / "rota.yaml"))
    m = Machine((Gpu(0, 16 * GB), Gpu(1, 16 * GB)), 16, 64 * GB)
    p = plan(spec.tasks, MachineOption("m", m), resolve_durations(spec.tasks, {}))
    for group in ("xgb", "lgbm", "catboost"):
        names = {t.name for t in spec.tasks if t.group == group}
        want = next(t.sweep.parallel for t in spec.tasks if t.group == group and t.sweep is not None)
        assert max_running(p.schedule.slots, names) == want, group


@settings(max_examples=60, deadline=None)
@given(
    durs=st.lists(st.integers(1, 50), min_size=1, max_size=14),
    limit=st.integers(1, 4),
    cpus=st.integers(1, 6),
)
def test_caps_never_exceeded_and_every_task_placed(durs, limit, cpus):
    """Property: whatever the durations, no instant has more than ``limit`` capped tasks,
    the machine is never oversubscribed, and every task runs."""
    from rota.core.resources import Request
    from rota.spec.model import Task

    tasks = [Task(f"t{i}", "x", (), Request(cpus=1), float(d)) for i, d in enumerate(durs)]
    caps = {t.name: Cap("g", limit, i) for i, t in enumerate(tasks) if i % 2 == 0}
    s = simulate(tasks, Machine((), cpus, GB), {t.name: t.estimate_s for t in tasks}, caps=caps)
    assert len(s.slots) == len(tasks)
    assert max_running(s.slots, set(caps)) <= limit
    assert max_running(s.slots) <= cpus
