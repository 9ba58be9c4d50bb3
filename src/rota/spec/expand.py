"""Expand task templates (matrix, shards, sweeps) into concrete ``Task`` records.

Placeholders (``{var}``) follow :mod:`rota.spec.placeholders`: in a name, needs,
paths and env values a value is written as it is; in a command shell-quoted, so a
value with spaces, quotes or ``$`` arrives as one literal argument. Every
placeholder is checked here (an unknown one is bad input); a command's
launch-time ones (``{out}``, ``{task}``, ``{run}``, ``{attempt}``, a sweep's
``{param}``) are left for :func:`rota.spec.placeholders.render`.
"""

from __future__ import annotations

import difflib
import itertools
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence

from rota.core.resources import Request
from rota.errors import SpecError
from rota.spec.model import Task, TaskSpec, clone_task
from rota.spec.placeholders import (
    COMMAND,
    LAUNCH_VARS,
    SHARD,
    VAR,
    Part,
    Scope,
    Slot,
    compile_field,
    fill,
    literal_text,
    quote_value,
)

__all__ = ["LAUNCH_VARS", "expand_tasks", "value_text"]

_BAD_NAME = re.compile(r"[\x00-\x1f\x7f]")


def value_text(v: object) -> str:
    """How a matrix value is written into names, commands and env vars."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _check_name(name: str, file: str, template: str) -> None:
    if _BAD_NAME.search(name):
        raise SpecError(
            f"expanded task name {name!r} contains a control character (newline, NUL, ...)",
            file=file, task=template, field="name",
        )
    if len(name) > 300:
        raise SpecError(f"expanded task name is {len(name)} characters; at most 300", file=file, task=template, field="name")


def expand_tasks(
    specs: Sequence[tuple[TaskSpec, int | None]], *, file: str, root: str, max_tasks: int
) -> list[Task]:
    """Expand every template; raise SpecError on a bad placeholder, duplicates or too many tasks."""
    total = 0
    for ts, _line in specs:  # count everything before expanding anything: refuse in O(templates)
        matrix = ts.matrix or {}
        count = math.prod(len(v) for v in matrix.values()) if matrix else 1
        count *= ts.shards or 1
        if ts.sweep is not None:
            count *= ts.sweep.trials
        total += count
        if total > max_tasks:
            raise SpecError(
                f"expands to {total:,} tasks, more than the limit of {max_tasks:,}; "
                "split the spec or raise 'max_tasks:'",
                file=file, task=ts.name, field="matrix",
            )
    templates = frozenset(ts.name for ts, _line in specs)
    fixed = [_Fixed(ts, root, file, line, templates) for ts, line in specs]  # all placeholders checked first
    out: list[Task] = []
    seen: dict[str, str] = {}
    for (ts, _line), f in zip(specs, fixed, strict=True):
        matrix = ts.matrix or {}
        keys = list(matrix)
        if keys and not ts.shards and ts.sweep is None:
            out.extend(_expand_matrix(ts, keys, f, file, seen))
            continue
        combos = itertools.product(*(matrix[k] for k in keys)) if keys else [()]
        for combo in combos:
            values = {k: value_text(v) for k, v in zip(keys, combo, strict=True)}
            for task in _expand_one(ts, values, root, f):
                _check_name(task.name, file, ts.name)
                if task.name in seen:
                    _duplicate(task.name, seen[task.name], ts.name, file)
                seen[task.name] = ts.name
                out.append(task)
    return out


def _uses(parts: Sequence[Part], kind: str) -> bool:
    return any(isinstance(p, Slot) and p.kind == kind for p in parts)


class _Fixed:
    """What a template's expansions share, computed once (100,000-task matrices stay fast):
    its request, and each field compiled into literals and slots (placeholders checked)."""

    def __init__(
        self, ts: TaskSpec, root: str, file: str = "spec", line: int | None = None,
        templates: frozenset[str] = frozenset(),
    ) -> None:
        self.root = root
        self.request = Request(
            gpus=ts.gpus,
            gpu_memory_bytes=ts.gpu_memory if ts.gpus else None,
            cpus=ts.cpus,
            memory_bytes=ts.memory or 0,
            devices=tuple(ts.devices) if ts.devices is not None else None,
        )
        self.scope = scope = Scope(ts.matrix or {}, sharded=bool(ts.shards), params=ts.sweep.params if ts.sweep else ())

        def parts(text: str, field: str, label: str | None = None) -> list[Part]:
            return compile_field(text, scope, field, file=file, task=ts.name, label=label, line=line)

        self.name = parts(ts.name, "name")
        self.name_literal = literal_text(self.name)
        self.name_uses_var = _uses(self.name, VAR)
        self.name_uses_shard = _uses(self.name, SHARD)
        self.command = parts(ts.command, COMMAND)
        self.workdir = parts(ts.workdir or ".", "workdir")
        self.outputs = [parts(o, "outputs") for o in ts.outputs]
        self.inputs = [parts(i, "inputs") for i in ts.inputs]
        self.needs_parts = [self._need(n, templates, parts) for n in ts.needs]
        self.env_parts = {k: parts(value_text(v), "env", f"env.{k}") for k, v in ts.env.items()}
        # What has no slot is the same for every expansion.
        self.paths_vary = any(literal_text(p) is None for p in (self.workdir, *self.outputs, *self.inputs))
        self.needs_vary = any(literal_text(p) is None for p in self.needs_parts)
        self.env_vary = any(literal_text(p) is None for p in self.env_parts.values())
        self.paths = None if self.paths_vary else self.fill_paths({}, "", "")
        self.needs = None if self.needs_vary else tuple("".join(p) for p in self.needs_parts)  # type: ignore[arg-type]
        self.env = {} if self.env_vary else {k: "".join(p) for k, p in self.env_parts.items()}  # type: ignore[arg-type]
        self.env_items = tuple(sorted(self.env.items()))

    @staticmethod
    def _need(need: str, templates: frozenset[str], parts: Callable[[str, str], list[Part]]) -> list[Part]:
        """A ``needs`` entry; one that is another spec task's name as written (``train-{seed}``:
        all its expansions) keeps placeholders this task cannot fill."""
        try:
            return parts(need, "needs")
        except SpecError as e:
            if need in templates:
                return [need]
            close = difflib.get_close_matches(need, templates, n=1, cutoff=0.8)
            if not close:
                raise
            raise SpecError(f"{e.detail}; or did you mean the spec task {close[0]!r}?",
                            file=e.file, task=e.task, field=e.field, line=e.line) from None

    def fill_paths(self, values: Mapping[str, str], shard: str, task: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        workdir = os.path.normpath(os.path.join(self.root, fill(self.workdir, values, shard, task)))
        outputs = tuple(os.path.normpath(os.path.join(workdir, fill(o, values, shard, task)))
                        for o in self.outputs)
        inputs = tuple(os.path.normpath(os.path.join(workdir, fill(i, values, shard, task)))
                       for i in self.inputs)
        return workdir, outputs, inputs

    def fill_needs(self, values: Mapping[str, str], shard: str) -> tuple[str, ...]:
        if self.needs is not None:
            return self.needs
        return tuple(fill(p, values, shard, "") for p in self.needs_parts)

    def fill_env(self, values: Mapping[str, str], shard: str, task: str) -> dict[str, str]:
        if not self.env_vary:
            return self.env
        return {k: fill(p, values, shard, task) for k, p in self.env_parts.items()}


class _Template:
    """Parts whose slots are all matrix variables, compiled for a tuple of values (one
    string per key of ``keys``, in order): :meth:`fill` gives what :func:`fill` gives.
    ``%``-formatting when the parts use every key once, in order (the usual name); else
    :meth:`str.format` with positions."""

    def __init__(self, parts: Sequence[Part], keys: Sequence[str]) -> None:
        position = {k: i for i, k in enumerate(keys)}
        pct: list[str] = []
        fmt: list[str] = []
        used: list[int] = []
        for p in parts:
            if isinstance(p, str):
                pct.append(p.replace("%", "%%"))
                fmt.append(p.replace("{", "{{").replace("}", "}}"))
            else:
                used.append(position[p.key])
                pct.append("%s")
                fmt.append(f"{{{position[p.key]}}}")
        self.in_order = used == list(range(len(keys)))
        self.text = "".join(pct) if self.in_order else "".join(fmt)

    def fill(self, values: tuple[str, ...]) -> str:
        return self.text % values if self.in_order else self.text.format(*values)


def _expand_matrix(ts: TaskSpec, keys: list[str], f: _Fixed, file: str, seen: dict[str, str]) -> list[Task]:
    """A matrix template without shards or sweep: the same tasks as :func:`_expand_one`,
    built from what they share. Each value is converted and shell-quoted once, names and
    commands are precompiled format strings, and each task is a copy of one prototype
    with its name, command and vars set (see :func:`rota.spec.model.clone_task`)."""
    assert ts.matrix is not None
    texts = [[value_text(v) for v in ts.matrix[k]] for k in keys]
    quoted = [[quote_value(x, f.scope.launch) for x in col] for col in texts]
    pairs = [[(k, x) for x in col] for k, col in zip(keys, texts, strict=True)]  # combos of these: vars
    name_t = _Template(f.name, keys)
    # A command slot that must always be quoted (see placeholders._guard) takes the general route.
    cmd_t = None if any(isinstance(p, Slot) and p.force_quote for p in f.command) else _Template(f.command, keys)
    name_pct = name_t.text if name_t.in_order else None
    cmd_pct = cmd_t.text if cmd_t is not None and cmd_t.in_order else None
    # Names are checked in full only when a control character could be in one.
    check_all = bool(_BAD_NAME.search(ts.name)) or any(_BAD_NAME.search(x) for col in texts for x in col)
    proto = Task(
        name=ts.name, command=ts.command, request=f.request, estimate_s=ts.estimate, retries=ts.retries,
        timeout_s=ts.timeout, env=f.env_items, priority=ts.priority, group=ts.name,
        enforce_gpu_memory=ts.enforce_gpu_memory,
        workdir=f.paths[0] if f.paths is not None else ".",
        outputs=f.paths[1] if f.paths is not None else (),
        inputs=f.paths[2] if f.paths is not None else (),
        needs=f.needs if f.needs is not None else (),
    )
    varies = f.paths is None or f.needs is None or f.env_vary
    out: list[Task] = []
    combos = zip(itertools.product(*texts), itertools.product(*quoted), itertools.product(*pairs), strict=True)
    for raw, q, vars_ in combos:
        name = name_pct % raw if name_pct is not None else name_t.fill(raw)
        if not f.name_uses_var:  # no {var} in the name: suffix the values so names stay unique
            name = name + "-" + "-".join(raw)
        if check_all or len(name) > 300:
            _check_name(name, file, ts.name)
        if name in seen:
            _duplicate(name, seen[name], ts.name, file)
        seen[name] = ts.name
        extra: dict[str, object] | None = None
        if varies:
            extra = {}
            values = dict(zip(keys, raw, strict=True))
            if f.paths is None:
                extra["workdir"], extra["outputs"], extra["inputs"] = f.fill_paths(values, "", name)
            if f.needs is None:
                extra["needs"] = f.fill_needs(values, "")
            if f.env_vary:
                extra["env"] = tuple(sorted(f.fill_env(values, "", name).items()))
        if cmd_pct is not None:
            command = cmd_pct % q
        elif cmd_t is not None:
            command = cmd_t.fill(q)
        else:
            command = fill(f.command, dict(zip(keys, raw, strict=True)), "", name, launch=f.scope.launch)
        out.append(clone_task(proto, name, command, vars_, extra))
    return out


def _duplicate(name: str, first: str, template: str, file: str) -> None:
    origin = f" (one from {first!r}, one from {template!r})" if first != template else ""
    raise SpecError(
        f"two tasks are named {name!r}{origin}; "
        "add a matrix variable to the name, e.g. 'train-{seed}'",
        file=file, task=template, field="name",
    )


def _expand_one(ts: TaskSpec, values: dict[str, str], root: str, f: _Fixed) -> list[Task]:
    """The tasks of one matrix combination (``values``): one per shard and sweep trial."""
    common = dict(
        request=f.request,
        estimate_s=ts.estimate,
        retries=ts.retries,
        timeout_s=ts.timeout,
        priority=ts.priority,
        group=ts.name,
        enforce_gpu_memory=ts.enforce_gpu_memory,
    )
    results: list[Task] = []
    shard_count = ts.shards or 0
    shard_range = range(shard_count) if shard_count else [None]
    for shard in shard_range:
        s = "" if shard is None else str(shard)
        name = fill(f.name, values, s, "")
        if values and not f.name_uses_var:  # no {var} in the name: suffix the values so names stay unique
            name = name + "-" + "-".join(values.values())
        if shard is not None and not f.name_uses_shard:
            name = f"{name}-{shard}"
        cmd = fill(f.command, values, s, name, launch=f.scope.launch)
        workdir, outputs, inputs = f.paths if f.paths is not None else f.fill_paths(values, s, name)
        vars_ = dict(values)
        env = f.fill_env(values, s, name)
        if shard is not None:
            vars_.setdefault("shard", s)  # a matrix variable named 'shard' keeps its value
            env = {**env, "ROTA_SHARD_INDEX": s, "ROTA_SHARD_COUNT": str(shard_count)}
        env_items = f.env_items if env is f.env else tuple(sorted(env.items()))
        fields = dict(
            command=cmd, env=env_items, vars=tuple(vars_.items()), workdir=workdir, outputs=outputs, inputs=inputs,
            needs=f.fill_needs(values, s), shard=(shard, shard_count) if shard is not None else None, **common,
        )
        if ts.sweep is not None:
            for trial in range(ts.sweep.trials):
                results.append(Task(name=f"{name}-trial-{trial}", sweep=ts.sweep, trial=trial, **fields))  # type: ignore[arg-type]
            continue
        results.append(Task(name=name, **fields))  # type: ignore[arg-type]
    return results
