"""The placeholder language of names, commands, needs, paths and env values.

A placeholder is a name in braces: ``{seed}``. A name is an identifier, or
``rota.`` and an identifier (the built-ins' own spelling, never shadowed). What
it stands for, in this order: a matrix variable; a sweep parameter (in
``command`` only); a built-in (:data:`BUILTINS`). Anything else is bad input.

Literal braces: ``{{name}}`` is the literal text ``{name}``. Every other brace is
kept as written, so ``${HOME}``, ``${VAR:-x}`` (bash), ``awk '{print $1}'`` and
JSON (``'{"a": {"b": {seed}}}'``) need no escaping. A brace run around a name
other than ``{x}``, ``{{x}}`` or ``{x}}...`` (e.g. ``{{{x}}}``) is refused as
ambiguous.

Commands are filled in two passes. :func:`compile_field` (at expansion) fills
matrix variables and the shard index and leaves, as written, the launch-time
placeholders (``{out}``, ``{task}``, ``{run}``, ``{attempt}``, their ``rota.``
forms, sweep parameters) and the escapes of their names (``{{out}}``);
:func:`render` (at launch) fills the former and unescapes the latter. What the
first pass inserts is never filled by the second (see :func:`quote_value`).
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Collection, Mapping
from typing import NamedTuple

from rota.errors import SpecError

NAMESPACE = "rota."
_NAME = r"(?:rota\.)?[^\W\d]\w*"  # an identifier, as str.isidentifier() (mostly) says
# A brace run around a name; not bash's ${NAME}, and only from the run's first brace.
BRACES = re.compile(r"(?<![$\{])(\{+)(" + _NAME + r")(\}+)")

# Built-in placeholders: name -> (what it is, its environment variable).
BUILTINS: dict[str, tuple[str, str]] = {
    "out": ("the task's output folder", "ROTA_OUT"),
    "task": ("the task's name", "ROTA_TASK"),
    "run": ("the run's id", "ROTA_RUN"),
    "attempt": ("the attempt number, from 1", "ROTA_ATTEMPT"),
    "shard": ("the shard index, from 0", "ROTA_SHARD_INDEX"),
}
LAUNCH_VARS = frozenset({"out", "task", "run", "attempt"})  # filled by render() at launch
LAUNCH_NAMES = LAUNCH_VARS | {NAMESPACE + k for k in LAUNCH_VARS}

# Fields, and the built-ins each can use ("task" in paths and env is filled at expansion).
COMMAND = "command"
_BUILTINS_IN: dict[str, frozenset[str]] = {
    "name": frozenset({"shard"}),
    "needs": frozenset({"shard"}),
    "workdir": frozenset({"shard", "task"}),
    "outputs": frozenset({"shard", "task"}),
    "inputs": frozenset({"shard", "task"}),
    "env": frozenset({"shard", "task"}),
    COMMAND: frozenset(BUILTINS),
}

# Slot kinds filled at expansion.
VAR, SHARD, TASK = "var", "shard", "task"


class Slot(NamedTuple):
    """A value filled at expansion: a matrix variable (``key``), the shard index or the task name."""

    kind: str
    key: str = ""
    force_quote: bool = False  # command only: quote even a shell-safe value (see _guard)


Part = str | Slot


class Scope:
    """What a template's placeholders may name."""

    def __init__(self, matrix: Collection[str], *, sharded: bool, params: Collection[str]) -> None:
        self.matrix = frozenset(matrix)
        self.sharded = sharded
        self.params = frozenset(params)
        # Names render() fills in this template's commands.
        self.launch = LAUNCH_NAMES | self.params

    def known(self, field: str) -> list[str]:
        """Every name valid in ``field``, for messages."""
        names = sorted(self.matrix)
        if field == COMMAND:
            names += sorted(self.params - self.matrix)
        builtins = [b for b in BUILTINS if b in _BUILTINS_IN[field] and (b != "shard" or self.sharded)]
        names += [b for b in builtins if b not in self.matrix and b not in self.params]
        return names + [NAMESPACE + b for b in builtins]

    def resolve(
        self, name: str, field: str, *, file: str, task: str, label: str, line: int | None = None
    ) -> Slot | None:
        """The slot ``name`` fills in ``field`` (None: left for launch); SpecError if none."""
        builtin = name[len(NAMESPACE):] if name.startswith(NAMESPACE) else None
        if builtin is None:
            if name in self.matrix:
                return Slot(VAR, name)
            if name in self.params:
                if field == COMMAND:
                    return None
                raise SpecError(
                    f"'{{{name}}}' is a sweep parameter, filled only in 'command' "
                    f"(a trial also gets it as $ROTA_PARAM_{name.upper()})",
                    file=file, task=task, field=label, line=line,
                )
            if name in BUILTINS:
                builtin = name
        if builtin not in BUILTINS:
            raise SpecError(self._unknown(name, field), file=file, task=task, field=label, line=line)
        what, env = BUILTINS[builtin]
        if builtin not in _BUILTINS_IN[field]:
            where = "in 'command'" if builtin in LAUNCH_VARS else "in 'command', paths and env values"
            if builtin == "task":
                where = "in 'command', 'workdir', 'outputs', 'inputs' and env values (a name cannot hold itself)"
            raise SpecError(
                f"'{{{name}}}' ({what}) can be used only {where}; a command also has it as ${env}",
                file=file, task=task, field=label, line=line,
            )
        if builtin == "shard":
            if not self.sharded:
                raise SpecError(
                    f"'{{{name}}}' ({what}) is defined only for a task with 'shards:'",
                    file=file, task=task, field=label, line=line,
                )
            return Slot(SHARD)
        if field == COMMAND:
            return None
        return Slot(TASK)

    def _unknown(self, name: str, field: str) -> str:
        known = self.known(field)
        bare = name[len(NAMESPACE):] if name.startswith(NAMESPACE) else None
        if bare is not None and bare in known:  # {rota.seed}: the namespace holds only built-ins
            close = [bare]
        else:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean '{{{close[0]}}}'?" if close else ""
        kinds = "a matrix variable, a sweep parameter or a built-in" if self.params and field == COMMAND \
            else "a matrix variable or a built-in"
        # Built-ins by their bare name where it is not shadowed, else as rota.<name>.
        shown = [k for k in known if not k.startswith(NAMESPACE) or k[len(NAMESPACE):] not in known]
        listed = ", ".join("{" + k + "}" for k in shown) or "none"
        return (
            f"'{{{name}}}' is not {kinds}{hint} (known here: {listed}); "
            f"write '{{{{{name}}}}}' for the literal text '{{{name}}}'"
        )


