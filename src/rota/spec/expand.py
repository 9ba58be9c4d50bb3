"""Expand task templates (matrix, shards, sweeps) into concrete ``Task`` records.

``{var}`` in a name is replaced by the raw value; in a command by the
shell-quoted value, so a value with spaces, quotes or ``$`` arrives as one
literal argument. Only known placeholders are touched, so ``${HOME}`` and awk's
``{print $1}`` pass through. ``{out}`` (and a sweep's ``{param}``) are left for
launch time.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import shlex
from collections.abc import Mapping, Sequence

from rota.core.resources import Request
from rota.errors import SpecError
from rota.spec.model import Task, TaskSpec, clone_task

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
LAUNCH_VARS = frozenset({"out", "task", "run", "attempt"})
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f]")


def value_text(v: object) -> str:
    """How a matrix value is written into names, commands and env vars."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def substitute(template: str, values: Mapping[str, str], *, quote: bool) -> str:
    """Replace ``{name}`` for names in ``values``; leave every other brace alone."""

    def repl(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in values:
            return m.group(0)
        return shlex.quote(values[key]) if quote else values[key]

    return _PLACEHOLDER.sub(repl, template)


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
    """Expand every template; raise SpecError on duplicates or too many tasks."""
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
    out: list[Task] = []
    seen: dict[str, str] = {}
    for ts, _line in specs:
        matrix = ts.matrix or {}
        if matrix:
            for key in matrix:
                if key in LAUNCH_VARS or key == "shard":
                    raise SpecError(f"matrix variable {key!r} is reserved", file=file, task=ts.name, field="matrix")
        keys = list(matrix)
        fixed = _Fixed(ts, root)
        if keys and not ts.shards and ts.sweep is None:
            out.extend(_expand_matrix(ts, keys, fixed, root, file, seen))
            continue
        combos = itertools.product(*(matrix[k] for k in keys)) if keys else [()]
        for combo in combos:
            values = {k: value_text(v) for k, v in zip(keys, combo, strict=True)}
            for task in _expand_one(ts, values, root, fixed):
                _check_name(task.name, file, ts.name)
                if task.name in seen:
                    _duplicate(task.name, seen[task.name], ts.name, file)
                seen[task.name] = ts.name
                out.append(task)
    return out


class _Fixed:
    """What a template's expansions share, computed once (100,000-task matrices stay fast)."""

    def __init__(self, ts: TaskSpec, root: str) -> None:
        self.request = Request(
            gpus=ts.gpus,
            gpu_memory_bytes=ts.gpu_memory if ts.gpus else None,
            cpus=ts.cpus,
            memory_bytes=ts.memory or 0,
            devices=tuple(ts.devices) if ts.devices is not None else None,
        )
        self.env = {k: value_text(v) for k, v in ts.env.items()}
        self.env_items = tuple(sorted(self.env.items()))
        # Paths and needs without placeholders are the same for every expansion.
        self.paths_vary = any("{" in x for x in (ts.workdir or "", *ts.outputs, *ts.inputs))
        self.needs_vary = any("{" in n for n in ts.needs)
        self.paths = None if self.paths_vary else _paths(ts, {}, root)
        self.needs = None if self.needs_vary else tuple(ts.needs)


class _Template:
    """A template compiled for a tuple of values, one string per key of ``keys``, in
    order: :meth:`fill` gives exactly :func:`substitute`'s result. ``%``-formatting
    when the template uses every key once, in order (the usual name); else
    :meth:`str.format` with positions."""

    def __init__(self, template: str, keys: Sequence[str]) -> None:
        position = {k: i for i, k in enumerate(keys)}
        pct: list[str] = []
        fmt: list[str] = []
        used: list[int] = []
        end = 0
        for m in _PLACEHOLDER.finditer(template):
            text = template[end:m.start()]
            pct.append(text.replace("%", "%%"))
            fmt.append(text.replace("{", "{{").replace("}", "}}"))
            key = m.group(1)
            if key in position:
                used.append(position[key])
                pct.append("%s")
                fmt.append(f"{{{position[key]}}}")
            else:  # not a matrix variable ({out}, ${HOME}): literal
                pct.append(m.group(0).replace("%", "%%"))
                fmt.append("{{" + key + "}}")
            end = m.end()
        pct.append(template[end:].replace("%", "%%"))
        fmt.append(template[end:].replace("{", "{{").replace("}", "}}"))
        self.in_order = used == list(range(len(keys)))
        self.text = "".join(pct) if self.in_order else "".join(fmt)

    def fill(self, values: tuple[str, ...]) -> str:
        return self.text % values if self.in_order else self.text.format(*values)


def _expand_matrix(
    ts: TaskSpec, keys: list[str], fixed: _Fixed, root: str, file: str, seen: dict[str, str]
) -> list[Task]:
    """A matrix template without shards or sweep: the same tasks as :func:`_expand_one`,
    built from what they share. Each value is converted and shell-quoted once, names and
    commands are precompiled format strings, and each task is a copy of one prototype
    with its name, command and vars set (see :func:`rota.spec.model.clone_task`)."""
    assert ts.matrix is not None
    texts = [[value_text(v) for v in ts.matrix[k]] for k in keys]
    quoted = [[shlex.quote(x) for x in col] for col in texts]
    pairs = [[(k, x) for x in col] for k, col in zip(keys, texts, strict=True)]  # combos of these: vars
    name_t, cmd_t = _Template(ts.name, keys), _Template(ts.command, keys)
    name_pct = name_t.text if name_t.in_order else None
    cmd_pct = cmd_t.text if cmd_t.in_order else None
    # Names are checked in full only when a control character could be in one.
    check_all = bool(_BAD_NAME.search(ts.name)) or any(_BAD_NAME.search(x) for col in texts for x in col)
    proto = Task(
        name=ts.name, command=ts.command, request=fixed.request, estimate_s=ts.estimate, retries=ts.retries,
        timeout_s=ts.timeout, env=fixed.env_items, priority=ts.priority, group=ts.name,
        enforce_gpu_memory=ts.enforce_gpu_memory,
        workdir=fixed.paths[0] if fixed.paths is not None else ".",
        outputs=fixed.paths[1] if fixed.paths is not None else (),
        inputs=fixed.paths[2] if fixed.paths is not None else (),
        needs=fixed.needs if fixed.needs is not None else (),
    )
    varies = fixed.paths is None or fixed.needs is None
    out: list[Task] = []
    combos = zip(itertools.product(*texts), itertools.product(*quoted), itertools.product(*pairs), strict=True)
    for raw, q, vars_ in combos:
        name = name_pct % raw if name_pct is not None else name_t.fill(raw)
        if name == ts.name:  # no {var} in the name: suffix the values so names stay unique
            name = ts.name + "-" + "-".join(raw)
        if check_all or len(name) > 300:
            _check_name(name, file, ts.name)
        if name in seen:
            _duplicate(name, seen[name], ts.name, file)
        seen[name] = ts.name
        extra: dict[str, object] | None = None
        if varies:
            extra = {}
            values = dict(zip(keys, raw, strict=True))
            if fixed.paths is None:
                extra["workdir"], extra["outputs"], extra["inputs"] = _paths(ts, values, root)
            if fixed.needs is None:
                extra["needs"] = tuple(substitute(n, values, quote=False) for n in ts.needs)
        command = cmd_pct % q if cmd_pct is not None else cmd_t.fill(q)
        out.append(clone_task(proto, name, command, vars_, extra))
    return out


def _duplicate(name: str, first: str, template: str, file: str) -> None:
    origin = f" (one from {first!r}, one from {template!r})" if first != template else ""
    raise SpecError(
        f"two tasks are named {name!r}{origin}; "
        "add a matrix variable to the name, e.g. 'train-{seed}'",
        file=file, task=template, field="name",
    )


def _paths(ts: TaskSpec, values: dict[str, str], root: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    workdir = os.path.normpath(os.path.join(root, substitute(ts.workdir or ".", values, quote=False)))
    outputs = tuple(os.path.normpath(os.path.join(workdir, substitute(o, values, quote=False))) for o in ts.outputs)
    inputs = tuple(os.path.normpath(os.path.join(workdir, substitute(i, values, quote=False))) for i in ts.inputs)
    return workdir, outputs, inputs


def _expand_one(ts: TaskSpec, values: dict[str, str], root: str, fixed: _Fixed) -> list[Task]:
    base_name = substitute(ts.name, values, quote=False)
    if values and base_name == ts.name and len(ts.matrix or {}) > 0:
        # A matrix task whose name has no {var}: suffix the values so names stay unique.
        base_name = ts.name + "-" + "-".join(values.values())
    command = substitute(ts.command, values, quote=True)
    workdir, outputs, inputs = fixed.paths if fixed.paths is not None else _paths(ts, values, root)
    env = fixed.env
    common = dict(
        request=fixed.request,
        estimate_s=ts.estimate,
        retries=ts.retries,
        timeout_s=ts.timeout,
        priority=ts.priority,
        workdir=workdir,
        outputs=outputs,
        inputs=inputs,
        group=ts.name,
        enforce_gpu_memory=ts.enforce_gpu_memory,
        needs=fixed.needs if fixed.needs is not None else tuple(substitute(n, values, quote=False) for n in ts.needs),
    )
    results: list[Task] = []
    shard_count = ts.shards or 0
    shard_range = range(shard_count) if shard_count else [None]
    for shard in shard_range:
        name = base_name
        cmd = command
        vars_ = dict(values)
        t_env = env
        env_items = fixed.env_items
        if shard is not None:
            t_env = dict(env)
            sv = {"shard": str(shard)}
            if "{shard}" in ts.name:
                name = substitute(base_name, sv, quote=False)
            else:
                name = f"{base_name}-{shard}"
            cmd = substitute(cmd, sv, quote=True)
            vars_["shard"] = str(shard)
            t_env["ROTA_SHARD_INDEX"] = str(shard)
            t_env["ROTA_SHARD_COUNT"] = str(shard_count)
            env_items = tuple(sorted(t_env.items()))
        if ts.sweep is not None:
            for trial in range(ts.sweep.trials):
                results.append(
                    Task(
                        name=f"{name}-trial-{trial}",
                        command=cmd,
                        env=env_items,
                        vars=tuple(vars_.items()),
                        shard=(shard, shard_count) if shard is not None else None,
                        sweep=ts.sweep,
                        trial=trial,
                        **common,  # type: ignore[arg-type]
                    )
                )
            continue
        results.append(
            Task(
                name=name,
                command=cmd,
                env=env_items,
                vars=tuple(vars_.items()),
                shard=(shard, shard_count) if shard is not None else None,
                **common,  # type: ignore[arg-type]
            )
        )
    return results
