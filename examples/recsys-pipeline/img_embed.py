"""Image embeddings (the pipeline's GPU step): ``data/img.npy``, one L2-normalised row per item.

On a GPU: a small seeded random conv net in torch, batch by batch on CUDA.
Without one: a seeded random projection in numpy (same shape, same role).
Progress per batch goes to ``$ROTA_OUT/.rota/progress.json`` via rota.shard.progress.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from common import l2norm, report, save_npy

import rota.shard


def embed_numpy(images: np.ndarray, batch: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(42)
    flat_dim = int(np.prod(images.shape[1:]))
    proj = rng.normal(size=(flat_dim, dim)).astype(np.float32) / np.sqrt(flat_dim)
    out = np.empty((len(images), dim), dtype=np.float32)
    for s in range(0, len(images), batch):
        x = images[s:s + batch].reshape(-1, flat_dim)
        out[s:s + batch] = np.tanh(x @ proj)
        rota.shard.progress(min(s + batch, len(images)), len(images))
    return out


def embed_torch_cuda(images: np.ndarray, batch: int, dim: int) -> np.ndarray:
    import torch
    from torch import nn

    torch.manual_seed(42)
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(256, dim),
    ).cuda().eval()
    out = np.empty((len(images), dim), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, len(images), batch):
            x = torch.from_numpy(images[s:s + batch]).cuda(non_blocking=True)
            out[s:s + batch] = net(x).float().cpu().numpy()
            rota.shard.progress(min(s + batch, len(images)), len(images))
    return out


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--dim", type=int, default=128)
    args = ap.parse_args()
    images = np.load(os.path.join(args.data, "items.npz"))["images"]
    t0 = time.time()
    gpu = cuda_available()
    emb = (embed_torch_cuda if gpu else embed_numpy)(images, args.batch_size, args.dim)
    emb = l2norm(emb).astype(np.float32)
    save_npy(os.path.join(args.data, "img.npy"), emb)
    secs = time.time() - t0
    print(f"embedded {len(emb)} images on {'cuda' if gpu else 'cpu'} in {secs:.2f}s -> img.npy {emb.shape}")
    report({"items": len(emb), "items_per_s": round(len(emb) / max(secs, 1e-9), 2)})


if __name__ == "__main__":
    main()
