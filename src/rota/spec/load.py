"""Load a spec file: YAML -> validated ``SpecFile`` -> expanded, checked ``Spec``.

Every problem becomes one :class:`~rota.errors.SpecError` naming the file, the
task, the field and (where known) the line. Nothing here writes anything.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rota.errors import SpecError
from rota.spec.model import DefaultsSpec, SpecFile, Task, TaskSpec, check_command, check_env_entry

TASK_KEYS = tuple(TaskSpec.model_fields)
DEFAULT_KEYS = tuple(DefaultsSpec.model_fields)
TOP_KEYS = tuple(SpecFile.model_fields)
MAX_SPEC_BYTES = 16 * 2**20
# Memory a task costs the controller of a run, measured: RSS of `rota run` a few seconds in was
# 48 MB with 5,000 short tasks and 242 MB with 100,000 (about 2.0 KB a task; 770 B of it the
# expanded tasks and their critical-path ranks, by tracemalloc). Rounded up for longer names,
# commands and the records a run adds.
BYTES_PER_TASK = 3 * 1024
MEMORY_CHECK_MIN_TASKS = 50_000  # below this a spec always fits: no need to ask the OS
PROGRESS_MIN_TASKS = 200_000  # expanding this many takes seconds: say so on stderr
PROGRESS_EVERY_S = 5.0
# Characters a task name must not hold: Unicode categories Cc (C0 and C1 controls: \x85 is a
# line break to some terminals), Zl and Zp (U+2028, U+2029), and lone surrogates (not UTF-8).
_BAD_NAME_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


@dataclass(frozen=True)
class Spec:
    """A loaded, expanded and validated spec. ``tasks`` are in file order."""

    path: str
    root: str  # folder of the spec file; relative paths resolve here
    file: SpecFile
    tasks: tuple[Task, ...]

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)

    def only(self, patterns: Sequence[str], also: Sequence[str] = ()) -> Spec:
        """This spec cut down to the tasks matching ``patterns`` (globs) and the tasks they need.

        ``also``: exact task names kept too. SpecError if a pattern matches no task.
        """
        from rota.spec.graph import select

        return replace(self, tasks=tuple(select(self.tasks, patterns, file=self.path, also=also)))


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key."""


