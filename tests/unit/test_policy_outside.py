"""The policy beside bookings outside rota (a colleague's GPU memory, an unhealthy GPU).

Such a booking has no end the policy could wait for: a task that cannot fit until it
goes away must not hold a reservation that keeps tasks that fit now from starting.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rota.core.policy import Candidate, Running, schedule, sort_key
from rota.core.resources import Gpu, Ledger, Machine, Placement, Request

GB = 2**30


def gpus(*sizes_gb: int) -> Machine:
    return Machine(tuple(Gpu(i, s * GB) for i, s in enumerate(sizes_gb)), 16, 256 * GB)


def foreign(gpu: int, gb: int) -> Placement:
    return Placement(f"pid {4000 + gpu} (bob, python)", (gpu,), (gb * GB,), cpus=0, memory_bytes=0)


WHOLE = Candidate("whole", Request(gpus=1), priority=1, estimate_s=600.0)
SMALL = Candidate("small", Request(gpus=1, gpu_memory_bytes=20 * GB), estimate_s=600.0, order=1)


def test_a_task_that_fits_beside_foreign_memory_starts_now_the_whole_gpu_one_waits():
    """The brief's case: one 80GB GPU, 30GB held outside rota; the 20GB task starts now."""
    placed = schedule([WHOLE, SMALL], gpus(80), [Running(foreign(0, 30), None, outside=True)])
    assert [p.task for p in placed] == ["small"]


def test_a_running_task_of_rota_with_no_estimate_still_holds_the_reservation():
    """The same booking as rota's own task with no estimate: it ends some time, the reservation stays."""
    own = Placement("mine", (0,), (30 * GB,), cpus=1, memory_bytes=0)
    assert schedule([WHOLE, SMALL], gpus(80), [Running(own, None)]) == []


def test_the_reservation_is_kept_where_running_tasks_of_rota_free_the_room():
    """GPU 0: foreign memory; GPU 1: a rota task ending in 100 s. The whole-GPU task reserves GPU 1
    (it fits there once that task ends): the long small task may start only beside it, on GPU 0."""
    running = [Running(foreign(0, 30), None, outside=True),
               Running(Placement("r", (1,), (40 * GB,), 1, 0), 100.0)]
    placed = schedule([WHOLE, SMALL], gpus(80, 80), running)
    assert [(p.task, p.gpus) for p in placed] == [("small", (0,))]
    # Without the foreign memory, GPU 0 is whole and free: the whole-GPU task takes it now.
    assert [p.task for p in schedule([WHOLE, SMALL], gpus(80, 80), running[1:])] == ["whole", "small"]


def test_an_unhealthy_gpu_does_not_make_a_two_gpu_task_block_the_healthy_one():
    sick = Running(Placement("GPU 1 unhealthy: Xid 79", (1,), (80 * GB,), 0, 0), None, outside=True)
    two = Candidate("two", Request(gpus=2), priority=1, estimate_s=600.0)
    placed = schedule([two, SMALL], gpus(80, 80), [sick])
    assert [(p.task, p.gpus) for p in placed] == [("small", (0,))]


def test_once_the_foreign_memory_is_freed_the_whole_gpu_task_goes_first():
    assert [p.task for p in schedule([WHOLE, SMALL], gpus(80), [])] == ["whole"]


requests = st.builds(
    Request,
    gpus=st.integers(0, 2),
    gpu_memory_bytes=st.one_of(st.none(), st.sampled_from([10, 20, 30, 50, 70]).map(lambda g: g * GB)),
    cpus=st.integers(0, 2),
    memory_bytes=st.just(0),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([40, 80]), min_size=1, max_size=3), st.lists(requests, min_size=1, max_size=12),
       st.data())
def test_a_head_that_cannot_fit_beside_outside_bookings_keeps_nothing_back(sizes, reqs, data):
    """Only outside bookings hold the machine and the first task that does not fit cannot fit
    even once every task of rota ends: then every task that fits starts, in policy order
    (greedy), as if that head were not there."""
    m = gpus(*sizes)
    held = [Running(foreign(g.index, data.draw(st.sampled_from([5, 30, 60, g.memory_bytes // GB]))), None, outside=True)
            for g in m.gpus if data.draw(st.booleans())]
    cands = sorted((Candidate(f"t{i}", r, priority=data.draw(st.integers(0, 1)), order=i,
                              estimate_s=data.draw(st.sampled_from([None, 10.0, 500.0])))
                    for i, r in enumerate(reqs) if r.gpus <= len(m.gpus)), key=sort_key)
    greedy: list[Placement] = []
    led = Ledger.for_machine(m, [r.placement for r in held])
    head: Candidate | None = None
    for c in cands:
        p = led.fit(c.name, c.request)
        if p is None:
            head = head or c
            continue
        led.book(p)
        greedy.append(p)
    beside = Ledger.for_machine(m, [r.placement for r in held])
    if head is None or beside.fit(head.name, head.request) is not None:
        return  # a head that fits beside the bookings reserves as before (test_policy's properties)
    assert schedule(cands, m, held, presorted=True) == greedy
