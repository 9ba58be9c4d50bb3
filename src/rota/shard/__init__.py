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

from rota.shard._common import (
    CHUNK_DIR,
    ENV_COUNT,
    ENV_INDEX,
    ENV_NEEDS_OUT,
    ENV_OUT,
    PROGRESS_PATH,
    MergeError,
    ShardError,
    count,
    index,
    out_dir,
    range,
)
from rota.shard._io import progress
from rota.shard.chunks import Chunk, chunks, saved_chunks
from rota.shard.merge import MergeReport, merge

__all__ = [
    "CHUNK_DIR", "ENV_COUNT", "ENV_INDEX", "ENV_NEEDS_OUT", "ENV_OUT", "PROGRESS_PATH", "Chunk", "MergeError",
    "MergeReport", "ShardError", "chunks", "count", "index", "merge", "out_dir", "progress", "range", "saved_chunks",
]
