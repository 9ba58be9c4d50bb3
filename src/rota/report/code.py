"""The code behind the results: each task's latest attempt's code record (git commit, dirty and its
diff's hash, or its script's hash; written by the engine, :mod:`rota.engine.codever`) and the
warning that replicates of one group ran different code (an interval over seeds that mixes two
versions of the training script). Read-only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rota.report.model import TaskRow
from rota.store.sqlite import SqliteStore


def code_by_task(state_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Task name -> the code record of its latest attempt (tasks without one are left out)."""
    store = SqliteStore(Path(state_dir), readonly=True)
    try:
        latest: dict[str, tuple[int, dict[str, Any]]] = {}
        for a in store.attempts():
            code = a.get("code")
            if isinstance(code, dict) and a["attempt"] >= latest.get(a["task"], (-1, {}))[0]:
                latest[a["task"]] = (int(a["attempt"]), code)
        return {task: code for task, (_, code) in latest.items()}
    finally:
        store.close()


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


def code_warnings(tasks: Sequence[TaskRow], codes: Mapping[str, Mapping[str, Any]], by: Sequence[str]) -> list[str]:
    """One line per group of replicates (tasks of one spec task with equal ``by`` variables, as the
    report's groups over seeds) whose succeeded tasks ran different code, naming each version's tasks."""
    groups: dict[tuple[str | None, tuple[str, ...]], dict[str, list[str]]] = {}
    for t in tasks:
        if t.state not in ("succeeded", "cached"):
            continue
        cid = code_id(codes.get(t.name))
        if cid is None:
            continue
        key = (t.base, tuple(str(t.vars.get(v, "-")) for v in by))
        groups.setdefault(key, {}).setdefault(cid, []).append(t.name)
    out = []
    for (base, values), versions in groups.items():
        if len(versions) < 2:
            continue
        where = " ".join(f"{k}={v}" for k, v in zip(by, values, strict=True))
        label = f"{base or 'tasks'}" + (f" ({where})" if where else "")
        parts = "; ".join(f"{cid}: {_names(names)}" for cid, names in versions.items())
        out.append(f"warning: replicates of {label} ran different code: {parts}")
    return out


def _names(names: list[str], most: int = 4) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
