"""Atomic files and the progress file of :mod:`rota.shard`."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rota.shard._common import PROGRESS_PATH, ShardError, count, index
from rota.shard._common import out_dir as _default_out_dir

# ---------------------------------------------------------------------- atomic io


def _atomic_write(path: Path, write: Any, *, fsync: bool = True) -> None:
    """Call ``write(fileobj)`` on a temp file next to ``path``, fsync (optional), rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _atomic_json(path: Path, obj: Any, *, fsync: bool = True) -> None:
    data = json.dumps(obj, indent=None, sort_keys=True).encode()
    _atomic_write(path, lambda f: f.write(data), fsync=fsync)


# ----------------------------------------------------------------------- progress


class _Progress:
    """Writes the progress file; the rate is measured from the first update."""

    def __init__(self, out: Path, total: int, unit: str, extra: Mapping[str, Any] | None = None) -> None:
        self.path = out / PROGRESS_PATH
        self.total = int(total)
        self.unit = unit
        self.extra = dict(extra or {})
        self.t0: float | None = None
        self.done0 = 0
        self.started_at = time.time()
        self.last_write = 0.0

    def update(self, done: int, **extra: Any) -> dict[str, Any]:
        now = time.time()
        if self.t0 is None:
            self.t0, self.done0 = now, done
        elapsed = now - self.t0
        rate = (done - self.done0) / elapsed if elapsed > 0 and done > self.done0 else 0.0
        left = max(self.total - done, 0)
        eta: float | None
        if left == 0:
            eta = 0.0
        elif rate > 0:
            eta = left / rate
        else:
            eta = None
        record = {
            "done": int(done),
            "total": self.total,
            "unit": self.unit,
            "items_per_s": float(rate),
            "eta_s": eta,
            "updated_at": now,
            "started_at": self.started_at,
            **self.extra,
            **extra,
        }
        _atomic_json(self.path, record, fsync=False)  # informational: atomic, not durable
        self.last_write = now
        return record


_reporters: dict[tuple[str, int, str], _Progress] = {}


def progress(
    done: int,
    total: int,
    *,
    unit: str = "items",
    out_dir: str | os.PathLike[str] | None = None,
    min_interval_s: float = 0.5,
) -> dict[str, Any] | None:
    """Report progress for code that does not use :func:`chunks`.

    Atomically rewrites ``<out_dir or $ROTA_OUT>/.rota/progress.json`` (see the
    module docstring for the format); the rate is measured from this process's
    first call with the same ``total``. Cheap to call in a tight loop: writes
    at most every ``min_interval_s`` seconds, but always the first call and
    ``done == total``. Returns the record written, or None when throttled.
    """
    if done < 0 or total < 0:
        raise ShardError(f"progress needs done >= 0 and total >= 0, found done={done}, total={total}")
    out = Path(out_dir) if out_dir is not None else _default_out_dir()
    key = (str(out.resolve()), int(total), unit)
    rep = _reporters.get(key)
    if rep is None:
        rep = _reporters[key] = _Progress(out, total, unit, {"shard": index(), "count": count()})
    elif done < total and time.time() - rep.last_write < min_interval_s:
        return None
    return rep.update(done)


