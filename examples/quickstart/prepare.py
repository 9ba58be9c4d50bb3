"""CPU preprocessing: write a seeded toy dataset (``data.json``) into the output folder."""

from __future__ import annotations

import argparse
import json
import random

from _common import out_dir, report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--rows", type=int, default=2000)
    args = ap.parse_args()
    out = out_dir(args.out)
    rng = random.Random(0)
    rows = []
    for _ in range(args.rows):
        x = [rng.gauss(0, 1) for _ in range(4)]
        rows.append({"x": x, "y": int(x[0] + 0.5 * x[1] + rng.gauss(0, 0.5) > 0)})
    (out / "data.json").write_text(json.dumps(rows))
    print(f"wrote {len(rows)} rows to {out / 'data.json'}")
    report({"rows": len(rows)}, out)


if __name__ == "__main__":
    main()