# The same on libyaml's parser, where PyYAML was built with it: 7x faster on a long matrix. It is
# tried first; text it refuses goes through the pure-Python parser, which accepts a few spellings
# libyaml does not (``{seed:[1, 2]}``) and gives the errors users see.
_CLineLoader: Any = None
if getattr(yaml, "CSafeLoader", None) is not None:
    class _CLineLoader(yaml.CSafeLoader):  # type: ignore[no-redef,misc,name-defined]
        """CSafeLoader that remembers the line of every mapping key."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    mapping = yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep=deep)
    lines = {}
    for key_node, _ in node.value:
        try:
            lines[loader.construct_object(key_node)] = key_node.start_mark.line + 1
        except Exception:  # unhashable keys are reported by validation
            pass
    mapping_with_lines = _LinedDict(mapping)
    mapping_with_lines.lines = lines
    mapping_with_lines.line = node.start_mark.line + 1
    return mapping_with_lines


class _LinedDict(dict):  # type: ignore[type-arg]
    lines: dict[Any, int]
    line: int


def _checked(construct: Any) -> Any:
    """A scalar constructor whose bad values (``!!int x``, ``!!timestamp 2001-99-99``, an implicit
    ``2001-02-30``) raise a marked YAML error, not a bare ValueError or KeyError."""

    def checked(loader: Any, node: yaml.Node) -> Any:
        try:
            return construct(loader, node)
        except yaml.YAMLError:
            raise
        except Exception as e:  # noqa: BLE001 - ValueError, KeyError, AttributeError, OverflowError
            tag = node.tag.rsplit(":", 1)[-1]
            why = f": {e}" if tag == "timestamp" else ""  # "month must be in 1..12"; int()'s own words add nothing
            raise yaml.constructor.ConstructorError(
                None, None, f"{str(node.value)[:60]!r} is not a valid {tag}{why}", node.start_mark) from None

    return checked


_SCALAR_TAGS = ("bool", "int", "float", "timestamp", "binary", "null", "str")
for _loader in (_LineLoader, _CLineLoader):
    if _loader is not None:
        _loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
        for _tag in _SCALAR_TAGS:
            _full = "tag:yaml.org,2002:" + _tag
            _loader.add_constructor(_full, _checked(yaml.constructor.SafeConstructor.yaml_constructors[_full]))


def _suggest(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; known keys: {', '.join(sorted(allowed))}"


def _line_of(obj: Any, key: Any = None) -> int | None:
    if isinstance(obj, _LinedDict):
        if key is not None and key in obj.lines:
            return obj.lines[key]
        return obj.line
    return None


def parse_yaml(text: str, file: str) -> Any:
    if _CLineLoader is not None:
        try:
            return yaml.load(text, Loader=_CLineLoader)  # noqa: S506 - CSafeLoader subclass
        except (yaml.YAMLError, RecursionError):
            pass
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        problem = (e.problem or str(e)).strip()
        kind = "YAML value error" if isinstance(e, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise SpecError(f"{kind}: {problem}", file=file, line=line) from None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        raise SpecError(f"character #x{e.character:04x} is not allowed in YAML", file=file, line=line) from None
    except yaml.YAMLError as e:
        raise SpecError("YAML error: " + " ".join(str(e).split()), file=file) from None
    except RecursionError:
        raise SpecError("YAML is nested too deeply", file=file) from None
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:  # a constructor not wrapped above
        raise SpecError(f"YAML value error: {type(e).__name__}: {e}"[:300], file=file) from None


def _pydantic_error(e: ValidationError, file: str, raw: Any, task: str | None, base: Mapping[str, Any] | None) -> SpecError:
    err = e.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    field = ".".join(loc) if loc else None
    line = _line_of(base, loc[0]) if base is not None and loc else _line_of(base)
    if err["type"] == "extra_forbidden" and loc:
        allowed = TASK_KEYS if task is not None else TOP_KEYS
        msg = f"unknown key {loc[-1]!r}{_suggest(loc[-1], allowed)}"
    elif err["type"] == "missing":
        msg = "is required"
    else:
        found = err.get("input")
        # A validator's own message (type value_error) says what it found where that helps.
        if not isinstance(found, dict | list) and err["type"] != "value_error" and "found" not in msg:
            text = repr(found)
            msg = f"{msg} (found {text[:60] + '...' if len(text) > 64 else text})"
    return SpecError(msg, file=file, task=task, field=field, line=line)


def load_spec(
    path: str | os.PathLike[str],
    *,
    text: str | None = None,
    max_tasks: int | None = None,
) -> Spec:
    """Read, validate and expand a spec file. Raises SpecError, writes nothing."""
    from rota.spec.expand import expand_tasks
    from rota.spec.graph import check_graph

    p = Path(path)
    file = str(path)
    if text is None:
        try:
            if p.stat().st_size > MAX_SPEC_BYTES:
                raise SpecError(f"spec file is larger than {MAX_SPEC_BYTES // 2**20} MB", file=file)
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SpecError("no such file; pass the path of a rota.yaml", file=file) from None
        except IsADirectoryError:
            inside = p / "rota.yaml"
            hint = f"did you mean {str(inside)!r}?" if inside.is_file() else "pass the path of a rota.yaml inside it"
            raise SpecError(f"is a folder, not a spec file; {hint}", file=file) from None
        except UnicodeDecodeError as e:
            raise SpecError(f"not UTF-8 text ({e.reason} at byte {e.start})", file=file) from None
        except OSError as e:
            raise SpecError(f"cannot read: {e.strerror}", file=file) from None
    if "\x00" in text:
        raise SpecError("contains a NUL byte; a spec is YAML text", file=file)
    raw = parse_yaml(text, file)
    if raw is None:
        raise SpecError("is empty; expected a mapping with a 'tasks:' list", file=file)
    if isinstance(raw, list):
        raw = {"tasks": raw}
    if not isinstance(raw, dict):
        raise SpecError(f"expected a mapping with a 'tasks:' list, found {type(raw).__name__}", file=file)
    for key in raw:
        if key not in TOP_KEYS:
            raise SpecError(
                f"unknown top-level key {key!r}{_suggest(str(key), TOP_KEYS)}", file=file, line=_line_of(raw, key)
            )
    if "tasks" not in raw:
        raise SpecError("no 'tasks:' list", file=file)
    if not isinstance(raw["tasks"], list) or not raw["tasks"]:
        raise SpecError("'tasks:' must be a non-empty list of tasks", file=file, line=_line_of(raw, "tasks"))
    try:
        spec_file = SpecFile.model_validate(raw)
    except ValidationError as e:
        raise _pydantic_error(e, file, raw, None, raw) from None
    except RecursionError:
        raise SpecError("spec is nested too deeply", file=file) from None
    task_specs: list[tuple[TaskSpec, int | None]] = []
    defaults = spec_file.defaults.model_dump(exclude_unset=True)
    for i, item in enumerate(raw["tasks"]):
        label = f"#{i + 1}"
        if not isinstance(item, dict):
            raise SpecError(
                f"each task must be a mapping with name and command, found {type(item).__name__}",
                file=file, task=label, line=_line_of(raw["tasks"]) if isinstance(raw["tasks"], _LinedDict) else None,
            )
        name = item.get("name")
        if isinstance(name, str) and name:
            label = name
        for key in item:
            if key not in TASK_KEYS:
                raise SpecError(
                    f"unknown key {key!r}{_suggest(str(key), TASK_KEYS)}",
                    file=file, task=label, field=str(key), line=_line_of(item, key),
                )
        merged = {**defaults, **item}
        if "env" in defaults and "env" in item and isinstance(item["env"], dict):
            merged["env"] = {**defaults["env"], **item["env"]}
        try:
            ts = TaskSpec.model_validate(merged)
        except ValidationError as e:
            raise _pydantic_error(e, file, item, label, item) from None
        task_specs.append((ts, _line_of(item)))
    root = str(p.resolve().parent)
    limit = max_tasks if max_tasks is not None else spec_file.max_tasks
    count = count_tasks(ts for ts, _ in task_specs)
    if limit >= count >= MEMORY_CHECK_MIN_TASKS:
        _check_memory(count, task_specs, file)
    done = threading.Event()
    if count >= PROGRESS_MIN_TASKS:
        threading.Thread(target=_progress, args=(file, count, done), daemon=True).start()
    try:
        tasks = expand_tasks(task_specs, file=file, root=root, max_tasks=limit)
        check_launchable(tasks, file)
        tasks = check_graph(tasks, file=file)
    finally:
        done.set()
    return Spec(path=str(p.resolve()), root=root, file=spec_file, tasks=tuple(tasks))


def count_tasks(specs: Iterable[TaskSpec]) -> int:
    """How many tasks ``specs`` expand into (matrix x shards x sweep trials), without expanding."""
    total = 0
    for ts in specs:
        count = math.prod(len(v) for v in ts.matrix.values()) if ts.matrix else 1
        total += count * (ts.shards or 1) * (ts.sweep.trials if ts.sweep is not None else 1)
    return total


def _check_memory(count: int, specs: Sequence[tuple[TaskSpec, int | None]], file: str) -> None:
    """Refuse a spec whose run would not fit in this machine's available memory (before expanding it)."""
    from rota.spec.units import format_size

    need = count * BYTES_PER_TASK
    available = available_memory_bytes()
    if need > available:
        biggest = max(specs, key=lambda s: count_tasks([s[0]]))
        raise SpecError(
            f"expands to {count:,} tasks; running them needs about {format_size(need)} of memory "
            f"({BYTES_PER_TASK // 1024} KB a task) but {format_size(available)} is available here; "
            "split the spec into smaller ones or run it on a machine with more memory",
            file=file, task=biggest[0].name, field="matrix", line=biggest[1],
        )


