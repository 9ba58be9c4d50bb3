"""The planner: hand-computed schedules, machine comparison, bounds, and properties.

The property tests check the simulator's schedules directly (no oversubscription
at any instant, dependencies respected, every task placed) and check that its
windowed policy calls give exactly the placements of a reference simulator
that hands the policy every ready task each round, as the engine does.
"""

from __future__ import annotations

import heapq
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rota.core.policy import Candidate, Running, schedule, sort_key
from rota.core.resources import Gpu, Machine, Request, fits_machine
from rota.plan.bounds import Prices, cost, lower_bound, utilization
from rota.plan.compare import machine_options, option_from_spec, plan
from rota.plan.estimates import resolve_durations
from rota.plan.simulate import REMAINING_FLOOR_S, remaining_ranks_s, simulate
from rota.spec.model import MachineSpec, Task

GB = 2**30


def task(name, *, needs=(), gpus=0, gpu_gb=None, cpus=1, mem_gb=0, est=None, prio=0, cmd=None):
    req = Request(gpus=gpus, gpu_memory_bytes=None if gpu_gb is None else gpu_gb * GB, cpus=cpus,
                  memory_bytes=mem_gb * GB)
    return Task(name, cmd or f"run {name}", tuple(needs), req, est, priority=prio)


def mach(gpu_gb=(80,), cpus=4, mem_gb=64):
    return Machine(tuple(Gpu(i, g * GB) for i, g in enumerate(gpu_gb)), cpus, mem_gb * GB)


def durations(tasks):
    return {t.name: t.estimate_s for t in tasks}


# ------------------------------------------------------------ hand-computed


DAG = [
    task("prep", est=10),
    task("train1", needs=["prep"], gpus=1, est=100),
    task("train2", needs=["train1"], gpus=1, est=50),
    task("cpuA", cpus=2, est=30),
    task("cpuB", cpus=2, est=30),
    task("cpuC", cpus=2, est=30),
    task("eval", needs=["train2"], est=5),
]


def test_gpu_chain_with_parallel_cpu_steps_matches_hand_schedule():
    """1 GPU, 4 CPUs. By rank: prep (165 s to the end) first, then cpuA beside it;
    cpuB waits for 2 CPUs (t=30), cpuC after it (t=60); the GPU chain runs 10-160."""
    s = simulate(DAG, mach(cpus=4), durations(DAG))
    got = {x.name: (x.start_s, x.end_s, x.gpus) for x in s.slots}
    assert got == {
        "prep": (0, 10, ()), "cpuA": (0, 30, ()), "train1": (10, 110, (0,)), "cpuB": (30, 60, ()),
        "cpuC": (60, 90, ()), "train2": (110, 160, (0,)), "eval": (160, 165, ()),
    }
    assert s.makespan_s == 165 and s.complete


def test_bounds_sequential_cost_and_utilisation_by_hand():
    o = machine_options([], {}, mach(cpus=4))[0]
    p = plan(DAG, o, resolve_durations(DAG, {}))
    assert p.sequential_s == 10 + 100 + 50 + 90 + 5
    assert p.critical_path == ("prep", "train1", "train2", "eval")
    assert p.bound.critical_path_s == 165 and p.bound.gpu_s == 150
    assert p.bound.cpu_s == pytest.approx((10 + 100 + 50 + 3 * 60 + 5) / 4)
    assert p.bound.value_s == 165 and p.efficiency == 1.0
    assert p.utilization.gpu_busy[0] == pytest.approx(150 / 165)
    assert p.utilization.cpus == pytest.approx(345 / (4 * 165))
    c = cost(p.schedule, Prices(per_gpu_hour=3.6, per_cpu_hour=0.36, per_hour=36))
    assert c.gpu_hours == pytest.approx(150 / 3600) and c.gpu_usd == pytest.approx(0.15)
    assert c.cpu_usd == pytest.approx(345 / 3600 * 0.36)
    assert c.machine_usd == pytest.approx(1.65) and c.total_usd == pytest.approx(0.15 + 0.0345 + 1.65)


def test_packing_small_tasks_and_booked_gpu_hours():
    ts = [task(f"s{i}", gpus=1, gpu_gb=20, est=60) for i in range(8)]
    s = simulate(ts, mach((80,), cpus=8), durations(ts))
    assert s.makespan_s == 120  # four at a time on one 80GB GPU
    assert cost(s, Prices(per_gpu_hour=1.0)).gpu_hours == pytest.approx(120 / 3600)  # packed: not 4x
    assert utilization(s).gpu_memory[0] == pytest.approx(1.0)
    lb = lower_bound(s, {t.name: t.request for t in ts}, 60)
    assert lb.gpu_s == pytest.approx(120)


