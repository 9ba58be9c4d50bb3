"""Helpers for code running *inside* a rota shard task.

rota expands ``shards: N`` into N tasks ``<name>-0`` .. ``<name>-<N-1>`` and
gives each one these environment variables:

``ROTA_SHARD_INDEX``
    this shard's number, ``0 <= index < count`` (default ``0`` when unset).
``ROTA_SHARD_COUNT``
    the number of shards ``N`` (default ``1`` when unset).
``ROTA_OUT``
    the task's own output folder; it survives retries of the same task, which
    is what makes chunk checkpoints resumable. Falls back to the current
    working directory when unset (running a script by hand).
``ROTA_NEEDS_OUT``
    (for the merge task) JSON object ``{needed task name: its output folder}``.

Typical shard program::

    import rota.shard
    texts = load_texts()
    mine = rota.shard.range(len(texts))               # this shard's contiguous slice
    for chunk in rota.shard.chunks(mine, 256):        # skips chunks finished earlier
        chunk.save(embed(texts[chunk.start:chunk.stop]))  # atomic .npy

and the merge task::

    rota.shard.merge(None, "emb.npy", expect_rows=len(texts), expect_dim=384,
                     check_unit_norm=True)            # dirs from ROTA_NEEDS_OUT

On-disk layout (inside each shard's output folder)
--------------------------------------------------
``chunks/<name>-<start>-<stop>.<ext>``
    one finished chunk; ``start``/``stop`` are absolute item indices (12 digits,
    zero padded), ``ext`` is ``npy`` (numpy array), ``json``, ``pkl`` or
    ``done`` (:meth:`Chunk.mark_done`, no data). Written to a temporary file and
    renamed with :func:`os.replace`, so a file that exists is complete.
``chunks/<name>.manifest.json``
    ``{"name", "start", "stop", "chunk_size", "shard", "count"}`` written when the
    loop starts; :func:`merge` uses it to check that no chunk is missing.

Progress file contract (read by rota's dashboard)
-------------------------------------------------
``$ROTA_OUT/.rota/progress.json`` is rewritten atomically (tmp + ``os.replace``)
when a chunk loop starts, after every chunk and at the end, or whenever
:func:`progress` is called. It is one JSON object::

    {
      "done": int,                # items finished, including ones done by earlier attempts
      "total": int,               # items this task will do in all
      "unit": "items",            # what done/total count
      "items_per_s": float,       # rate over this attempt (0.0 before the first chunk)
      "eta_s": float | null,      # seconds left at that rate; 0 when done; null if unknown
      "updated_at": float,        # time.time() of the write
      # extra keys a reader must ignore if it does not know them:
      "shard": int, "count": int, "chunks_done": int, "chunks_total": int,
      "started_at": float
    }

A reader must tolerate the file being absent and must not assume keys beyond
the first six.
"""

from __future__ import annotations

import builtins
import glob as _glob
import json
import os
import pickle
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rota.errors import RotaError

__all__ = [
    "Chunk",
    "MergeError",
    "MergeReport",
    "ShardError",
    "chunks",
    "count",
    "index",
    "merge",
    "out_dir",
    "progress",
    "range",
    "saved_chunks",
]

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
    out = Path(out_dir) if out_dir is not None else globals()["out_dir"]()
    key = (str(out.resolve()), int(total), unit)
    rep = _reporters.get(key)
    if rep is None:
        rep = _reporters[key] = _Progress(out, total, unit, {"shard": index(), "count": count()})
    elif done < total and time.time() - rep.last_write < min_interval_s:
        return None
    return rep.update(done)


# ------------------------------------------------------------------------- chunks


