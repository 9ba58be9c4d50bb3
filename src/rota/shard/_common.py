"""Shared pieces of :mod:`rota.shard` (constants, errors, environment)."""

from __future__ import annotations

import builtins
import os
import re
from pathlib import Path

from rota.errors import RotaError

ENV_INDEX = "ROTA_SHARD_INDEX"
ENV_COUNT = "ROTA_SHARD_COUNT"
ENV_OUT = "ROTA_OUT"
ENV_NEEDS_OUT = "ROTA_NEEDS_OUT"
PROGRESS_PATH = os.path.join(".rota", "progress.json")
CHUNK_DIR = "chunks"
_EXTS = ("npy", "json", "pkl", "done")
_NAME_OK = re.compile(r"^[A-Za-z0-9_.]+$")


class ShardError(RotaError):
    """Shard code was misused or found inconsistent state on disk."""


class MergeError(ShardError):
    """Merging shard outputs failed a check (missing chunk, rows, shape, norms)."""


# --------------------------------------------------------------------------- env


def _env_int(var: str, default: int) -> int:
    raw = os.environ.get(var)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ShardError(f"{var}={raw!r} is not an integer") from None


def count() -> int:
    """Number of shards (``ROTA_SHARD_COUNT``, default 1). Always >= 1."""
    n = _env_int(ENV_COUNT, 1)
    if n < 1:
        raise ShardError(f"{ENV_COUNT}={n} must be at least 1")
    return n


def index() -> int:
    """This shard's index (``ROTA_SHARD_INDEX``, default 0). ``0 <= index() < count()``."""
    i = _env_int(ENV_INDEX, 0)
    n = count()
    if not 0 <= i < n:
        raise ShardError(f"{ENV_INDEX}={i} is outside 0..{n - 1} ({ENV_COUNT}={n})")
    return i


def out_dir() -> Path:
    """The task's output folder: ``$ROTA_OUT``, else the current working directory."""
    raw = os.environ.get(ENV_OUT)
    return Path(raw) if raw else Path.cwd()


def range(n_items: int, index: int | None = None, count: int | None = None) -> builtins.range:  # noqa: A001
    """This shard's contiguous slice of ``0..n_items``.

    Contract: over ``index = 0..count-1`` the ranges are disjoint, in order, cover
    every item exactly once, and their lengths differ by at most one (the first
    ``n_items % count`` shards get one extra item). ``index``/``count`` default to
    the environment (:func:`index`, :func:`count`).
    """
    n = globals()["count"]() if count is None else count
    i = globals()["index"]() if index is None else index
    if isinstance(n_items, bool) or not isinstance(n_items, int) or n_items < 0:
        raise ShardError(f"n_items must be a non-negative int, found {n_items!r}")
    if n < 1:
        raise ShardError(f"count must be at least 1, found {n}")
    if not 0 <= i < n:
        raise ShardError(f"index {i} is outside 0..{n - 1}")
    base, extra = divmod(n_items, n)
    start = i * base + min(i, extra)
    stop = start + base + (1 if i < extra else 0)
    return builtins.range(start, stop)