def available_memory_bytes() -> int:
    """Memory this process can still take: the least of the machine's available RAM, what its
    cgroup (a container, a SLURM job) leaves, and its own address-space limit (``ulimit -v``)."""
    import resource

    import psutil

    available = int(psutil.virtual_memory().available)
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        available = min(available, soft - int(psutil.Process().memory_info().vms))
    return max(available, 0)


def _progress(file: str, count: int, done: threading.Event) -> None:
    started = time.monotonic()
    while not done.wait(PROGRESS_EVERY_S):
        print(f"rota: {file}: expanding {count:,} tasks ({time.monotonic() - started:.0f}s)", file=sys.stderr,
              flush=True)


def check_launchable(tasks: Sequence[Task], file: str) -> None:
    """SpecError for the first expanded task that could not be launched: a name with a control
    or line-separator character, a command with a NUL byte or too long for ``bash -c``, a NUL
    byte in a path or an env value.

    Matrix values are filled in by now, so this catches what the template alone does not.
    """
    env_seen: tuple[tuple[str, str], ...] = ()
    for t in tasks:
        bad = None if t.name.isprintable() else _BAD_NAME_CHARS.search(t.name)  # C speed on usual names
        if bad:
            ch = bad.group(0)
            raise SpecError(
                f"task name {t.name!r} contains U+{ord(ch):04X} ({_char_kind(ch)}); names appear in logs, "
                "paths and tables: remove it (from the name or the matrix value)",
                file=file, task=t.group or t.name, field="name",
            )
        why = check_command(t.command)
        if why is not None:
            raise SpecError(why, file=file, task=t.name, field="command")
        if "\x00" in t.workdir or any("\x00" in path for path in (*t.outputs, *t.inputs)):
            raise SpecError("a path (workdir, outputs or inputs) has a NUL byte, which no file name can hold",
                            file=file, task=t.name, field="workdir")
        if t.env is not env_seen:  # expansions of a template share one env tuple unless {var} fills it
            env_seen = t.env
            for key, value in t.env:
                why = check_env_entry(key, value, rota_may_set=True)
                if why is not None:
                    raise SpecError(why, file=file, task=t.name, field=f"env.{key}")


def _char_kind(ch: str) -> str:
    if ch in "\u2028\u2029":
        return "a line or paragraph separator"
    if "\ud800" <= ch <= "\udfff":
        return "a lone surrogate"
    return "a control character"