def compile_field(
    text: str, scope: Scope, field: str, *, file: str, task: str, label: str | None = None, line: int | None = None
) -> list[Part]:
    """``text`` as literal strings and :class:`Slot` s, every placeholder checked.

    Outside ``command``: literals are final (escapes resolved). In ``command``:
    literals are :func:`render`'s input (launch-time placeholders and their
    escapes kept as written). Adjacent literals are merged; SpecError on an
    unknown or misplaced placeholder or ambiguous braces.
    """
    label = label or field
    if "{" not in text:
        return [text] if text else []
    command = field == COMMAND
    parts: list[Part] = []
    lit: list[str] = []
    end = 0
    for m in BRACES.finditer(text):
        lit.append(text[end:m.start()])
        end = m.end()
        opens, name, closes = len(m.group(1)), m.group(2), len(m.group(3))
        if opens == 2 and closes == 2:  # an escape: the literal text {name}
            lit.append(m.group(0) if command and name in scope.launch else "{" + name + "}")
            continue
        if opens != 1:
            raise SpecError(
                f"ambiguous braces {m.group(0)!r}: write '{{{name}}}' for its value, "
                f"'{{{{{name}}}}}' for the literal text '{{{name}}}'",
                file=file, task=task, field=label, line=line,
            )
        slot = scope.resolve(name, field, file=file, task=task, label=label, line=line)
        if slot is None:  # filled at launch
            lit.append(m.group(0))
            continue
        if lit:
            parts.append("".join(lit))
            lit = []
        parts.append(slot)
        lit.append("}" * (closes - 1))
    lit.append(text[end:])
    tail = "".join(lit)
    if tail:
        parts.append(tail)
    return _guard(parts) if command else parts




