"""Why a pending task waits (rota.core.explain): unit cases and hypothesis properties against the policy."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rota.core.explain import KINDS, Reason, explain, gpu_loads
from rota.core.policy import Candidate, Running, schedule, sort_key
from rota.core.resources import Gpu, Machine, Placement, Request, fits_machine
from rota.plan.eta import Progress, forecast
from rota.spec.model import Task

GB = 2**30
NOW = 1_800_000_000.0


def machine(n_gpus: int = 4, gb: int = 80, cpus: int = 16, mem_gb: int = 256) -> Machine:
    return Machine(tuple(Gpu(i, gb * GB) for i in range(n_gpus)), cpus, mem_gb * GB)


def on_gpu(task: str, idx: int, gb: int = 80) -> Placement:
    return Placement(task, (idx,), (gb * GB,), 1, 0)


def test_the_reservation_is_named_with_its_holder_and_time():
    """Scenario 5's surprise: GPU 2 idle, small tasks pending, held for the 4-GPU ablation-large."""
    m = machine(4)
    running = [Running(on_gpu(f"r{i}", i), remaining_s=100.0) for i in (0, 1, 3)]
    ready = [Candidate("ablation-large", Request(gpus=4), priority=1, estimate_s=3600.0, order=0),
             Candidate("small-long", Request(gpus=1), estimate_s=500.0, order=1),
             Candidate("small-short", Request(gpus=1), estimate_s=50.0, order=2)]
    why = explain(ready, m, running, now=NOW)
    big, long_, short = why["ablation-large"], why["small-long"], why["small-short"]
    assert big.kind == "gpu" and big.holder == "ablation-large" and big.at == NOW + 100.0
    assert "no 4 idle GPUs: 1 has it" in big.text and "reserved for it from" in big.text
    assert long_.kind == "reserved" and long_.holder == "ablation-large" and long_.at == NOW + 100.0
    assert "reserved for ablation-large (4 GPUs)" in long_.text and "would not end before then" in long_.text
    assert short.kind == "next"  # ends before the shadow time: backfilled, as the policy does
    assert [p.task for p in schedule(ready, m, running)] == ["small-short"]
    # The per-GPU picture: booked, by whom, free.
    assert [(g.index, g.free_bytes, g.tasks) for g in big.gpus] == [
        (0, 0, ("r0",)), (1, 0, ("r1",)), (2, 80 * GB, ()), (3, 0, ("r3",))]


def test_no_gpu_with_n_gb_free_lists_each_gpu():
    m = machine(2)
    running = [Running(Placement("a", (0,), (60 * GB,), 1, 0), 10.0), Running(Placement("b", (1,), (50 * GB,), 1, 0), 10.0)]
    why = explain([Candidate("t", Request(gpus=1, gpu_memory_bytes=40 * GB))], m, running, now=NOW)["t"]
    assert why.kind == "gpu" and why.text.startswith("no GPU with 40GB free (free: GPU 0 20GB, GPU 1 30GB)")


def test_cpu_and_memory_limits():
    m = machine(0, cpus=4, mem_gb=16)
    running = [Running(Placement("a", (), (), 3, 10 * GB), None)]
    why = explain([Candidate("c", Request(cpus=2), order=0), Candidate("r", Request(cpus=1, memory_bytes=8 * GB), order=1)],
                  m, running, now=NOW)
    # a machine that does not say where its CPUs come from names no flag (tests/unit/test_explain_cpus.py)
    assert why["c"].kind == "cpu" and "1 of 4 free (4 CPUs)" in why["c"].text
    assert why["r"].kind == "memory" and "6GB of 16GB free" in why["r"].text
    assert why["c"].at is None  # the running task has no estimate: no shadow time
    assert "from when running tasks with no estimate end" in why["c"].text


