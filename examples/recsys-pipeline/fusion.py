"""Modal fusion: concatenate text and image embeddings, reduce with SVD: ``data/fused.npy``."""

from __future__ import annotations

import argparse
import os

import numpy as np
from common import l2norm, report, save_npy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--img-weight", type=float, default=1.0)
    args = ap.parse_args()
    txt = np.load(os.path.join(args.data, "txt.npy"))
    img = np.load(os.path.join(args.data, "img.npy"))
    if len(txt) != len(img):
        raise SystemExit(f"txt.npy has {len(txt)} rows but img.npy has {len(img)}")
    x = np.hstack([txt, args.img_weight * img]).astype(np.float64)
    x -= x.mean(0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    fused = l2norm(u[:, :args.dim] * s[:args.dim]).astype(np.float32)
    save_npy(os.path.join(args.data, "fused.npy"), fused)
    explained = float((s[:args.dim] ** 2).sum() / (s ** 2).sum())
    print(f"fused {txt.shape} + {img.shape} -> {fused.shape}, explained variance {explained:.3f}", flush=True)
    report({"explained_variance": round(explained, 5)})


if __name__ == "__main__":
    main()
