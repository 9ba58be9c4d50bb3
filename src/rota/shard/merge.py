"""Merging and verifying shard outputs (:mod:`rota.shard`)."""

from __future__ import annotations

import builtins
import glob as _glob
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rota.shard._common import CHUNK_DIR, ENV_NEEDS_OUT, MergeError
from rota.shard.chunks import saved_chunks

# -------------------------------------------------------------------------- merge


@dataclass(frozen=True)
class MergeReport:
    """What :func:`merge` wrote and checked."""

    path: str
    rows: int
    shape: tuple[int, ...]
    dtype: str
    shards: int
    chunks: int
    norm_min: float | None = None
    norm_max: float | None = None

    def as_metrics(self) -> dict[str, float]:
        m: dict[str, float] = {"rows": float(self.rows), "shards": float(self.shards), "chunks": float(self.chunks)}
        if len(self.shape) > 1:
            m["dim"] = float(self.shape[1])
        if self.norm_min is not None and self.norm_max is not None:
            m["norm_min"], m["norm_max"] = self.norm_min, self.norm_max
        return m


def _natural_key(s: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]


def _resolve_dirs(src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Mapping[str, str] | None) -> list[Path]:
    if src is None:
        raw = os.environ.get(ENV_NEEDS_OUT)
        if not raw:
            raise MergeError(f"no shard folders given and {ENV_NEEDS_OUT} is not set; pass the folders or a glob")
        try:
            src = json.loads(raw)
        except ValueError as e:
            raise MergeError(f"{ENV_NEEDS_OUT} is not JSON: {e}") from None
        if not isinstance(src, dict):
            raise MergeError(f"{ENV_NEEDS_OUT} must be a JSON object of task name -> folder")
    if isinstance(src, Mapping):
        names = sorted(src, key=_natural_key)
        return [Path(src[n]) for n in names]
    if isinstance(src, str | os.PathLike):
        s = os.fspath(src)
        if any(c in s for c in "*?["):
            matches = sorted(_glob.glob(s), key=_natural_key)
            if not matches:
                raise MergeError(f"glob {s!r} matches no folder")
            return [Path(m) for m in matches if os.path.isdir(m)]
        return [Path(s)]
    return [Path(p) for p in src]


def _read_manifest(d: Path, name: str) -> dict[str, Any] | None:
    try:
        m = json.loads((d / CHUNK_DIR / f"{name}.manifest.json").read_text())
        return m if isinstance(m, dict) else None
    except (OSError, ValueError):
        return None


def _check_shard_set(manifests: list[dict[str, Any]]) -> None:
    """When the loops ran as rota shards (count > 1), every shard 0..count-1 must be there once."""
    counts = {m.get("count") for m in manifests}
    if not any(isinstance(c, int) and c > 1 for c in counts):
        return  # made by hand (no ROTA_SHARD_* env): ranges are checked instead
    if len(counts) != 1:
        raise MergeError(f"shard folders disagree on the shard count: {sorted(map(str, counts))}")
    n = int(next(iter(counts)) or 0)
    seen = [int(m.get("shard", -1)) for m in manifests]
    missing = sorted(set(builtins.range(n)) - set(seen))
    dupes = sorted({i for i in seen if seen.count(i) > 1})
    if missing:
        raise MergeError(f"shard(s) {missing} of {n} are missing from the folders to merge")
    if dupes:
        raise MergeError(f"shard(s) {dupes} appear in more than one folder")


