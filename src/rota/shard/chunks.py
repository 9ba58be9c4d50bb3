"""The checkpointed chunk loop of :mod:`rota.shard`."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import re
import shlex
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rota.shard._common import _EXTS, _NAME_OK, CHUNK_DIR, ShardError, count, index, out_dir
from rota.shard._common import out_dir as _default_out_dir
from rota.shard._io import _atomic_json, _atomic_write, _Progress

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


def made_by_command() -> str:
    """What makes this process's chunks: the task's command under rota (``$ROTA_COMMAND``, as the
    spec gives it), else this process's command line (its program's file name and arguments)."""
    got = os.environ.get("ROTA_COMMAND")
    if got:
        return got
    argv = list(sys.argv) or [""]
    return shlex.join([os.path.basename(argv[0]), *argv[1:]])


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
    different ``chunk_size`` or range raises :class:`ShardError`, and so does a
    folder whose chunks another command made: the manifest records the command
    (``$ROTA_COMMAND`` under rota, else the process's command line), so chunks
    are never silently reused by a changed command.

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

    base = Path(out_dir) if out_dir is not None else _default_out_dir()
    cdir = base / CHUNK_DIR
    cdir.mkdir(parents=True, exist_ok=True)
    shard_i, shard_n = index(), count()
    manifest = {"name": name, "start": first, "stop": last, "chunk_size": chunk_size, "shard": shard_i, "count": shard_n,
                "command": made_by_command()}
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
            if old.get("command") != manifest["command"]:
                made = "an unrecorded command" if old.get("command") is None else repr(old["command"])
                raise ShardError(
                    f"{cdir} holds chunks of loop {name!r} made by {made}, but this is {manifest['command']!r}: "
                    "they are not this command's results; delete that folder to start over (under rota, a "
                    "task whose command changed starts in an empty output folder by itself)"
                )
        elif saved_chunks(base, name):
            raise ShardError(f"{cdir} holds chunks of loop {name!r} but an unreadable manifest, so nothing says "
                             "what made them; delete that folder to start over")
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


