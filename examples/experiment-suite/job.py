"""A stand-in experiment: sleeps a scaled-down time and writes plausible metrics.

Sleeps ``--minutes x 60 x scale`` seconds, scale = ``$ROTA_EXAMPLE_TIME_SCALE``, else
``$EXAMPLE_TIME_SCALE``, else 0.001,
checkpointing progress once a "minute" so a retried attempt resumes where the last
one stopped. Metrics depend on phase, model, task, seed (and layer, factor, batch)
with seeded noise, so the aggregate step has real variation to summarise.
``$ROTA_EXAMPLE_FAIL_RATE`` / ``$EXAMPLE_FAIL_RATE`` (default 0) makes that share of
first attempts fail midway (exit 1), to exercise ``retries:``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path

TASK_BASE = {"sst2": 0.86, "agnews": 0.90, "trec": 0.80, "xsum": 0.30}
MODEL_GAIN = {"small": 0.0, "medium": 0.04, "large": 0.06,
              "bow-lr": -0.09, "tfidf-svm": -0.07, "fasttext": -0.06, "distil": -0.01, "lstm": -0.05}
PHASE_GAIN = {"main": 0.0, "zeroshot": -0.18, "probe": -0.05, "baseline": 0.0, "latency": 0.0,
              "xsum": 0.0, "ablation": 0.0}


def stable_seed(*parts: object) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def knob(name: str, default: str) -> str:
    """``ROTA_EXAMPLE_<name>``, else ``EXAMPLE_<name>``, else ``default``."""
    return os.environ.get(f"ROTA_EXAMPLE_{name}") or os.environ.get(f"EXAMPLE_{name}") or default


def metrics_for(a: argparse.Namespace) -> dict[str, float]:
    rng = random.Random(stable_seed(a.phase, a.model, a.task, a.seed, a.layer, a.factor, a.batch))
    if a.phase == "latency":
        ms = 4.0 * a.batch ** 0.8 / a.factor ** 0.7 * (1 + 0.05 * rng.gauss(0, 1))
        return {"latency_ms": round(ms, 3), "throughput": round(1000 * a.batch / ms, 2),
                "accuracy": round(0.86 - 0.01 * math.log2(a.factor) + 0.003 * rng.gauss(0, 1), 5)}
    if a.phase == "xsum":
        return {"rouge_l": round(0.30 + 0.01 * rng.gauss(0, 1), 5), "loss": round(2.1 + 0.05 * rng.gauss(0, 1), 5)}
    acc = TASK_BASE[a.task] + MODEL_GAIN.get(a.model, 0.0) + PHASE_GAIN[a.phase]
    if a.phase == "probe" and a.layer:
        depth = {"small": 12, "medium": 24}.get(a.model, 12)
        acc -= 0.08 * abs(a.layer / depth - 0.7)  # middle-late layers probe best
    acc += 0.008 * rng.gauss(0, 1)
    return {"accuracy": round(min(max(acc, 0.0), 1.0), 5), "loss": round(-math.log(max(acc, 1e-3)), 5)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase", required=True, choices=sorted(PHASE_GAIN))
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", required=True, choices=sorted(TASK_BASE))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--layer", type=int, default=0)
    ap.add_argument("--factor", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--minutes", type=float, required=True, help="real duration of the experiment")
    ap.add_argument("--expect-gpus", type=int, default=None)
    ap.add_argument("--out", default=os.environ.get("ROTA_OUT", "."))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    scale = float(knob("TIME_SCALE", "0.001"))
    visible = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
    if a.expect_gpus and os.environ.get("ROTA_TASK") and len(visible) != a.expect_gpus:
        print(f"expected {a.expect_gpus} GPUs, CUDA_VISIBLE_DEVICES={visible}", file=sys.stderr)
        sys.exit(2)
    print(f"{a.phase} {a.model} {a.task} seed={a.seed} gpus={','.join(visible) or '-'} "
          f"budget={os.environ.get('ROTA_GPU_MEMORY_BYTES', 'whole GPU')} threads={os.environ.get('OMP_NUM_THREADS')}",
          flush=True)

    ckpt = out / "checkpoint.json"
    steps = max(int(round(a.minutes)), 1)  # one checkpoint per simulated minute
    start = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
    if start:
        print(f"resuming from checkpoint at step {start}/{steps}", flush=True)
    fail_rate = float(knob("FAIL_RATE", "0"))
    attempt = int(os.environ.get("ROTA_ATTEMPT", "1"))
    fail_at = steps // 2 if attempt == 1 and random.Random(stable_seed(a, os.environ.get("ROTA_TASK"))).random() < fail_rate else -1
    for step in range(start, steps):
        if step == fail_at:
            print("simulated transient failure (ROTA_EXAMPLE_FAIL_RATE)", file=sys.stderr, flush=True)
            sys.exit(1)
        time.sleep(60 * scale)
        ckpt.write_text(json.dumps({"step": step + 1}))
    m = metrics_for(a)
    for k, v in m.items():
        print(f"ROTA_METRIC {k}={v}", flush=True)
    (out / "metrics.json").write_text(json.dumps(m))
    (out / "config.json").write_text(json.dumps(vars(a)))


if __name__ == "__main__":
    main()