def test_precedence_held_needs_backoff_limit():
    m = machine(1)
    ready = [Candidate(n, Request(), order=i) for i, n in enumerate(["h", "b", "l", "free", "past"])]
    why = explain(ready, m, now=NOW, waiting={"w": [("prep", "running"), ("h", "pending")], "hw": [("x", "pending")]},
                  held={"h", "hw"}, backoff={"b": NOW + 30.0, "past": NOW - 1.0, "l": NOW + 5.0},
                  limits={"l": "sweep s runs at most 2 trial(s) at once (parallel: 2)", "free": "x"})
    assert why["h"].kind == why["hw"].kind == "held" and "rota release h" in why["h"].text
    assert why["w"].kind == "needs" and why["w"].text == "waiting for 2 needs: prep (running), h (pending)"
    assert why["w"].needs == (("prep", "running"), ("h", "pending"))
    assert why["b"].kind == "backoff" and why["b"].at == NOW + 30.0 and "30s from now" in why["b"].text
    assert why["l"].kind == "backoff"  # a back-off before the limit
    assert why["free"].kind == "limit" and why["free"].text == "the run's limit: x"
    assert why["past"].kind == "next"  # a back-off that ran out is no reason
    assert set(why) == {"h", "b", "l", "free", "past", "w", "hw"}


def test_many_needs_are_shortened():
    why = explain([], machine(0), now=NOW, waiting={"agg": [(f"t{i}", "pending") for i in range(8)]})["agg"]
    assert why.text.endswith("t4 (pending) and 3 more") and len(why.needs) == 8


def test_gpu_loads_sum_shared_gpus():
    loads = gpu_loads(machine(2), [Placement("a", (0,), (30 * GB,)), Placement("b", (0,), (20 * GB,)),
                                   Placement("c", (0, 1), (10 * GB, 80 * GB))])
    assert [(g.booked_bytes, g.tasks) for g in loads] == [(60 * GB, ("a", "b", "c")), (80 * GB, ("c",))]


def test_gpu_loads_keep_outside_bookings_apart():
    """What rota did not start (a foreign process, an unhealthy GPU) is summed apart and leaves less free."""
    loads = gpu_loads(machine(2), [Placement("a", (0,), (30 * GB,))],
                      [Placement("pid 7 (bob, python)", (1,), (13 * GB,)), Placement("pid 8 (eve, a.out)", (1,), (2 * GB,)),
                       Placement("on a GPU the machine lacks", (5,), (GB,))])
    assert [(g.booked_bytes, g.tasks, g.other_bytes, g.others, g.free_bytes) for g in loads] == [
        (30 * GB, ("a",), 0, (), 50 * GB), (0, (), 15 * GB, ("pid 7 (bob, python)", "pid 8 (eve, a.out)"), 65 * GB)]


# Properties: the explanation is the policy's decision, task by task.

requests = st.builds(
    Request,
    gpus=st.integers(0, 3),
    gpu_memory_bytes=st.one_of(st.none(), st.sampled_from([10, 20, 40, 60]).map(lambda g: g * GB)),
    cpus=st.integers(0, 3),
    memory_bytes=st.integers(0, 8).map(lambda g: g * GB),
    devices=st.one_of(st.none(), st.just((0, 1)), st.just((1, 2, 3))),
)
machines = st.builds(
    lambda sizes, cpus: Machine(tuple(Gpu(i, s * GB) for i, s in enumerate(sizes)), cpus, 32 * GB),
    st.lists(st.sampled_from([40, 80]), min_size=0, max_size=4), st.integers(1, 12))
times = st.sampled_from([None, 5.0, 20.0, 50.0, 120.0, 400.0])


@settings(max_examples=400, deadline=None)
@given(machines, st.lists(requests, min_size=1, max_size=12), st.data())
def test_explained_next_is_exactly_what_the_policy_places(m, reqs, data):
    cands = [Candidate(f"t{i}", r, priority=data.draw(st.integers(0, 1)), rank_s=float(data.draw(st.integers(0, 3))),
                       estimate_s=data.draw(times), order=i)
             for i, r in enumerate(reqs) if fits_machine(r, m) is None]
    cut = data.draw(st.integers(0, len(cands)))
    running = [Running(p, data.draw(times)) for p in schedule(cands[:cut], m)]
    rest = [c for c in cands if c.name not in {r.placement.task for r in running}]
    why = explain(rest, m, running, now=NOW)
    assert set(why) == {c.name for c in rest}
    assert all(isinstance(r, Reason) and r.kind in KINDS and r.text for r in why.values())
    placed = {p.task for p in schedule(rest, m, running)}
    assert {n for n, r in why.items() if r.kind == "next"} == placed
    # At most one holder; every "reserved" task names it.
    holders = {n for n, r in why.items() if r.holder == n}
    assert len(holders) <= 1
    assert all(r.holder in holders for r in why.values() if r.kind == "reserved")