@dataclass
class Chunk:
    """One unfinished chunk handed out by :func:`chunks`.

    ``start``/``stop`` are absolute item indices (for a ``range`` input, the
    range's values; for a sequence or an int, positions). ``items`` is the
    slice of the input. Call :meth:`save` (or :meth:`mark_done`) exactly once
    before asking for the next chunk.
    """

    index: int  # chunk number within this loop, 0-based
    start: int
    stop: int
    items: Any
    directory: Path
    name: str
    saved_path: Path | None = field(default=None, repr=False)
    on_saved: Callable[[Chunk], None] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.start:012d}-{self.stop:012d}"

    def save(self, result: Any) -> Path:
        """Atomically store this chunk's result and mark it finished.

        A numpy array (or a torch tensor, moved to the CPU) goes to ``.npy``;
        anything JSON can encode to ``.json``; anything else is pickled to
        ``.pkl``. Returns the file written.
        """
        if self.saved_path is not None:
            raise ShardError(f"chunk {self.stem} was already saved to {self.saved_path}")
        np = sys.modules.get("numpy")
        if type(result).__module__.startswith("torch") and hasattr(result, "detach"):
            result = result.detach().cpu().numpy()  # a torch tensor: store its values as .npy
            np = sys.modules.get("numpy")
        if np is not None and isinstance(result, np.ndarray):
            result = np.asarray(result)  # memmap and other subclasses: plain array
            path = self.directory / f"{self.stem}.npy"
            _atomic_write(path, lambda f: np.save(f, result, allow_pickle=False))
        else:
            try:
                data = json.dumps(result).encode()
                path = self.directory / f"{self.stem}.json"
            except (TypeError, ValueError):
                data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
                path = self.directory / f"{self.stem}.pkl"
            _atomic_write(path, lambda f: f.write(data))
        self._finished(path)
        return path

    def _finished(self, path: Path) -> None:
        self.saved_path = path
        if self.on_saved is not None:
            self.on_saved(self)

    def mark_done(self) -> Path:
        """Mark the chunk finished without storing data (results were written elsewhere)."""
        if self.saved_path is not None:
            raise ShardError(f"chunk {self.stem} was already saved to {self.saved_path}")
        path = self.directory / f"{self.stem}.done"
        _atomic_write(path, lambda f: None)
        self._finished(path)
        return path


def _chunk_re(name: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(name)}-(\d+)-(\d+)\.({'|'.join(_EXTS)})$")


def saved_chunks(directory: str | os.PathLike[str] | None = None, name: str = "chunk") -> list[tuple[int, int, Path]]:
    """Finished chunks ``(start, stop, path)`` of loop ``name`` in a task's output folder, by start.

    ``directory`` is the task output folder (``$ROTA_OUT`` by default), not its
    ``chunks/`` subfolder; either is accepted.
    """
    base = Path(directory) if directory is not None else out_dir()
    d = base if base.name == CHUNK_DIR and not (base / CHUNK_DIR).is_dir() else base / CHUNK_DIR
    pat = _chunk_re(name)
    found = []
    try:
        entries = os.listdir(d)
    except FileNotFoundError:
        return []
    for entry in entries:
        m = pat.match(entry)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), d / entry))
    found.sort(key=lambda t: (t[0], t[1]))
    return found


