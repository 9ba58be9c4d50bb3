"""GAT-style recommender: graph attention over item-item graphs (text kNN, fused kNN,
co-occurrence), item features from the fused and text embeddings, user vectors,
BPR loss. Reports leave-one-out recall@10 into ``data/gat-<config>.json``.

``--config h64-l2`` = hidden size 64, 2 attention layers. Uses CUDA when available.
"""

from __future__ import annotations

import argparse
import os
import re
import time

import numpy as np
import torch
from common import recall_at_k, report
from torch import nn


class GraphAttention(nn.Module):
    """One single-head attention layer over a fixed neighbour list (n, k)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d_in, d_out, bias=False)
        self.a_src = nn.Parameter(torch.randn(d_out) * 0.1)
        self.a_dst = nn.Parameter(torch.randn(d_out) * 0.1)
        self.self_loop = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)                                           # (n, d)
        e = (h @ self.a_dst)[:, None] + (h @ self.a_src)[nbr]     # (n, k)
        alpha = torch.softmax(nn.functional.leaky_relu(e, 0.2), dim=1)
        agg = (alpha[..., None] * h[nbr]).sum(1)                  # (n, d)
        return nn.functional.elu(agg + self.self_loop(x))


class GATRec(nn.Module):
    def __init__(self, d_in: int, hidden: int, layers: int, n_users: int, n_items: int) -> None:
        super().__init__()
        dims = [d_in] + [hidden] * layers
        self.layers = nn.ModuleList(GraphAttention(a, b) for a, b in zip(dims, dims[1:], strict=False))
        self.users = nn.Embedding(n_users, hidden)
        nn.init.normal_(self.users.weight, std=0.1)
        self.item_bias = nn.Parameter(torch.zeros(n_items))  # popularity

    def items(self, x: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, nbr)
        return x


def parse_config(cfg: str) -> tuple[int, int]:
    m = re.fullmatch(r"h(\d+)-l(\d+)", cfg)
    if not m:
        raise SystemExit(f"--config {cfg!r}: expected h<hidden>-l<layers>, e.g. h64-l2")
    return int(m.group(1)), int(m.group(2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data")
    ap.add_argument("--config", default="h32-l1")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-3)
    args = ap.parse_args()
    hidden, n_layers = parse_config(args.config)
    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("ROTA_CPUS", "1") or 1))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = args.data

    fused, txt = np.load(os.path.join(d, "fused.npy")), np.load(os.path.join(d, "txt.npy"))
    nbr = np.hstack([np.load(os.path.join(d, "txt_knn.npz"))["neighbors"],
                     np.load(os.path.join(d, "fused_knn.npz"))["neighbors"],
                     np.load(os.path.join(d, "edges.npz"))["co_neighbors"]])
    z = np.load(os.path.join(d, "interactions.npz"))
    n_users, n_items, test = int(z["n_users"]), int(z["n_items"]), z["test"]
    u_tr, i_tr = torch.from_numpy(z["user"][~test]).long(), torch.from_numpy(z["item"][~test]).long()

    x = torch.from_numpy(np.hstack([fused, txt])).float().to(device)
    nbr_t = torch.from_numpy(nbr).long().to(device)
    model = GATRec(x.shape[1], hidden, n_layers, n_users, n_items).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-5)
    gen = torch.Generator().manual_seed(0)
    t0 = time.time()
    for epoch in range(args.epochs):
        order = torch.randperm(len(u_tr), generator=gen)
        total = 0.0
        for s in range(0, len(order), 1024):
            b = order[s:s + 1024]
            u, i = u_tr[b].to(device), i_tr[b].to(device)
            j = torch.randint(0, n_items, (len(b),), generator=gen).to(device)
            items = model.items(x, nbr_t)
            pu = model.users(u)
            bias = model.item_bias
            diff = (pu * items[i]).sum(1) + bias[i] - (pu * items[j]).sum(1) - bias[j]
            loss = nn.functional.softplus(-diff).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        print(f"epoch {epoch + 1}/{args.epochs} bpr loss {total / len(order):.4f}", flush=True)
    model.eval()
    with torch.no_grad():
        items = model.items(x, nbr_t).cpu().numpy()
        users = model.users.weight.cpu().numpy()
        bias = model.item_bias.cpu().numpy()
    seen = np.zeros((n_users, n_items), dtype=bool)
    seen[z["user"][~test], z["item"][~test]] = True
    u_te, i_te = z["user"][test], z["item"][test]
    rec = recall_at_k(users[u_te] @ items.T + bias[None, :], seen[u_te], i_te, 10)
    secs = time.time() - t0
    print(f"config {args.config} on {device}: recall@10 {rec:.4f} in {secs:.1f}s", flush=True)
    report({"recall_at_10": round(rec, 5), "hidden": hidden, "layers": n_layers, "train_s": round(secs, 3)},
           os.path.join(d, f"gat-{args.config}.json"))


if __name__ == "__main__":
    main()
