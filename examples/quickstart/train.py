"""A stand-in training job: loads prepare's data, "trains" for a few seconds, reports accuracy.

Finds the data through ``$ROTA_NEEDS_OUT`` (rota sets it) or ``--data``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

from _common import needs_out, out_dir, report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["small", "large"], required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--data", default=None, help="data.json (default: from $ROTA_NEEDS_OUT['prepare'])")
    args = ap.parse_args()
    data = Path(args.data) if args.data else Path(needs_out()["prepare"]) / "data.json"
    rows = json.loads(data.read_text())
    rng = random.Random(args.seed)
    # "Train": a perceptron with a few epochs, spread over --seconds of wall time.
    w = [0.0] * 4
    epochs = 5 if args.model == "small" else 10
    for _ in range(epochs):
        for r in rng.sample(rows, len(rows)):
            pred = int(sum(a * b for a, b in zip(w, r["x"], strict=True)) > 0)
            if pred != r["y"]:
                sign = 1 if r["y"] else -1
                w = [a + sign * b * 0.01 for a, b in zip(w, r["x"], strict=True)]
        time.sleep(args.seconds / epochs)
    acc = sum(int(sum(a * b for a, b in zip(w, r["x"], strict=True)) > 0) == r["y"] for r in rows) / len(rows)
    print(f"model={args.model} seed={args.seed} accuracy={acc:.4f}", flush=True)
    report({"accuracy": round(acc, 5), "weight_norm": round(math.sqrt(sum(a * a for a in w)), 5)}, out_dir())


if __name__ == "__main__":
    main()
