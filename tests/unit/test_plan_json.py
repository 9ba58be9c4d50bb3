"""``rota plan --json`` text: the fast writer gives exactly what ``json.dumps`` gives."""

from __future__ import annotations

import json
from dataclasses import replace

from rota.core.resources import Gpu, Machine, Request
from rota.plan.compare import MachineOption, option_from_spec, plan, plan_json
from rota.plan.estimates import resolve_durations
from rota.plan.jsontext import plan_json_text, tasks_text
from rota.plan.simulate import Slot
from rota.spec.model import MachineSpec, Task

GB = 2**30


def tasks() -> list[Task]:
    odd = ['q"uote\\back', "tab\there", "ünï-cødé ✓", "ctl\x01", "x" * 300]
    out = [Task(name, f"run {i}", (), Request(gpus=i % 3, gpu_memory_bytes=(10 + i) * GB if i % 2 else None),
                [1.0, 2.5, 1e-4, 7200.123456][i % 4]) for i, name in enumerate(odd)]
    out.append(Task("no-estimate", "x", (odd[0],), Request(cpus=2, memory_bytes=3 * GB)))
    out.append(Task("too-big", "x", (), Request(gpus=9)))
    out.append(Task("after-big", "x", ("too-big",), Request()))
    return out


def test_text_equals_json_dumps_on_several_machines():
    base = Machine(tuple(Gpu(i, 80 * GB) for i in range(2)), 8, 64 * GB)
    options = [MachineOption("base", base),
               option_from_spec("fast", MachineSpec(gpus="4x24GB", speed=3.0, price_per_gpu_hour=0.7), base),
               option_from_spec("cpu", MachineSpec(cpus=2, price_per_hour=1.0), base)]
    ts = tasks()
    d = resolve_durations(ts, {"x": 33.3}, default_s=45.0)
    plans = [plan(ts, o, d) for o in options]
    assert not plans[0].schedule.complete and plans[0].schedule.slots  # both kinds of entries present
    for few in (plans[:1], plans):
        want = plan_json(spec_path="/abs/rota.yaml", plans=few, durations=d)
        assert plan_json_text("/abs/rota.yaml", few, d) == json.dumps(want)
        assert plan_json_text("/abs/rota.yaml", few, d, indent=2) == json.dumps(want, indent=2)
        assert json.loads(plan_json_text("/abs/rota.yaml", few, d)) == want


def test_unusual_values_fall_back_to_json():
    """Infinite times and bools are written as json writes them, not as Python's repr."""
    slots = [Slot("a", 0.0, float("inf"), (0,), (GB,), 1, 0), Slot("b", 1.0, 2.0, (True,), (1,), True, 0),
             Slot("c", 0, 3, (), (), 1, 0), Slot("d", 0.0, 1.0, (1,), (1,), 1, 0),
             Slot("e", 0.0, 1.0, (True,), (1,), 1, 0), Slot("f", 0.0, 1.0, (1,), (1.0,), 1, 0),
             Slot("g", 0.0, 1.0, (1, 2), (1, False), 1, 0),  # equal to d's values, other types
             Slot("h", -0.0, 0.0, (), (), 1, 0), Slot("i", 0.0, -0.0, (), (), 1, 0),  # 0.0 == -0.0, written apart
             Slot("j", 1.00049, 2.0004, (), (), 1, 0), Slot("k", 1.0005, 2.0, (), (), 1, 0)]  # rounding
    source = {"a": "estimate"}
    assert tasks_text(slots, source) == json.dumps([_entry(s, source) for s in slots])
    assert tasks_text([], source) == "[]"
    assert "Infinity" in tasks_text(slots, source) and "true" in tasks_text(slots, source)
    assert tasks_text([replace(slots[2], start_s=0.0)], {}) == tasks_text(slots[2:3], {})


def _entry(s: Slot, source: dict[str, str]) -> dict[str, object]:
    return {"name": s.name, "start_s": round(float(s.start_s), 3), "end_s": round(float(s.end_s), 3),
            "duration_s": round(float(s.duration_s), 3), "gpus": list(s.gpus), "gpu_bytes": list(s.gpu_bytes),
            "cpus": s.cpus, "memory_bytes": s.memory_bytes, "source": source.get(s.name, "")}
