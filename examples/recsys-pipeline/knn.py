"""Item-item kNN graph over an embedding file (cosine), with scikit-learn: ``data/<out-name>``."""

from __future__ import annotations

import argparse
import os

import numpy as np
from common import report, save_atomic, threads
from sklearn.neighbors import NearestNeighbors


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data")
    ap.add_argument("--emb", required=True, help="embedding file in --data, e.g. txt.npy")
    ap.add_argument("--out-name", required=True)
    ap.add_argument("-k", type=int, default=10)
    args = ap.parse_args()
    x = np.load(os.path.join(args.data, args.emb))
    nn = NearestNeighbors(n_neighbors=args.k + 1, metric="cosine", n_jobs=threads()).fit(x)
    dist, idx = nn.kneighbors(x)
    idx, sim = idx[:, 1:].astype(np.int32), (1 - dist[:, 1:]).astype(np.float32)  # drop self
    save_atomic(os.path.join(args.data, args.out_name), lambda p: np.savez(p, neighbors=idx, sims=sim))
    cluster = np.load(os.path.join(args.data, "items.npz"))["cluster"]
    purity = float((cluster[idx] == cluster[:, None]).mean())
    print(f"{args.emb}: {len(x)} items, k={args.k}, same-cluster neighbours {purity:.3f}", flush=True)
    report({"neighbour_purity": round(purity, 5), "mean_sim": round(float(sim.mean()), 5)})


if __name__ == "__main__":
    main()
