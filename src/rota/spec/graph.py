"""The dependency graph: resolve ``needs``, find cycles, rank by critical path.

A ``needs`` entry matches, in order: an expanded task's exact name; a spec
task's name (all its matrix/shard/sweep expansions); a glob (``train-*``).
A task never needs itself through a glob.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from operator import attrgetter

from rota.errors import SpecError
from rota.spec.model import Task

DEFAULT_ESTIMATE_S = 60.0
_PLACEHOLDER_PART = re.compile(r"[-_.:/]?\{(?:rota\.)?[A-Za-z_][A-Za-z0-9_]*\}")


def resolve_needs(tasks: Sequence[Task], *, file: str) -> list[Task]:
    names = {t.name for t in tasks}
    by_group: dict[str, list[str]] = {}
    bases: dict[str, str] = {}  # group -> its name without placeholders, once per group
    for t in tasks:
        by_group.setdefault(t.group, []).append(t.name)
        base = bases.get(t.group)
        if base is None:
            base = bases[t.group] = _PLACEHOLDER_PART.sub("", t.group)
        if base and base != t.group and base not in names:
            by_group.setdefault(base, []).append(t.name)
    ordered = [t.name for t in tasks]
    out: list[Task] = []
    cache: dict[str, list[str]] = {}
    for t in tasks:
        resolved: list[str] = []
        for pattern in t.needs:
            if pattern in names:
                matches = [pattern]
            elif pattern in by_group:
                matches = by_group[pattern]
            else:
                if pattern not in cache:
                    cache[pattern] = fnmatch.filter(ordered, pattern) if any(c in pattern for c in "*?[") else []
                matches = cache[pattern]
            matches = [m for m in matches if m != t.name]
            if not matches:
                raise SpecError(
                    f"needs {pattern!r}, which matches no task; check the name or the glob",
                    file=file, task=t.name, field="needs",
                )
            resolved.extend(matches)
        out.append(replace(t, needs=tuple(dict.fromkeys(resolved))) if t.needs else t)
    return out


def topo_order(tasks: Sequence[Task], *, file: str = "spec") -> list[str]:
    """Kahn's order; raise SpecError naming one cycle if there is one."""
    indeg = {t.name: len(t.needs) for t in tasks}
    users: dict[str, list[str]] = {t.name: [] for t in tasks}
    for t in tasks:
        for n in t.needs:
            users[n].append(t.name)
    queue = [name for name, d in indeg.items() if d == 0]
    order: list[str] = []
    while queue:
        name = queue.pop()
        order.append(name)
        for u in users[name]:
            indeg[u] -= 1
            if indeg[u] == 0:
                queue.append(u)
    if len(order) != len(tasks):
        cycle = _find_cycle({t.name: t.needs for t in tasks if indeg[t.name] > 0})
        raise SpecError(
            "dependency cycle: " + " -> ".join(cycle), file=file, task=cycle[0], field="needs"
        )
    return order


def _find_cycle(needs: Mapping[str, Sequence[str]]) -> list[str]:
    color: dict[str, int] = {}
    for start in needs:
        if color.get(start):
            continue
        stack = [(start, iter(needs[start]))]
        path = [start]
        color[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next((n for n in it if n in needs), None)
            if nxt is None:
                color[node] = 2
                stack.pop()
                path.pop()
                continue
            if color.get(nxt) == 1:
                i = path.index(nxt)
                return path[i:] + [nxt]
            if not color.get(nxt):
                color[nxt] = 1
                stack.append((nxt, iter(needs[nxt])))
                path.append(nxt)
    return list(needs)[:1]


def critical_path_ranks(
    tasks: Sequence[Task], order: Sequence[str] | None = None, estimates: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Longest estimated time from the start of each task to the end of the DAG.

    ``estimates`` (name -> seconds) overrides the tasks' own (learned history, say).
    """
    by_name = {t.name: t for t in tasks}
    if order is None:
        order = topo_order(tasks)
    users: dict[str, list[str]] = {t.name: [] for t in tasks}
    for t in tasks:
        for n in t.needs:
            users[n].append(t.name)
    rank: dict[str, float] = {}
    for name in reversed(order):
        t = by_name[name]
        est = estimates.get(name) if estimates else None
        if est is None:
            est = t.estimate_s if t.estimate_s is not None else DEFAULT_ESTIMATE_S
        rank[name] = est + max((rank[u] for u in users[name]), default=0.0)
    return rank


def critical_path(tasks: Sequence[Task], durations: Mapping[str, float]) -> list[str]:
    """Names along the longest path, first to last, by the given durations."""
    by_name = {t.name: t for t in tasks}
    order = topo_order(tasks)
    finish: dict[str, float] = {}
    prev: dict[str, str | None] = {}
    for name in order:
        t = by_name[name]
        best, arg = 0.0, None
        for n in t.needs:
            if finish[n] > best:
                best, arg = finish[n], n
        finish[name] = best + durations.get(name, 0.0)
        prev[name] = arg
    if not finish:
        return []
    node: str | None = max(finish, key=lambda k: finish[k])
    path = []
    while node is not None:
        path.append(node)
        node = prev[node]
    return path[::-1]


def check_graph(tasks: Sequence[Task], *, file: str) -> list[Task]:
    """``tasks`` with ``needs`` resolved to task names; SpecError on a bad need or a cycle."""
    if not any(map(attrgetter("needs"), tasks)):  # nothing to resolve and no cycle possible
        return list(tasks)
    resolved = resolve_needs(tasks, file=file)
    topo_order(resolved, file=file)
    return resolved


def select(tasks: Sequence[Task], patterns: Sequence[str], *, file: str, also: Sequence[str] = ()) -> list[Task]:
    """The tasks named by ``patterns`` (globs, ``--only``) and every task they need, transitively.

    ``also``: exact names to keep as well (with their needs); names not among
    ``tasks`` are ignored. The result keeps the input order, with needs
    resolved, as ``check_graph`` returns them. A pattern that matches no task
    is a SpecError (a typo must not run nothing and say all succeeded).
    """
    by_name = {t.name: t for t in tasks}
    todo: list[str] = [n for n in also if n in by_name]
    for pattern in patterns:
        hits = [t.name for t in tasks if fnmatch.fnmatchcase(t.name, pattern)]
        if not hits:
            names = ", ".join(t.name for t in tasks[:3]) + (", ..." if len(tasks) > 3 else "")
            raise SpecError(f"--only {pattern!r} matches no task; the tasks are named {names} "
                            "(a glob: quote it so the shell does not expand it)", file=file)
        todo.extend(hits)
    chosen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in chosen:
            chosen.add(name)
            todo.extend(by_name[name].needs)
    return [t for t in tasks if t.name in chosen]
