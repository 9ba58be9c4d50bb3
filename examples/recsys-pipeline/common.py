"""Helpers shared by the recsys pipeline steps."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def save_atomic(path: str | Path, write: Any) -> None:
    """``write(tmp_path)`` then rename over ``path``: rota's ``outputs:`` check never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    write(str(tmp))
    os.replace(tmp, path)


def save_npy(path: str | Path, arr: np.ndarray) -> None:
    save_atomic(path, lambda p: np.save(p, arr))


def report(metrics: dict[str, float], json_path: str | Path | None = None) -> None:
    """Print ``ROTA_METRIC`` lines, write ``$ROTA_OUT/metrics.json`` and optionally a copy at ``json_path``."""
    for k, v in metrics.items():
        print(f"ROTA_METRIC {k}={v}", flush=True)
    out = os.environ.get("ROTA_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, "metrics.json").write_text(json.dumps(metrics))
    if json_path is not None:
        data = json.dumps(metrics, indent=2).encode()
        save_atomic(json_path, lambda p: Path(p).write_bytes(data))


def l2norm(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def threads() -> int:
    """CPUs rota booked for this task (``$ROTA_CPUS``), else 1."""
    v = os.environ.get("ROTA_CPUS", "")
    return int(v) if v.isdigit() and int(v) > 0 else 1


def recall_at_k(scores: np.ndarray, train_mask: np.ndarray, test_items: np.ndarray, k: int = 10) -> float:
    """Leave-one-out recall@k: is each user's held-out item in the top k of unseen items?"""
    s = np.where(train_mask, -np.inf, scores)
    top = np.argpartition(-s, k, axis=1)[:, :k]
    return float(np.mean([t in row for t, row in zip(test_items, top, strict=True)]))
