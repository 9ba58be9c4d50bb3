"""Tiny helpers shared by the quickstart scripts (stdlib only)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def out_dir(arg: str | None = None) -> Path:
    """``--out`` if given, else ``$ROTA_OUT``, else the current folder; created."""
    p = Path(arg or os.environ.get("ROTA_OUT") or ".")
    p.mkdir(parents=True, exist_ok=True)
    return p


def needs_out() -> dict[str, str]:
    """``$ROTA_NEEDS_OUT``: needed task name -> its output folder ({} outside rota)."""
    raw = os.environ.get("ROTA_NEEDS_OUT")
    return json.loads(raw) if raw else {}


def report(metrics: dict[str, float], out: Path | None = None) -> None:
    """Report metrics both ways rota reads them: ROTA_METRIC lines and metrics.json."""
    for k, v in metrics.items():
        print(f"ROTA_METRIC {k}={v}", flush=True)
    target = out or out_dir()
    tmp = target / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics))
    os.replace(tmp, target / "metrics.json")