def test_a_task_nothing_can_share_a_gpu_with_counts_as_a_whole_gpu_in_the_bound():
    """70GB on 80GB leaves 10GB; the other task books 20GB: neither can ever share the GPU."""
    ts = [task("big", gpus=1, gpu_gb=70, est=100), task("small", gpus=1, gpu_gb=20, est=100)]
    o = machine_options([], {}, mach((80,), cpus=8))[0]
    p = plan(ts, o, resolve_durations(ts, {}))
    assert p.makespan_s == 200
    assert p.bound.gpu_s == pytest.approx(200)  # and small leaves 60GB < 70GB: both block the GPU
    ts2 = [task("big", gpus=1, gpu_gb=60, est=100), task("small", gpus=1, gpu_gb=20, est=100)]
    p2 = plan(ts2, o, resolve_durations(ts2, {}))
    assert p2.makespan_s == 100 and p2.bound.gpu_s == pytest.approx(100)


def test_priority_beats_critical_path():
    ts = [task("long", gpus=1, est=100), task("urgent", gpus=1, est=10, prio=5)]
    s = simulate(ts, mach((80,)), durations(ts))
    assert [x.name for x in s.slots] == ["urgent", "long"]


def test_unschedulable_reported_and_dependents_blocked():
    ts = [task("big", gpus=2, est=10), task("after", needs=["big"], est=5), task("ok", est=7)]
    s = simulate(ts, mach((80,)), durations(ts))
    assert [x.name for x in s.slots] == ["ok"]
    assert s.unschedulable[0][0] == "big" and "2 GPUs" in s.unschedulable[0][1]
    assert s.blocked == (("after", "big"),)
    assert not s.complete and s.makespan_s == 7


def test_ranks_are_longest_remaining_paths():
    assert remaining_ranks_s(DAG, durations(DAG)) == [165, 155, 55, 30, 30, 30, 5]


# ----------------------------------------------------------- machines, estimates


def test_t4_vs_l4_half_the_time_same_gpu_cost():
    """Scenario 1: the L4 is 2x faster at double the price."""
    ts = [task("img-embed", gpus=1, est=7.5 * 3600), task("gat", needs=["img-embed"], gpus=1, est=1.5 * 3600)]
    base = mach((16,), cpus=8)
    t4 = option_from_spec("t4", MachineSpec(gpus="1x16GB", price_per_gpu_hour=0.35), base)
    l4 = option_from_spec("l4", MachineSpec(gpus="1x24GB", price_per_gpu_hour=0.70, speed=2.0), base)
    d = resolve_durations(ts, {})
    pt4, pl4 = plan(ts, t4, d), plan(ts, l4, d)
    assert pt4.makespan_s == 9 * 3600 and pl4.makespan_s == 4.5 * 3600
    assert pl4.cost.gpu_usd == pytest.approx(pt4.cost.gpu_usd) == pytest.approx(9 * 0.35)
    assert pt4.option.machine.cpus == 8  # not given in the spec: from the base machine


def test_task_too_big_for_one_machine_is_reported_on_that_machine_only():
    ts = [task("needs-20gb", gpus=1, gpu_gb=20, est=60)]
    base = mach((16,))
    small = plan(ts, option_from_spec("t4", MachineSpec(gpus="1x16GB"), base), resolve_durations(ts, {}))
    big = plan(ts, option_from_spec("l4", MachineSpec(gpus="1x24GB"), base), resolve_durations(ts, {}))
    assert not small.schedule.complete and "20GB" in small.schedule.unschedulable[0][1]
    assert big.schedule.complete and big.makespan_s == 60


def test_durations_sources():
    ts = [task("a", est=10, cmd="A"), task("b", cmd="B"), task("c", cmd="C")]
    d = resolve_durations(ts, {"A": 99.0, "B": 42.0})
    assert d.seconds == {"a": 10, "b": 42.0, "c": 60.0}
    assert d.source == {"a": "estimate", "b": "history", "c": "default"} and d.defaulted() == ["c"]
    d2 = resolve_durations(ts, {"A": 99.0}, use_history=True, default_s=5)
    assert d2.seconds == {"a": 99.0, "b": 5, "c": 5} and d2.counts() == {"estimate": 0, "history": 1, "default": 2}


def test_20k_task_matrix_on_8_gpus_list_schedule():
    """Scale is measured by bench/bench_plan.py; this checks the result on a big flat matrix."""
    ts = [task(f"j{i}", gpus=1, est=60 + (i * 7919) % 541) for i in range(20_000)]
    s = simulate(ts, mach((80,) * 8, cpus=64, mem_gb=512), durations(ts))
    assert len(s.slots) == 20_000
    work = sum(t.estimate_s for t in ts)
    assert work / 8 <= s.makespan_s <= work / 8 + 600  # list scheduling: within one task of the bound


# ------------------------------------------------------------------ properties