def merge(
    shard_dirs_or_glob: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Mapping[str, str] | None,
    out_path: str | os.PathLike[str],
    expect_rows: int | None = None,
    expect_dim: int | None = None,
    check_unit_norm: bool = False,
    tol: float = 1e-3,
    *,
    name: str = "chunk",
) -> MergeReport:
    """Concatenate every shard's ``.npy`` chunks, in (shard, chunk) order, into ``out_path``.

    ``shard_dirs_or_glob``: shard output folders (a list, a glob, or a mapping
    name -> folder), or ``None`` to read ``$ROTA_NEEDS_OUT``. Shards are ordered
    by the item range in their manifests (else by natural name order); chunks by
    start index.

    With ``None``, needed folders without a chunk loop ``name`` are ignored (a
    merge task may need other tasks too).

    Checks, each raising :class:`MergeError` naming what failed, before
    ``out_path`` is (atomically) written: every folder has chunks; when the
    loops ran as rota shards, shards ``0..count-1`` are all present; each shard's
    chunks are contiguous and cover its manifest range; shards do not overlap
    and leave no gap; every chunk is a ``.npy`` array with the same trailing
    shape; the row count equals ``expect_rows``; the array is 2-D with
    ``expect_dim`` columns; every row's L2 norm is within ``tol`` of 1 (when
    ``check_unit_norm``; NaN and inf fail). On failure ``out_path`` is untouched.
    """
    import numpy as np

    dirs = _resolve_dirs(shard_dirs_or_glob)
    if shard_dirs_or_glob is None:
        # $ROTA_NEEDS_OUT may also list needed tasks that are not shards of this loop.
        with_loop = [d for d in dirs if (d / CHUNK_DIR / f"{name}.manifest.json").is_file()]
        if not with_loop:
            raise MergeError(f"none of the needed tasks' folders ({', '.join(map(str, dirs))}) ran a chunk loop named {name!r}")
        dirs = with_loop
    if not dirs:
        raise MergeError("no shard folders to merge")
    shards: list[tuple[Path, dict[str, Any] | None, list[tuple[int, int, Path]]]] = []
    for d in dirs:
        if not d.is_dir():
            raise MergeError(f"shard folder {d} does not exist")
        found = saved_chunks(d, name)
        man = _read_manifest(d, name)
        empty_shard = man is not None and man.get("start") == man.get("stop")
        if not found and not empty_shard:
            raise MergeError(f"shard folder {d} has no chunks named {name!r} (did the shard run?)")
        shards.append((d, man, found))
    if all(m is not None for _, m, _ in shards):
        shards.sort(key=lambda t: (t[1]["start"], t[1]["stop"]))  # type: ignore[index]
    _check_shard_set([m for _, m, _ in shards if m is not None])

    prev_stop: int | None = None
    files: list[Path] = []
    for d, man, found in shards:
        lo = man["start"] if man else found[0][0]
        hi = man["stop"] if man else found[-1][1]
        if prev_stop is not None and man is not None and lo != prev_stop:
            kind = "overlap" if lo < prev_stop else "gap"
            raise MergeError(f"shard folder {d} starts at item {lo} but the previous shard ended at {prev_stop} ({kind})")
        pos = lo
        for s, e, p in found:
            if s != pos:
                if s > pos:
                    raise MergeError(f"shard folder {d}: items {pos}..{s} are missing (shard not finished?)")
                raise MergeError(f"shard folder {d}: chunk {p.name} overlaps the previous chunk (items from {s}, expected {pos})")
            if p.suffix != ".npy":
                raise MergeError(f"shard folder {d}: chunk {p.name} is not a numpy array (.npy); cannot merge")
            files.append(p)
            pos = e
        if pos != hi:
            raise MergeError(f"shard folder {d}: items {pos}..{hi} are missing (shard not finished?)")
        prev_stop = hi

    if not files:
        raise MergeError(f"the {len(shards)} shard folders hold no items at all")
    arrays = []
    for p in files:
        try:
            a = np.load(p, mmap_mode="r", allow_pickle=False)
        except Exception as e:  # corrupt file
            raise MergeError(f"cannot read chunk {p}: {e}") from None
        if a.ndim < 1:
            raise MergeError(f"chunk {p} is a scalar; expected rows")
        arrays.append(a)
    tail = arrays[0].shape[1:]
    for p, a in zip(files, arrays, strict=True):
        if a.shape[1:] != tail:
            raise MergeError(f"chunk {p} has rows of shape {a.shape[1:]}, the first chunk has {tail}")
    rows = sum(a.shape[0] for a in arrays)
    shape = (rows, *tail)
    if expect_rows is not None and rows != expect_rows:
        raise MergeError(f"merged {rows} rows, expected {expect_rows}")
    if expect_dim is not None and (len(shape) != 2 or shape[1] != expect_dim):
        raise MergeError(f"merged shape is {shape}, expected ({rows}, {expect_dim})")
    dtype = np.result_type(*[a.dtype for a in arrays])

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    nmin: float | None = None
    nmax: float | None = None
    try:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        row = 0
        for p, a in zip(files, arrays, strict=True):
            block = np.asarray(a)
            if check_unit_norm:
                if block.ndim != 2:
                    raise MergeError(f"check_unit_norm needs 2-D rows; chunk {p} has shape {block.shape}")
                norms = np.linalg.norm(block.astype(np.float64, copy=False), axis=1)
                bad = ~(np.abs(norms - 1.0) <= tol)
                if bad.any():
                    j = int(np.flatnonzero(bad)[0])
                    raise MergeError(
                        f"{int(bad.sum())} rows of chunk {p.name} have an L2 norm outside 1±{tol} "
                        f"(first: merged row {row + j}, norm {norms[j]:.6g})"
                    )
                if norms.size:
                    lo_n, hi_n = float(norms.min()), float(norms.max())
                    nmin = lo_n if nmin is None else min(nmin, lo_n)
                    nmax = hi_n if nmax is None else max(nmax, hi_n)
            mm[row : row + block.shape[0]] = block
            row += block.shape[0]
        mm.flush()
        del mm
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return MergeReport(
        path=str(out), rows=rows, shape=tuple(int(x) for x in shape), dtype=str(dtype),
        shards=len(shards), chunks=len(files), norm_min=nmin, norm_max=nmax,
    )