def _task(name: str, needs: tuple[str, ...] = (), gpus: int = 0, est: float = 60.0) -> Task:
    return Task(name=name, command=f"echo {name}", needs=needs, request=Request(gpus=gpus), estimate_s=est)


def test_forecast_orders_starts_as_the_simulation_and_leaves_held_out():
    m = machine(1, cpus=4)
    tasks = [_task("prep", est=10.0), _task("a", ("prep",), gpus=1, est=100.0), _task("b", ("prep",), gpus=1, est=50.0),
             _task("agg", ("a", "b")), _task("h"), _task("after-h", ("h",))]
    progress = {"prep": Progress("running", NOW - 4.0)}
    fc = forecast(tasks, m, progress, NOW, held={"h"}, not_before={"agg": NOW + 10_000.0})
    assert set(fc.slots) == {"prep", "a", "b", "agg"}  # held and what needs it: no prediction
    s = fc.slots
    assert s["prep"] == (NOW - 4.0, NOW + 6.0)  # its real start, what is left of its estimate
    assert s["prep"][1] <= min(s["a"][0], s["b"][0]) and max(s["a"][1], s["b"][1]) <= 10_000 + NOW
    assert s["a"][0] == NOW + 6.0 and s["b"][0] == NOW + 106.0  # one GPU: the longer path first
    assert s["agg"] == (NOW + 10_000.0, NOW + 10_060.0)  # its back-off runs out later
    assert fc.makespan_s == s["b"][1] - NOW + 0.0 or fc.makespan_s >= s["b"][1] - NOW


def test_the_limit_text_names_the_sweep_and_its_parallel():
    import rota
    from rota.engine.predict import HALTED, limit_text
    from rota.engine.runstate import Live

    spec = rota.spec_from_dict({"tasks": [
        {"name": "xgb", "command": "echo {lr}", "sweep": {"trials": 4, "metric": "auc", "parallel": 2,
                                                        "params": {"lr": {"type": "float", "low": 0.1, "high": 0.3}}}},
        {"name": "plain", "command": "true"}]}, name="limits")
    trial = next(t for t in spec.tasks if t.name == "xgb-trial-3")
    assert limit_text(Live(trial, "pending")) == "sweep xgb runs at most 2 trial(s) at once (parallel: 2)"
    plain = next(t for t in spec.tasks if t.name == "plain")
    assert limit_text(Live(plain, "pending")) == "a concurrency limit of the run"
    why = explain([Candidate("xgb-trial-3", trial.request)], machine(0), now=NOW,
                  limits={"xgb-trial-3": limit_text(Live(trial, "pending"))})["xgb-trial-3"]
    assert why.kind == "limit" and why.text.startswith("the run's limit: sweep xgb runs at most 2")
    assert "rota stop --drain" in HALTED


