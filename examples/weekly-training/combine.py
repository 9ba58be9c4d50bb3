"""Step 1: combine raw daily sales into one table (``<data>/combined.pkl``).

The raw data is generated, seeded: ``stores x products`` daily series with trend,
weekly seasonality, promotions and prices. Written atomically (tmp + rename), so
rota's ``outputs:`` check never sees a half-written file.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd


def generate(stores: int, products: int, days: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_series = stores * products
    dates = pd.date_range("2024-01-01", periods=days, freq="D")
    store = np.repeat(np.arange(stores), products)
    product = np.tile(np.arange(products), stores)
    base = rng.gamma(2.0, 5.0, size=n_series)  # level per series
    t = np.arange(days)
    weekly = 1 + 0.3 * np.sin(2 * np.pi * t / 7)
    trend = 1 + 0.001 * t
    promo = rng.random((n_series, days)) < 0.1
    price = (rng.uniform(1, 20, size=n_series)[:, None] * np.where(promo, 0.8, 1.0)).astype(np.float32)
    lam = base[:, None] * weekly[None, :] * trend[None, :] * np.where(promo, 1.6, 1.0)
    sales = rng.poisson(lam).astype(np.float32)
    return pd.DataFrame({
        "date": np.tile(dates.values, n_series),
        "store": np.repeat(store, days).astype(np.int32),
        "product": np.repeat(product, days).astype(np.int32),
        "sales": sales.ravel(),
        "price": price.ravel(),
        "promo": promo.ravel(),
    })


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data")
    ap.add_argument("--stores", type=int, default=20)
    ap.add_argument("--products", type=int, default=40)
    ap.add_argument("--days", type=int, default=364)
    args = ap.parse_args()
    t0 = time.time()
    df = generate(args.stores, args.products, args.days)
    os.makedirs(args.data, exist_ok=True)
    target = os.path.join(args.data, "combined.pkl")
    df.to_pickle(target + ".tmp")
    os.replace(target + ".tmp", target)
    print(f"combined {len(df):,} rows -> {target} in {time.time() - t0:.1f}s", flush=True)
    print(f"ROTA_METRIC rows={len(df)}", flush=True)


if __name__ == "__main__":
    main()
