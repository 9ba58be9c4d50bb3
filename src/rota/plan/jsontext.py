"""The text of ``rota plan --json``, fast: ``json.dumps(plan_json(...))`` byte for byte.

For 100,000 tasks the generic route builds a dict per task and encodes the
task list twice (the first machine's plan is both the top level and
``machines[0]``), about 1.5 s. Here each task list is formatted once, straight
to text, and spliced into the encoded figures (:func:`plan_json_text`).
``tests/unit/test_plan_json.py`` checks the equality.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring_ascii  # what json.dumps uses with ensure_ascii=True

from rota.plan.compare import Plan, json_head, plan_figures, plan_json, task_dict
from rota.plan.estimates import Durations
from rota.plan.simulate import Slot

# One task as json.dumps writes its dict: default separators, keys in task_dict's order.
# repr writes a float or an int as json does (finite floats and exact ints only; checked
# per task). The tail (GPUs to source) repeats across tasks, so it is formatted once per
# distinct value.
_TAIL = ', "gpus": %r, "gpu_bytes": %r, "cpus": %r, "memory_bytes": %r, "source": %s}'


def plan_json_text(spec_path: str, plans: Sequence[Plan], durations: Durations, indent: int | None = None) -> str:
    """``json.dumps(plan_json(spec_path, plans, durations), indent=indent)``."""
    return "".join(plan_json_chunks(spec_path, plans, durations, indent))


def plan_json_chunks(
    spec_path: str, plans: Sequence[Plan], durations: Durations, indent: int | None = None
) -> list[str]:
    """:func:`plan_json_text` in pieces, to write one after another: the text of 100,000
    tasks is tens of MB, and joining the pieces would copy it again."""
    if indent is not None:  # pretty output is for small plans: the generic route
        return [json.dumps(plan_json(spec_path, plans, durations), indent=indent)]
    tasks = [_tasks_body(p.schedule.slots, durations.source) for p in plans]
    top = json.dumps({**json_head(spec_path, durations), **plan_figures(plans[0])})
    out = [top[:-1], ', "tasks": [', tasks[0], '], "machines": [']
    for i, (p, body) in enumerate(zip(plans, tasks, strict=True)):
        # Each object is encoded without "tasks" and reopened to append it as its last key.
        out += [", " if i else "", json.dumps(plan_figures(p))[:-1], ', "tasks": [', body, "]}"]
    out.append("]}")
    return out


def _ints(xs: tuple[int, ...]) -> bool:
    """Whether ``%r`` of ``list(xs)`` is its JSON: exact ints (not bools, not floats)."""
    if len(xs) == 1:
        return type(xs[0]) is int
    return all(type(x) is int for x in xs)


def tasks_text(slots: Sequence[Slot], source: Mapping[str, str]) -> str:
    """``json.dumps([task_dict(s, source) for s in slots])``."""
    return "[" + _tasks_body(slots, source) + "]"


def _tasks_body(slots: Sequence[Slot], source: Mapping[str, str]) -> str:
    """:func:`tasks_text` without its brackets."""
    enc, get, isfinite = encode_basestring_ascii, source.get, math.isfinite
    tails: dict[tuple[object, ...], str] = {}  # keys hold exact ints only: equal keys, equal text
    # Times repeat (tasks start and end together): each value is rounded and written once.
    # Zero is left out: 0.0 and -0.0 are equal keys but are written differently.
    times: dict[float, str] = {}
    parts = []
    for s in slots:
        name, gpus, gpu_bytes, cpus, mem = s.name, s.gpus, s.gpu_bytes, s.cpus, s.memory_bytes
        start, end, dur = float(s.start_s), float(s.end_s), float(s.end_s - s.start_s)
        if not (isfinite(start) and isfinite(end) and isfinite(dur) and type(cpus) is int and type(mem) is int
                and (type(gpus[0]) is int if len(gpus) == 1 else _ints(gpus))
                and (type(gpu_bytes[0]) is int if len(gpu_bytes) == 1 else _ints(gpu_bytes))):
            parts.append(json.dumps(task_dict(s, source)))  # anything unusual: what json writes
            continue
        src = get(name, "")
        key = (gpus, gpu_bytes, cpus, mem, src)
        tail = tails.get(key)
        if tail is None:
            tail = tails[key] = _TAIL % (list(gpus), list(gpu_bytes), cpus, mem, enc(src))
        a = times.get(start)
        if a is None:
            a = repr(round(start, 3))
            if start:
                times[start] = a
        b = times.get(end)
        if b is None:
            b = repr(round(end, 3))
            if end:
                times[end] = b
        d = times.get(dur)
        if d is None:
            d = repr(round(dur, 3))
            if dur:
                times[dur] = d
        parts.append(f'{{"name": {enc(name)}, "start_s": {a}, "end_s": {b}, "duration_s": {d}{tail}')
    return ", ".join(parts)