def chunks(
    items_or_n: int | Sequence[Any] | Iterable[Any],
    chunk_size: int,
    out_dir: str | os.PathLike[str] | None = None,
    name: str = "chunk",
    *,
    report: bool = True,
) -> Iterator[Chunk]:
    """A checkpointed loop: yield the unfinished chunks of ``items_or_n``.

    ``items_or_n`` is an int ``n`` (items ``0..n-1``), a ``range`` (e.g.
    :func:`range`'s result; chunk ``start``/``stop`` are its values, so they are
    global item indices), or a sequence (chunk ``items`` is its slice).
    Chunk boundaries are ``first + k * chunk_size``, so a rerun with the same
    arguments finds the same chunks; finished ones (a file in
    ``<out_dir>/chunks/``) are skipped. A process killed mid-loop therefore
    re-does at most the one chunk it was working on.

    Each yielded chunk must be saved (:meth:`Chunk.save` or
    :meth:`Chunk.mark_done`) before the next one is requested, else
    :class:`ShardError` is raised. After each chunk the progress file is
    rewritten (unless ``report=False``). Rerunning in the same folder with a
    different ``chunk_size`` or range raises :class:`ShardError`.

    Arguments are checked, the manifest written and the first progress record
    reported when ``chunks()`` is called (not lazily at the first iteration).
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ShardError(f"chunk_size must be a positive int, found {chunk_size!r}")
    if not _NAME_OK.match(name):
        raise ShardError(f"chunk loop name {name!r} may only contain letters, digits, '_' and '.'")
    seq: Any
    if isinstance(items_or_n, bool):
        raise ShardError("items_or_n must be an int, a range or a sequence, found a bool")
    if isinstance(items_or_n, int):
        if items_or_n < 0:
            raise ShardError(f"item count must be >= 0, found {items_or_n}")
        seq = builtins.range(items_or_n)
    elif isinstance(items_or_n, builtins.range) or hasattr(items_or_n, "__getitem__") and hasattr(items_or_n, "__len__"):
        seq = items_or_n
    else:
        seq = list(items_or_n)
    if isinstance(seq, builtins.range):
        if seq.step != 1:
            raise ShardError(f"a range passed to chunks() must have step 1, found {seq!r}")
        first, last = seq.start, max(seq.stop, seq.start)
    else:
        first, last = 0, len(seq)
    total = last - first

    base = Path(out_dir) if out_dir is not None else globals()["out_dir"]()
    cdir = base / CHUNK_DIR
    cdir.mkdir(parents=True, exist_ok=True)
    shard_i, shard_n = index(), count()
    manifest = {"name": name, "start": first, "stop": last, "chunk_size": chunk_size, "shard": shard_i, "count": shard_n}
    mpath = cdir / f"{name}.manifest.json"
    if mpath.exists():
        try:
            old = json.loads(mpath.read_text())
        except ValueError:
            old = None
        if isinstance(old, dict):
            for key in ("start", "stop", "chunk_size"):
                if old.get(key) != manifest[key]:
                    raise ShardError(
                        f"{cdir} holds chunks of loop {name!r} made with {key}={old.get(key)!r}, "
                        f"but this run uses {key}={manifest[key]!r}; use the same arguments to resume, "
                        "or delete that folder to start over"
                    )
    _atomic_json(mpath, manifest)
    for stale in cdir.glob(f".{name}-*.tmp"):  # temp files of a killed writer
        try:
            stale.unlink()
        except OSError:
            pass

    bounds = [(s, min(s + chunk_size, last)) for s in builtins.range(first, last, chunk_size)]
    finished = {(s, e) for s, e, _ in saved_chunks(base, name)}
    done = sum(e - s for s, e in bounds if (s, e) in finished)
    n_done = sum(1 for b in bounds if b in finished)
    rep = _Progress(base, total, "items", {"shard": shard_i, "count": shard_n}) if report else None
    state = {"done": done, "n_done": n_done}

    def on_saved(c: Chunk) -> None:  # progress is written as soon as a chunk is on disk
        state["done"] += c.stop - c.start
        state["n_done"] += 1
        if rep is not None:
            rep.update(state["done"], chunks_done=state["n_done"], chunks_total=len(bounds))

    if rep is not None:
        rep.update(done, chunks_done=n_done, chunks_total=len(bounds))

    def loop() -> Iterator[Chunk]:
        for k, (s, e) in enumerate(bounds):
            if (s, e) in finished:
                continue
            if isinstance(seq, builtins.range):
                items: Any = builtins.range(s, e)
            else:
                items = seq[s - first : e - first]
            chunk = Chunk(index=k, start=s, stop=e, items=items, directory=cdir, name=name, on_saved=on_saved)
            yield chunk
            if chunk.saved_path is None:
                raise ShardError(
                    f"chunk {k} (items {s}..{e}) of loop {name!r} was not saved; call chunk.save(result) "
                    "or chunk.mark_done() before the next iteration"
                )

    return loop()


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
