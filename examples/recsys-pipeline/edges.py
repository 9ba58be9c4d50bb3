"""User-item edges (train split) and item-item co-occurrence edges: ``data/edges.npz``."""

from __future__ import annotations

import argparse
import os

import numpy as np
import scipy.sparse as sp
from common import report, save_atomic


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data")
    ap.add_argument("--top", type=int, default=10, help="co-occurrence neighbours kept per item")
    args = ap.parse_args()
    z = np.load(os.path.join(args.data, "interactions.npz"))
    n_users, n_items = int(z["n_users"]), int(z["n_items"])
    train = ~z["test"]
    ui = sp.csr_matrix((np.ones(train.sum(), dtype=np.float32), (z["user"][train], z["item"][train])),
                       shape=(n_users, n_items))
    co = (ui.T @ ui).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    dense = co.toarray()
    nbr = np.argsort(-dense, axis=1)[:, :args.top].astype(np.int32)
    w = np.take_along_axis(dense, nbr, axis=1).astype(np.float32)
    save_atomic(os.path.join(args.data, "edges.npz"), lambda p: np.savez(
        p, ui_indptr=ui.indptr, ui_indices=ui.indices, n_users=n_users, n_items=n_items,
        co_neighbors=nbr, co_weights=w))
    print(f"{ui.nnz} user-item edges, {co.nnz} item-item co-occurrence pairs", flush=True)
    report({"ui_edges": int(ui.nnz), "co_pairs": int(co.nnz)})


if __name__ == "__main__":
    main()
