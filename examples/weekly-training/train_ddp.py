"""Step 3: DistributedDataParallel training, one process per GPU, launched by torchrun.

    python -m torch.distributed.run --standalone --nproc_per_node=2 train_ddp.py --data data/features.pkl

NCCL + one GPU per rank + fp16 autocast when CUDA is available; gloo on the CPU
otherwise (same code). Predicts log1p(next week's sales) with a small MLP. Rank 0
reports ``ROTA_METRIC val_rmse=...`` and writes ``$ROTA_OUT/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

FEATURES = ["sales", "price", "promo", "lag1", "lag2", "roll4_mean", "roll4_std", "woy_sin", "woy_cos"]


def load(path: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    df = pd.read_pickle(path)
    cut = df["week"].quantile(0.8)  # time split: the last 20% of weeks are validation
    X = df[FEATURES].to_numpy(np.float32)
    X[:, [0, 3, 4, 5, 6]] = np.log1p(X[:, [0, 3, 4, 5, 6]])
    y = np.log1p(df["target"].to_numpy(np.float32))
    tr = (df["week"] < cut).to_numpy()
    mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-6
    X = (X - mu) / sd
    t = torch.from_numpy
    return t(X[tr]), t(y[tr]), t(X[~tr]), t(y[~tr])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/features.pkl")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--out", default=os.environ.get("ROTA_OUT", "."))
    args = ap.parse_args()

    cuda = torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(0)

    Xtr, ytr, Xva, yva = load(args.data)
    ds = TensorDataset(Xtr, ytr)
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_size=args.batch_size, sampler=sampler, pin_memory=cuda,
                        num_workers=min(4, int(os.environ.get("ROTA_CPUS", "1")) // max(world, 1)) if cuda else 0)
    model = nn.Sequential(nn.Linear(len(FEATURES), 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    model = DDP(model.to(device), device_ids=[local] if cuda else None)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    t0 = time.time()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        model.train()
        total = torch.zeros(2, device=device)
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=cuda):
                loss = nn.functional.mse_loss(model(xb).squeeze(-1).float(), yb)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            total += torch.stack([loss.detach() * len(xb), torch.tensor(float(len(xb)), device=device)])
        dist.all_reduce(total)  # mean train loss over every rank
        if rank == 0:
            print(f"epoch {epoch + 1}/{args.epochs} train_mse={(total[0] / total[1]).item():.4f} "
                  f"world={world} device={device.type}", flush=True)
    model.eval()
    with torch.no_grad():
        pred = model.module(Xva.to(device)).squeeze(-1).float().cpu()
    rmse = float(torch.sqrt(nn.functional.mse_loss(pred, yva)))
    if rank == 0:
        secs = time.time() - t0
        print(f"ROTA_METRIC val_rmse={rmse:.6f}", flush=True)
        print(f"ROTA_METRIC world_size={world}", flush=True)
        print(f"ROTA_METRIC train_s={secs:.3f}", flush=True)
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "metrics.json"), "w") as f:
            json.dump({"val_rmse": rmse, "world_size": world, "train_s": secs}, f)
        torch.save(model.module.state_dict(), os.path.join(args.out, "model.pt"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