def reference_simulate(tasks, machine, dur):
    """The engine's loop on a virtual clock: every ready task to the policy, sorted, each round."""
    ranks = remaining_ranks_s(tasks, dur)
    cand = {t.name: Candidate(t.name, t.request, t.priority, ranks[i], dur[t.name], i) for i, t in enumerate(tasks)}
    users = {t.name: [] for t in tasks}
    for t in tasks:
        for n in t.needs:
            users[n].append(t.name)
    dead = {t.name for t in tasks if fits_machine(t.request, machine) is not None}
    stack = list(dead)
    while stack:
        for u in users[stack.pop()]:
            if u not in dead:
                dead.add(u)
                stack.append(u)
    unmet = {t.name: len(t.needs) for t in tasks}
    ready = {t.name for t in tasks if not t.needs and t.name not in dead}
    running, ends, out, now = {}, [], {}, 0.0
    while True:
        cands = sorted((cand[n] for n in ready), key=sort_key)
        run = [Running(p, max(e - now, REMAINING_FLOOR_S)) for p, e in running.values()]
        for p in schedule(cands, machine, run, presorted=True):
            ready.discard(p.task)
            e = now + dur[p.task]
            running[p.task] = (p, e)
            heapq.heappush(ends, (e, p.task))
            out[p.task] = (now, e, p.gpus)
        if not ends:
            return out
        now = ends[0][0]
        while ends and ends[0][0] <= now:
            _, n = heapq.heappop(ends)
            del running[n]
            for u in users[n]:
                unmet[u] -= 1
                if unmet[u] == 0 and u not in dead:
                    ready.add(u)


@st.composite
def workloads(draw):
    sizes = draw(st.lists(st.sampled_from([16, 24, 40, 80]), min_size=0, max_size=3))
    m = Machine(tuple(Gpu(i, s * GB) for i, s in enumerate(sizes)), draw(st.integers(1, 8)),
                draw(st.integers(8, 128)) * GB)
    n = draw(st.integers(1, 30))
    tasks = []
    for i in range(n):
        gpus = draw(st.integers(0, 2))
        req = Request(
            gpus=gpus,
            gpu_memory_bytes=draw(st.one_of(st.none(), st.integers(4, 80).map(lambda g: g * GB))),
            cpus=draw(st.integers(0, 4)),
            memory_bytes=draw(st.integers(0, 64)) * GB,
        )
        needs = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        tasks.append(Task(f"t{i}", f"c{i}", tuple(f"t{j}" for j in needs), req,
                          float(draw(st.integers(1, 50))), priority=draw(st.integers(0, 2))))
    return m, tasks


@settings(max_examples=300, deadline=None)
@given(workloads())
def test_simulation_invariants_and_equivalence_with_full_policy_calls(w):
    m, tasks = w
    dur = durations(tasks)
    s = simulate(tasks, m, dur)
    slots = {x.name: x for x in s.slots}
    by_name = {t.name: t for t in tasks}
    # Every task that can run, runs; the rest are reported.
    reported = {n for n, _ in s.unschedulable} | {n for n, _ in s.blocked}
    assert set(slots) | reported == set(by_name) and not set(slots) & reported
    assert all(fits_machine(by_name[n].request, m) is not None for n, _ in s.unschedulable)
    assert math.isfinite(s.makespan_s) and s.makespan_s == max((x.end_s for x in s.slots), default=0.0)
    # Needs end before a task starts; durations are kept.
    for x in s.slots:
        assert x.end_s - x.start_s == pytest.approx(dur[x.name])
        for n in by_name[x.name].needs:
            assert slots[n].end_s <= x.start_s
    # At every instant (every start), bookings fit every GPU, the CPUs and the RAM.
    for t in {x.start_s for x in s.slots}:
        live = [x for x in s.slots if x.start_s <= t < x.end_s]
        assert sum(x.cpus for x in live) <= m.cpus
        assert sum(x.memory_bytes for x in live) <= m.memory_bytes
        for g in m.gpus:
            assert sum(b for x in live for i, b in zip(x.gpus, x.gpu_bytes, strict=True) if i == g.index) <= g.memory_bytes
        for x in live:
            assert len(set(x.gpus)) == len(x.gpus) == by_name[x.name].request.gpus
    # The lower bound holds for this (feasible) schedule.
    o = machine_options([], {}, m)[0]
    p = plan(tasks, o, resolve_durations(tasks, {}))
    assert p.bound.value_s <= p.makespan_s + 1e-6
    assert p.makespan_s == s.makespan_s and p.sequential_s + 1e-6 >= p.makespan_s
    # Same placements as handing the policy every ready task each round.
    ref = reference_simulate(tasks, m, dur)
    assert {n: (x.start_s, x.end_s, x.gpus) for n, x in slots.items()} == ref


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 1.0, 2.5, 4.0]), st.sampled_from([0.0, 1.0, 3.0]),
                          st.lists(st.integers(0, 2), max_size=2, unique=True)), max_size=12), st.booleans())