def test_forecast_rows_ride_with_a_commit_and_land_only_on_waiting_and_running_tasks(tmp_path):
    from rota.store import base as S
    from rota.store.sqlite import Change, SqliteStore

    st = SqliteStore(tmp_path)
    st.upsert_tasks([{"name": n, "state": S.PENDING, "attempts": 0, "free_attempts": 0, "reason": "", "gpus": [],
                      "gpu_bytes": [], "cpus": 1, "memory_bytes": 0, "vars": {}, "command": "true"}
                     for n in ("p", "r", "done")])
    st.apply([Change("r", S.PENDING, "launching", {"state": S.RUNNING, "reason": "queued in slurm"}),
              Change("done", S.PENDING, "succeeded", {"state": S.SUCCEEDED})])
    events = len(st.events())
    rows = [("p", "waiting for its need: x (running)", NOW + 5, NOW + 65), ("r", "ignored", NOW - 10, NOW + 50),
            ("done", "ignored", NOW, NOW + 1)]
    # In the same transaction as a transition (and without an event of their own).
    assert st.apply([Change("p", S.PENDING, "hold", {"held": 1})], forecast=rows) == [True]
    got = {r.name: (r.reason, r.predicted_start, r.predicted_end) for r in st.tasks()}
    assert got["p"] == ("waiting for its need: x (running)", NOW + 5, NOW + 65)
    assert got["r"] == ("queued in slurm", NOW - 10, NOW + 50)  # a running task keeps its reason
    assert got["done"] == ("", None, None)  # a task that moved on is left as it is
    assert len(st.events()) == events + 1  # the hold's event only
    st.set_forecast([("p", None, None, None)])  # alone; None keeps the reason
    assert st.task("p").reason == "waiting for its need: x (running)" and st.task("p").predicted_start is None


def test_memory_held_outside_rota_never_ends_in_the_forecast_and_the_reason_says_so():
    m = machine(1, cpus=8)
    foreign = Placement("pid 4242 (bob, python)", (0,), (51 * GB,), 0, 0)  # 50 GB + the 1 GB margin
    req = lambda gb: Request(gpus=1, gpu_memory_bytes=gb * GB)  # noqa: E731
    tasks = [Task("fits", "echo fits", (), req(20), 100.0), Task("big", "echo big", (), req(40), 50.0),
             Task("after-big", "echo after", ("big",), Request(), 10.0)]
    # Without the booking (rota plan, no foreign process): every task is forecast, the big one now.
    plain = forecast(tasks, m, {}, NOW)
    assert set(plain.slots) == {"fits", "big", "after-big"} and plain.slots["big"][0] == NOW
    fc = forecast(tasks, m, {}, NOW, outside=[foreign])
    assert fc.slots == {"fits": (NOW, NOW + 100.0)}  # beside it as before; the 40 GB one and its user: none
    assert fc.makespan_s == float("inf")  # the run cannot end while it stays: the dashboard's ETA is unknown
    assert forecast(tasks[:1], m, {}, NOW, outside=[foreign]).makespan_s == 100.0
    cands = [Candidate(t.name, t.request, 0, t.estimate_s or 0.0, t.estimate_s, i) for i, t in enumerate(tasks[:2])]
    why = explain(cands, m, [], now=NOW, waiting={"after-big": [("big", "pending")]},
                  outside=[Running(foreign, None)])
    assert why["fits"].kind == "next"
    assert why["big"].kind == "gpu" and "held outside rota (pid 4242 (bob, python))" in why["big"].text
    assert "no predicted start while it stays" in why["big"].text
    g = why["big"].gpus[0]
    assert (g.booked_bytes, g.other_bytes, g.others) == (0, 51 * GB, ("pid 4242 (bob, python)",))
    # Whole-GPU and higher priority, it reserves nothing while the booking stays (the policy's
    # answer: a reservation would have no end), so the small one is not starved: it starts next,
    # as schedule() places it on the same inputs.
    whole = [Candidate("whole", Request(gpus=1), 5, 100.0, 100.0, 0), cands[0]]
    starved = explain(whole, m, [], now=NOW, outside=[Running(foreign, None)])
    assert starved["whole"].kind == "gpu" and "held outside rota" in starved["whole"].text
    assert "reserved" not in starved["whole"].text and starved["whole"].holder is None
    assert starved["fits"].kind == "next"
    placed = schedule(sorted(whole, key=sort_key), m, [Running(foreign, None, outside=True)])
    assert [p.task for p in placed] == ["fits"]
    # A task that fits beside the booking, but not now, is not said to wait for it.
    busy = explain(cands[:1], m, [Running(Placement("r", (0,), (20 * GB,), 1, 0), 30.0)], now=NOW,
                   outside=[Running(foreign, None)])
    assert busy["fits"].kind == "gpu" and "outside rota" not in busy["fits"].text
