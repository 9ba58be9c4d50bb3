"""Baseline: matrix factorisation trained with BPR (numpy SGD); reports leave-one-out recall@10."""

from __future__ import annotations

import argparse
import os

import numpy as np
from common import recall_at_k, report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data")
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--reg", type=float, default=1e-3)
    args = ap.parse_args()
    z = np.load(os.path.join(args.data, "interactions.npz"))
    n_users, n_items = int(z["n_users"]), int(z["n_items"])
    test = z["test"]
    u_tr, i_tr = z["user"][~test], z["item"][~test]
    rng = np.random.default_rng(0)
    P = 0.1 * rng.normal(size=(n_users, args.dim))
    Q = 0.1 * rng.normal(size=(n_items, args.dim))
    seen = np.zeros((n_users, n_items), dtype=bool)
    seen[u_tr, i_tr] = True
    batch = 256
    for epoch in range(args.epochs):
        order = rng.permutation(len(u_tr))
        loss = 0.0
        for s in range(0, len(order), batch):
            b = order[s:s + batch]
            u, i = u_tr[b], i_tr[b]
            j = rng.integers(0, n_items, size=len(b))  # sampled negatives
            pu, qi, qj = P[u], Q[i], Q[j]
            x = np.sum(pu * (qi - qj), axis=1)
            g = 1 / (1 + np.exp(x))  # d(-log sigmoid(x))/dx = -(1 - sigmoid(x))
            loss += float(np.sum(np.logaddexp(0, -x)))
            np.add.at(P, u, args.lr * (g[:, None] * (qi - qj) - args.reg * pu))
            np.add.at(Q, i, args.lr * (g[:, None] * pu - args.reg * qi))
            np.add.at(Q, j, args.lr * (-g[:, None] * pu - args.reg * qj))
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            print(f"epoch {epoch + 1}: bpr loss {loss / len(order):.4f}", flush=True)
    u_te, i_te = z["user"][test], z["item"][test]
    rec = recall_at_k(P[u_te] @ Q.T, seen[u_te], i_te, 10)
    pop = np.bincount(i_tr, minlength=n_items).astype(float)
    rec_pop = recall_at_k(np.tile(pop, (len(u_te), 1)), seen[u_te], i_te, 10)
    print(f"recall@10: BPR-MF {rec:.4f}, popularity {rec_pop:.4f}", flush=True)
    report({"recall_at_10": round(rec, 5), "popularity_recall_at_10": round(rec_pop, 5)},
           os.path.join(args.data, "mf_bpr.json"))


if __name__ == "__main__":
    main()