def test_one_pass_figures_equal_the_interval_unions(raw, in_start_order):
    """Busy time per GPU merged as slots come (start order) or sorted (any order) equals
    the union of intervals; cost and utilisation equal their definitions."""
    from rota.core.intervals import union_length
    from rota.plan.bounds import slot_sums
    from rota.plan.simulate import Schedule, Slot

    m = mach((80, 40, 24), cpus=8, mem_gb=64)
    slots = [Slot(f"s{k}", a, a + d, tuple(g), tuple(10 * GB for _ in g), 1 + k % 3, k * GB)
             for k, (a, d, g) in enumerate(raw)]
    if in_start_order:
        slots.sort(key=lambda x: x.start_s)
    s = Schedule(m, tuple(slots), max((x.end_s for x in slots), default=0.0))
    spans = {}
    for x in slots:
        for i in x.gpus:
            spans.setdefault(i, []).append((x.start_s, x.end_s))
    assert dict(slot_sums(s).gpu_busy_s) == {i: union_length(v) for i, v in spans.items()}
    c = cost(s, Prices(per_gpu_hour=2.0))
    assert c.gpu_hours == sum(union_length(v) for v in spans.values()) / 3600.0
    assert c.cpu_hours == sum(x.cpus * x.duration_s for x in slots) / 3600.0
    u = utilization(s)
    if s.makespan_s > 0:
        assert u.gpu_busy == {g.index: union_length(spans.get(g.index, [])) / s.makespan_s for g in m.gpus}
        assert u.memory == sum(x.memory_bytes * x.duration_s for x in slots) / (m.memory_bytes * s.makespan_s)


# ----------------------------------------------------- bookings outside rota (never end)


def _foreign(gpu, gb, who="pid 7 (bob, python)"):
    from rota.core.resources import Placement

    return Placement(who, (gpu,), (gb * GB,), cpus=0, memory_bytes=0)


def test_an_outside_booking_holds_its_memory_for_the_whole_simulation():
    from rota.plan.simulate import OUTSIDE_REASON

    m = mach((80,))
    tasks = [task("small1", gpus=1, gpu_gb=20, est=100), task("small2", gpus=1, gpu_gb=20, est=100),
             task("big", gpus=1, gpu_gb=40, est=50), task("after-big", needs=("big",), est=10)]
    plain = simulate(tasks, m, durations(tasks))
    assert {s.name for s in plain.slots} == {t.name for t in tasks}  # rota plan: all of them
    s = simulate(tasks, m, durations(tasks), outside=[_foreign(0, 51)])
    # 29 GB beside the foreign 51: one 20 GB task at a time, for ever; the 40 GB one never.
    starts = {sl.name: sl.start_s for sl in s.slots}
    assert starts == {"small1": 0.0, "small2": 100.0}
    assert s.unschedulable == (("big", OUTSIDE_REASON),)
    assert s.blocked == (("after-big", "big"),)
    assert s.makespan_s == 200.0


def test_outside_bookings_keep_whole_gpu_tasks_off_their_gpu_and_the_policy_sees_them_run():
    from rota.plan.simulate import OUTSIDE_REASON

    m = mach((80, 80))
    tasks = [task("w1", gpus=1, est=100), task("w2", gpus=1, est=100)]
    s = simulate(tasks, m, durations(tasks), outside=[_foreign(0, 1)])
    assert [(sl.name, sl.start_s, sl.gpus) for sl in s.slots] == [("w1", 0.0, (1,)), ("w2", 100.0, (1,))]
    # One GPU: a whole-GPU task of higher priority that never fits while the booking stays holds
    # no reservation (it would have no end), so the small one that fits now starts now, as the
    # engine's policy does; a rota task with no estimate in the booking's place still keeps it back.
    m1 = mach((80,))
    tasks = [task("whole", gpus=1, est=100, prio=5), task("small", gpus=1, gpu_gb=20, est=10)]
    s = simulate(tasks, m1, durations(tasks), outside=[_foreign(0, 10)])
    assert [(sl.name, sl.start_s) for sl in s.slots] == [("small", 0.0)]
    assert s.unschedulable == (("whole", OUTSIDE_REASON),)
    cands = [Candidate(t.name, t.request, t.priority, 0, t.estimate_s, i) for i, t in enumerate(tasks)]
    assert [p.task for p in schedule(cands, m1, [Running(_foreign(0, 10), None, outside=True)])] == ["small"]
    assert schedule(cands, m1, [Running(_foreign(0, 10), None)]) == []
    # A booking on a GPU the machine lacks (live limits gave it back) is left out.
    s = simulate(tasks, m1, durations(tasks), outside=[_foreign(3, 80)])
    assert {sl.name for sl in s.slots} == {"whole", "small"}
