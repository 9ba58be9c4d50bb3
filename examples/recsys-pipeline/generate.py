"""Generate the pipeline's inputs (seeded): items with a latent cluster, their
"images" (3x16x16 arrays), precomputed text embeddings ``txt.npy`` and user-item
interactions with one held-out item per user (leave-one-out test)."""

from __future__ import annotations

import argparse
import os

import numpy as np
from common import l2norm, report, save_atomic, save_npy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data")
    ap.add_argument("--items", type=int, default=1500)
    ap.add_argument("--users", type=int, default=800)
    ap.add_argument("--clusters", type=int, default=40)
    ap.add_argument("--per-user", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.data, exist_ok=True)

    cluster = rng.integers(0, args.clusters, size=args.items)
    protos = rng.normal(size=(args.clusters, 3, 16, 16)).astype(np.float32)
    images = protos[cluster] + 3.0 * rng.normal(size=(args.items, 3, 16, 16)).astype(np.float32)
    txt_centres = rng.normal(size=(args.clusters, 128))
    txt = l2norm(txt_centres[cluster] + 2.0 * rng.normal(size=(args.items, 128))).astype(np.float32)
    popularity = rng.pareto(3.0, size=args.items) + 1

    users, items = [], []
    user_pref = rng.integers(0, args.clusters, size=(args.users, 2))  # two favourite clusters each
    for u in range(args.users):
        liked = np.isin(cluster, user_pref[u])
        w = popularity * np.where(liked, 20.0, 1.0)
        chosen = rng.choice(args.items, size=args.per_user + 1, replace=False, p=w / w.sum())
        users.extend([u] * len(chosen))
        items.extend(chosen.tolist())
    users_a, items_a = np.array(users, dtype=np.int32), np.array(items, dtype=np.int32)
    is_test = np.zeros(len(users_a), dtype=bool)
    is_test[np.arange(args.users) * (args.per_user + 1)] = True  # first pick of every user held out

    save_atomic(os.path.join(args.data, "items.npz"),
                lambda p: np.savez(p, cluster=cluster, images=images))
    save_npy(os.path.join(args.data, "txt.npy"), txt)
    save_atomic(os.path.join(args.data, "interactions.npz"),
                lambda p: np.savez(p, user=users_a, item=items_a, test=is_test,
                                   n_users=args.users, n_items=args.items))
    print(f"{args.items} items, {args.users} users, {len(users_a)} interactions", flush=True)
    report({"items": args.items, "users": args.users, "interactions": len(users_a)})


if __name__ == "__main__":
    main()
