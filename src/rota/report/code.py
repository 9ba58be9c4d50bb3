"""The code behind the results: each task's latest attempt's code record (git commit, dirty and its
diff's hash, or its script's hash; written by the engine, :mod:`rota.engine.codever`) and the
warning that replicates of one group ran different code (an interval over seeds that mixes two
versions of the training script). Read-only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rota.report.model import TaskRow
from rota.store.sqlite import SqliteStore


def code_by_task(state_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Task name -> the code record of its latest attempt (tasks without one are left out)."""
    store = SqliteStore(Path(state_dir), readonly=True)
    try:
        return latest_codes(store.attempts())
    finally:
        store.close()


def latest_codes(attempts: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Task name -> the code record of its latest attempt that has one, from attempt rows
    (``task``, ``attempt``, ``code``: a dict or None)."""
    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    for a in attempts:
        code = a.get("code")
        if isinstance(code, dict) and a["attempt"] >= latest.get(a["task"], (-1, {}))[0]:
            latest[a["task"]] = (int(a["attempt"]), code)
    return {task: code for task, (_, code) in latest.items()}


def code_id(code: Mapping[str, Any] | None) -> str | None:
    """One short text that differs when the code differs: ``git:<commit12>`` (``+<diff12>`` when
    dirty) or ``script:<sha12>``; None without a record."""
    if not code:
        return None
    if code.get("kind") == "git":
        text = f"git:{str(code.get('commit', ''))[:12]}"
        if code.get("dirty"):
            text += f"+{str(code.get('diff_sha256') or '?')[:12]}"
        return text
    if code.get("kind") == "script":
        return f"script:{str(code.get('sha256', ''))[:12]}"
    return None


def code_text(code: Mapping[str, Any]) -> str:
    """A record in a few words for people: ``git 1a2b3c4d5e6f``, ``git 1a2b3c4d5e6f dirty (diff
    0a1b2c3d4e5f)`` (the diff kept in the state folder's ``diff_path``), ``script train.py
    0a1b2c3d4e5f``; the short hashes are :func:`code_id`'s."""
    if code.get("kind") == "git":
        text = f"git {str(code.get('commit', ''))[:12]}"
        if code.get("dirty"):
            text += f" dirty (diff {str(code.get('diff_sha256') or '?')[:12]})"
        return text
    if code.get("kind") == "script":
        return f"script {os.path.basename(str(code.get('path', '')))} {str(code.get('sha256', ''))[:12]}"
    return str(code.get("kind") or "unknown")


def code_versions(tasks: Iterable[TaskRow]) -> list[tuple[Mapping[str, Any], list[str]]]:
    """The distinct code versions (by :func:`code_id`) the tasks' latest attempts ran, in the order
    first seen, each with the names of its tasks; tasks without a record are left out."""
    out: dict[str, tuple[Mapping[str, Any], list[str]]] = {}
    for t in tasks:
        cid = code_id(t.code)
        if cid is not None and t.code is not None:
            out.setdefault(cid, (t.code, []))[1].append(t.name)
    return list(out.values())


@dataclass(frozen=True)
class CodeConflict:
    """Replicates of one group (``base``, and the values ``where`` of the ``by`` variables) whose
    succeeded tasks ran different code: ``versions`` is code id -> its task names."""

    base: str | None
    where: tuple[tuple[str, str], ...]
    versions: Mapping[str, list[str]]

    @property
    def label(self) -> str:
        where = " ".join(f"{k}={v}" for k, v in self.where)
        return f"{self.base or 'tasks'}" + (f" ({where})" if where else "")

    @property
    def message(self) -> str:
        parts = "; ".join(f"{cid}: {_names(names)}" for cid, names in self.versions.items())
        return f"warning: replicates of {self.label} ran different code: {parts}"


def code_conflicts(tasks: Sequence[TaskRow], codes: Mapping[str, Mapping[str, Any]],
                   by: Sequence[str]) -> list[CodeConflict]:
    """Each group of replicates (tasks of one spec task with equal ``by`` variables, as the report's
    groups over seeds) whose succeeded tasks ran different code, in first-seen order."""
    groups: dict[tuple[str | None, tuple[str, ...]], dict[str, list[str]]] = {}
    for t in tasks:
        if t.state not in ("succeeded", "cached"):
            continue
        cid = code_id(codes.get(t.name))
        if cid is None:
            continue
        key = (t.base, tuple(str(t.vars.get(v, "-")) for v in by))
        groups.setdefault(key, {}).setdefault(cid, []).append(t.name)
    return [CodeConflict(base, tuple(zip(by, values, strict=True)), versions)
            for (base, values), versions in groups.items() if len(versions) > 1]


def code_warnings(tasks: Sequence[TaskRow], codes: Mapping[str, Mapping[str, Any]], by: Sequence[str]) -> list[str]:
    """One line per group of replicates whose succeeded tasks ran different code (:func:`code_conflicts`),
    naming each version's tasks."""
    return [c.message for c in code_conflicts(tasks, codes, by)]


def _names(names: list[str], most: int = 4) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
