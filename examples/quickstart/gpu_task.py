"""A stand-in GPU job: prints the GPUs rota gave it, sleeps, reports a metric.

Uses nothing but the stdlib, so it runs with declared GPUs on any machine.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

from _common import out_dir, report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--expect-gpus", type=int, default=1)
    args = ap.parse_args()
    visible = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
    budget = os.environ.get("ROTA_GPU_MEMORY_BYTES")
    print(f"CUDA_VISIBLE_DEVICES={','.join(visible) or '-'} gpu_memory_bytes={budget or 'whole GPU'}", flush=True)
    if os.environ.get("ROTA_TASK") and len(visible) != args.expect_gpus:
        print(f"expected {args.expect_gpus} GPU(s), got {visible}", file=sys.stderr)
        sys.exit(1)
    time.sleep(args.seconds)
    rng = random.Random(args.seed)
    report({"accuracy": round(0.8 + 0.1 * rng.random(), 5), "gpus": len(visible)}, out_dir())


if __name__ == "__main__":
    main()
