"""Step 2: weekly features per (store, product), one worker process per booked CPU.

Reads ``<data>/combined.pkl``; writes ``<data>/features.pkl`` with, per series and
week: weekly sales/price/promo, lags 1-2, 4-week rolling mean and std, and the
target (next week's sales). The worker count is ``$ROTA_CPUS`` (rota sets it, and
OMP_NUM_THREADS, to the task's ``cpus:``), else ``--workers``, else 1, capped at
the number of cores this process may run on.
"""

from __future__ import annotations

import argparse
import os
import time
from multiprocessing import get_context

import numpy as np
import pandas as pd


def weekly_features(df: pd.DataFrame) -> pd.DataFrame:
    """Features for every series in ``df`` (a batch of whole series)."""
    df = df.assign(week=df["date"].dt.to_period("W-SUN").dt.start_time)
    w = (
        df.groupby(["store", "product", "week"], sort=True)
        .agg(sales=("sales", "sum"), price=("price", "mean"), promo=("promo", "mean"))
        .reset_index()
    )
    g = w.groupby(["store", "product"], sort=False)["sales"]
    w["lag1"] = g.shift(1)
    w["lag2"] = g.shift(2)
    w["roll4_mean"] = g.transform(lambda s: s.shift(1).rolling(4, min_periods=2).mean())
    w["roll4_std"] = g.transform(lambda s: s.shift(1).rolling(4, min_periods=2).std())
    w["target"] = g.shift(-1)
    woy = w["week"].dt.isocalendar().week.astype(np.float32)
    w["woy_sin"] = np.sin(2 * np.pi * woy / 52).astype(np.float32)
    w["woy_cos"] = np.cos(2 * np.pi * woy / 52).astype(np.float32)
    return w.dropna().reset_index(drop=True)


def workers_from_env(default: int) -> int:
    for var in ("ROTA_CPUS", "OMP_NUM_THREADS"):
        v = os.environ.get(var)
        if v and v.isdigit() and int(v) > 0:
            return int(v)
    return default


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data")
    ap.add_argument("--workers", type=int, default=None, help="default: $ROTA_CPUS, else 1")
    args = ap.parse_args()
    booked = args.workers or workers_from_env(1)
    # Never more processes than cores this process may use (a declared --cpus can exceed them).
    n_workers = max(1, min(booked, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else booked))
    t0 = time.time()
    df = pd.read_pickle(os.path.join(args.data, "combined.pkl"))
    keys = df[["store", "product"]].drop_duplicates().to_numpy()
    # Whole series per batch, so rolling windows never cross a batch boundary.
    batches = np.array_split(np.arange(len(keys)), n_workers * 4)
    series_id = df["store"].to_numpy() * (df["product"].max() + 1) + df["product"].to_numpy()
    key_id = keys[:, 0] * (df["product"].max() + 1) + keys[:, 1]
    parts = [df[np.isin(series_id, key_id[b])] for b in batches if len(b)]
    with get_context("spawn" if os.name == "nt" else "fork").Pool(n_workers) as pool:
        feats = pd.concat(pool.map(weekly_features, parts), ignore_index=True)
    feats = feats.sort_values(["store", "product", "week"]).reset_index(drop=True)
    target = os.path.join(args.data, "features.pkl")
    feats.to_pickle(target + ".tmp")
    os.replace(target + ".tmp", target)
    secs = time.time() - t0
    print(f"{len(df):,} rows -> {len(feats):,} weekly rows with {n_workers} workers in {secs:.1f}s", flush=True)
    print(f"ROTA_METRIC weekly_rows={len(feats)}", flush=True)
    print(f"ROTA_METRIC workers={n_workers}", flush=True)
    print(f"ROTA_METRIC booked_cpus={booked}", flush=True)
    print(f"ROTA_METRIC seconds={secs:.3f}", flush=True)


if __name__ == "__main__":
    main()
