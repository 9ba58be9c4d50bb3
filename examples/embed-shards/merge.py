"""Merge every shard's chunks into ``emb.npy`` and verify rows, shape and unit norms.

Shard folders come from ``$ROTA_NEEDS_OUT`` (rota sets it for ``needs: [embed-*]``)
or from the command line. Exits non-zero with a clear message if a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import rota.shard


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, required=True, help="expected rows")
    ap.add_argument("--dim", type=int, default=384, help="expected columns")
    ap.add_argument("--out", default=None, help="default: $ROTA_OUT")
    ap.add_argument("shard_dirs", nargs="*", help="default: $ROTA_NEEDS_OUT")
    args = ap.parse_args()
    out = args.out or str(rota.shard.out_dir())
    try:
        rep = rota.shard.merge(args.shard_dirs or None, os.path.join(out, "emb.npy"), expect_rows=args.n,
                               expect_dim=args.dim, check_unit_norm=True, tol=1e-3)
    except rota.shard.MergeError as e:
        print(f"merge failed: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"merged {rep.rows} rows from {rep.shards} shards / {rep.chunks} chunks -> {rep.path}; "
          f"shape {rep.shape}, norms {rep.norm_min:.5f}..{rep.norm_max:.5f}", flush=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(rep.as_metrics(), f)


if __name__ == "__main__":
    main()
