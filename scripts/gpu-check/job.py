"""The real torch jobs of scripts/gpu-check.sh (one file, one mode per check).

share:   checks from inside torch that it sees exactly its CUDA_VISIBLE_DEVICES (one device,
         the UUID rota meant), holds --gib GiB for --seconds, records when it ran ($ROTA_OUT/times.json)
alloc:   allocates --gib GiB (a CUDA out-of-memory error ends it, as in a real job)
enforce: under enforce_gpu_memory, a small allocation works and one over the booking fails
hold:    (outside rota) holds --gib GiB, writes --ready, sleeps until killed: the foreign process
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

GiB = 2**30


def _grab(gib: float) -> torch.Tensor:
    return torch.empty(int(gib * GiB), dtype=torch.uint8, device="cuda")


def share(args: argparse.Namespace) -> int:
    cvd = [t for t in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if t]
    n = torch.cuda.device_count()
    if len(cvd) != 1 or n != 1:
        print(f"CUDA_VISIBLE_DEVICES={cvd} but torch sees {n} device(s)", file=sys.stderr)
        return 1
    want = json.loads(os.environ.get("GPU_CHECK_UUIDS", "{}")).get(cvd[0])
    got = getattr(torch.cuda.get_device_properties(0), "uuid", None)
    if want and got is not None and str(got).removeprefix("GPU-") != want.removeprefix("GPU-"):
        print(f"CUDA_VISIBLE_DEVICES={cvd[0]} should be {want}; torch sees {got}", file=sys.stderr)
        return 1
    t0 = time.time()
    x = _grab(args.gib)
    x.fill_(1)
    torch.cuda.synchronize()
    time.sleep(args.seconds)
    out = os.environ.get("ROTA_OUT", ".")
    with open(os.path.join(out, "times.json"), "w") as f:
        json.dump({"start": t0, "end": time.time(), "cvd": cvd[0], "torch_uuid": str(got)}, f)
    print(f"ROTA_METRIC held_gib={args.gib}")
    return 0


def alloc(args: argparse.Namespace) -> int:
    x = _grab(args.gib)
    x.fill_(1)
    torch.cuda.synchronize()
    time.sleep(args.seconds)
    return 0


def enforce(args: argparse.Namespace) -> int:
    small = _grab(args.gib / 4)
    del small
    try:
        _grab(args.gib)
    except torch.cuda.OutOfMemoryError as e:
        print(f"capped as booked: {str(e).splitlines()[0]}")
        return 0
    print(f"allocated {args.gib} GiB beyond the booking: the cap did not hold", file=sys.stderr)
    return 1


def hold(args: argparse.Namespace) -> int:
    x = _grab(args.gib)
    x.fill_(1)
    torch.cuda.synchronize()
    with open(args.ready, "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(60)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["share", "alloc", "enforce", "hold"])
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--ready", default="")
    args = ap.parse_args()
    return {"share": share, "alloc": alloc, "enforce": enforce, "hold": hold}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
