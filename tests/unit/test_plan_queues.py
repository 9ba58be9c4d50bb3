"""The simulator's ready queue keeps policy order through adds, prefixes, removals and spills."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rota.plan.queues import ReadyQueue

ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(0, 2000)),
    st.tuples(st.just("take"), st.integers(1, 700), st.integers(0, 700)),  # prefix k, then remove some
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.sets(st.integers(0, 2000), max_size=1500), ops, st.randoms(use_true_random=False))
def test_queue_matches_a_sorted_list(initial, operations, rnd):
    q = ReadyQueue(sorted(initial))
    model = sorted(initial)
    for op in operations:
        if op[0] == "add":
            if op[1] in model:
                continue
            q.add(op[1])
            model.append(op[1])
            model.sort()
        else:
            _, k, n_done = op
            got = q.prefix(k)
            assert got == model[:k]
            done = set(rnd.sample(got, min(n_done, len(got))))
            q.remove(done)
            model = [x for x in model if x not in done]
        assert len(q) == len(model)
    assert q.prefix(len(model) + 1) == model
