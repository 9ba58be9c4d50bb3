"""Load a spec file: YAML -> validated ``SpecFile`` -> expanded, checked ``Spec``.

Every problem becomes one :class:`~rota.errors.SpecError` naming the file, the
task, the field and (where known) the line. Nothing here writes anything.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rota.errors import SpecError
from rota.spec.model import DefaultsSpec, SpecFile, Task, TaskSpec

TASK_KEYS = tuple(TaskSpec.model_fields)
DEFAULT_KEYS = tuple(DefaultsSpec.model_fields)
TOP_KEYS = tuple(SpecFile.model_fields)
MAX_SPEC_BYTES = 16 * 2**20


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


for _loader in (_LineLoader, _CLineLoader):
    if _loader is not None:
        _loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


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
        raise SpecError(f"YAML syntax error: {problem}", file=file, line=line) from None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        raise SpecError(f"character #x{e.character:04x} is not allowed in YAML", file=file, line=line) from None
    except yaml.YAMLError as e:
        raise SpecError("YAML error: " + " ".join(str(e).split()), file=file) from None
    except RecursionError:
        raise SpecError("YAML is nested too deeply", file=file) from None


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
        if not isinstance(found, dict | list):
            msg = f"{msg} (found {found!r})"
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
            raise SpecError("is a folder; pass the path of a rota.yaml inside it", file=file) from None
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
    tasks = expand_tasks(task_specs, file=file, root=root, max_tasks=limit)
    tasks = check_graph(tasks, file=file)
    return Spec(path=str(p.resolve()), root=root, file=spec_file, tasks=tuple(tasks))
