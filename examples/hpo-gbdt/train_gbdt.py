"""One HPO trial: train a gradient-boosted model, print ``ROTA_METRIC auc=<validation AUC>``.

Parameters come from the command line (rota substitutes ``{param}``) or, when a
flag is left out, from ``ROTA_PARAM_<NAME>`` env vars. Uses the GPU when one is
usable (xgb: ``device=cuda``; lgbm: ``device_type=cuda``/``gpu`` when the build
supports it) and otherwise the CPU, with ``$ROTA_CPUS`` threads. CatBoost is
CPU-only here, as in the scenario.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

import numpy as np
from sklearn.datasets import make_classification
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split


def gpu_available() -> bool:
    """True when a CUDA GPU is visible (rota sets CUDA_VISIBLE_DEVICES; a declared GPU on a CPU box is not)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        pass
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def dataset(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A seeded binary classification problem with noise (AUC well below 1)."""
    X, y = make_classification(n_samples=n, n_features=20, n_informative=8, n_redundant=4,
                               flip_y=0.08, class_sep=0.8, random_state=seed)
    X_tr, X_va, y_tr, y_va = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    return X_tr, X_va, y_tr, y_va


def param(args: argparse.Namespace, name: str, cast: Any, default: Any) -> Any:
    v = getattr(args, name)
    if v is None:
        v = os.environ.get(f"ROTA_PARAM_{name.upper()}")
    return cast(v) if v is not None else default


def train(model: str, p: dict[str, Any], data: tuple[np.ndarray, ...], threads: int, gpu: bool) -> tuple[float, str]:
    X_tr, X_va, y_tr, y_va = data
    if model == "xgb":
        import xgboost as xgb

        clf = xgb.XGBClassifier(
            n_estimators=p["rounds"], max_depth=p["max_depth"], learning_rate=p["learning_rate"],
            booster=p["booster"], subsample=p["subsample"], tree_method="hist",
            device="cuda" if gpu else "cpu", n_jobs=threads, eval_metric="auc", random_state=0,
        )
        clf.fit(X_tr, y_tr, eval_set=[(X_va, y_va)], verbose=False)
        return float(roc_auc_score(y_va, clf.predict_proba(X_va)[:, 1])), "cuda" if gpu else "cpu"
    if model == "lgbm":
        import lightgbm as lgb

        def fit(device: str) -> float:
            clf = lgb.LGBMClassifier(
                n_estimators=p["rounds"], num_leaves=p["num_leaves"], learning_rate=p["learning_rate"],
                boosting_type=p["booster"], subsample=p["subsample"], subsample_freq=1,
                n_jobs=threads, device_type=device, random_state=0, verbose=-1,
            )
            clf.fit(X_tr, y_tr)
            return float(roc_auc_score(y_va, clf.predict_proba(X_va)[:, 1]))

        if gpu:
            for device in ("cuda", "gpu"):  # needs a GPU-enabled LightGBM build
                try:
                    return fit(device), device
                except Exception as e:  # noqa: BLE001 - fall back to the CPU
                    print(f"lightgbm device_type={device} unavailable ({str(e)[:80]}); trying next", flush=True)
        return fit("cpu"), "cpu"
    if model == "catboost":
        from catboost import CatBoostClassifier

        clf = CatBoostClassifier(
            iterations=p["rounds"], depth=p["max_depth"], learning_rate=p["learning_rate"],
            l2_leaf_reg=p["l2"], thread_count=threads, task_type="CPU", random_seed=0,
            verbose=False, allow_writing_files=False,
        )
        clf.fit(X_tr, y_tr)
        return float(roc_auc_score(y_va, clf.predict_proba(X_va)[:, 1])), "cpu"
    raise SystemExit(f"unknown model {model!r}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["xgb", "lgbm", "catboost"], required=True)
    ap.add_argument("--max-depth", dest="max_depth", default=None)
    ap.add_argument("--num-leaves", dest="num_leaves", default=None)
    ap.add_argument("--learning-rate", dest="learning_rate", default=None)
    ap.add_argument("--booster", default=None)
    ap.add_argument("--subsample", default=None)
    ap.add_argument("--l2", dest="l2_leaf_reg", default=None)
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("HPO_ROUNDS", "80")))
    ap.add_argument("--samples", type=int, default=int(os.environ.get("HPO_SAMPLES", "3000")))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.environ.get("ROTA_OUT", "."))
    args = ap.parse_args()
    if args.max_depth is None and os.environ.get("ROTA_PARAM_DEPTH"):
        args.max_depth = os.environ["ROTA_PARAM_DEPTH"]
    default_booster = {"xgb": "gbtree", "lgbm": "gbdt", "catboost": ""}[args.model]
    booster = param(args, "booster", str, default_booster)
    p = {
        # dart re-weights every tree each round (cost grows with rounds^2): fewer rounds keep a trial short
        "rounds": max(args.rounds // 4, 1) if booster == "dart" else args.rounds,
        "max_depth": param(args, "max_depth", int, 6),
        "num_leaves": param(args, "num_leaves", int, 31),
        "learning_rate": param(args, "learning_rate", float, 0.1),
        "booster": booster,
        "subsample": param(args, "subsample", float, 1.0),
        "l2": param(args, "l2_leaf_reg", float, 3.0),
    }
    threads = int(os.environ.get("ROTA_CPUS") or os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))
    gpu = args.model != "catboost" and gpu_available()
    t0 = time.time()
    auc, device = train(args.model, p, dataset(args.samples, args.seed), threads, gpu)
    secs = time.time() - t0
    print(f"model={args.model} device={device} params={json.dumps(p)} auc={auc:.5f} in {secs:.1f}s", flush=True)
    print(f"ROTA_METRIC auc={auc:.6f}", flush=True)
    print(f"ROTA_METRIC train_s={secs:.3f}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump({"auc": auc, "train_s": secs}, f)
    with open(os.path.join(args.out, "params.json"), "w") as f:
        json.dump({"model": args.model, "device": device, **p}, f)


if __name__ == "__main__":
    sys.exit(main())