def _guard(parts: list[Part]) -> list[Part]:
    """Mark the slots whose unquoted value could join the text around it into a new
    placeholder for :func:`render` (``{o{v}}`` with ``v=ut``): an open brace to the
    left and a close brace to the right, reached over name characters and other
    slots. Their values are always quoted (``'ut'``: same shell word, no name)."""

    def reaches(seq: list[Part], brace: str, backwards: bool) -> bool:
        for p in seq:
            if isinstance(p, Slot):
                continue
            for ch in reversed(p) if backwards else p:
                if ch == brace:
                    return True
                if not (ch.isalnum() or ch in "_."):
                    return False
        return False

    out = list(parts)
    for i, p in enumerate(parts):
        if isinstance(p, Slot) and reaches(parts[:i][::-1], "{", True) and reaches(parts[i + 1:], "}", False):
            out[i] = p._replace(force_quote=True)
    return out


def literal_text(parts: list[Part]) -> str | None:
    """The text of ``parts`` when it holds no slot."""
    if all(isinstance(p, str) for p in parts):
        return "".join(parts)  # type: ignore[arg-type]
    return None


def quote_value(value: str, launch: Collection[str] = LAUNCH_NAMES, *, force: bool = False) -> str:
    """A value as one literal shell word that :func:`render` leaves as it is: a
    ``{name}`` in it that render would fill becomes ``{{name}}`` (render gives back
    ``{name}``); in the rarer brace runs render could read, the brace is split from
    the name by ``''`` (an empty part of the word inside the value's single quotes)."""
    q = shlex.quote(value)
    if force and q == value:
        q = "'" + value + "'"
    if "{" not in q:
        return q

    def protect(m: re.Match[str]) -> str:
        name = m.group(2)
        if name not in launch:
            return m.group(0)
        if len(m.group(1)) == 1 and len(m.group(3)) == 1:
            return "{{" + name + "}}"
        return m.group(1) + "''" + name + m.group(3)

    return BRACES.sub(protect, q)


def fill(
    parts: list[Part], values: Mapping[str, str], shard: str, task: str, *, launch: Collection[str] | None = None
) -> str:
    """Join ``parts`` with the slots filled; for a command (``launch``: the names render
    fills there) each value shell-quoted by :func:`quote_value`."""
    out: list[str] = []
    for p in parts:
        if isinstance(p, str):
            out.append(p)
            continue
        v = values[p.key] if p.kind == VAR else shard if p.kind == SHARD else task
        out.append(v if launch is None else quote_value(v, launch, force=p.force_quote))
    return "".join(out)


def render(command: str, values: Mapping[str, str]) -> str:
    """Launch-time pass: fill ``{name}`` for the names in ``values`` (shell-quoted), turn
    ``{{name}}`` into the literal ``{name}``, and leave everything else as written."""
    if "{" not in command:
        return command

    def repl(m: re.Match[str]) -> str:
        name = m.group(2)
        if name not in values:
            return m.group(0)
        opens, closes = len(m.group(1)), len(m.group(3))
        if opens == 2 and closes == 2:
            return "{" + name + "}"
        if opens == 1:
            return shlex.quote(values[name]) + "}" * (closes - 1)
        return m.group(0)

    return BRACES.sub(repl, command)


def launch_values(
    task: str, out: str, run: str, attempt: str, params: Mapping[str, str] | None
) -> dict[str, str]:
    """What :func:`render` fills at launch: the built-ins (bare names lose to a sweep
    parameter of the same name; the ``rota.`` forms never do) and the parameters."""
    builtin = {"out": out, "task": task, "run": run, "attempt": attempt}
    values = dict(builtin)
    values.update({NAMESPACE + k: v for k, v in builtin.items()})
    if params:
        values.update({k: v for k, v in params.items() if not k.startswith(NAMESPACE)})
    return values
