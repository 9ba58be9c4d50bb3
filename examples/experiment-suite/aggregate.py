"""Aggregate every experiment into ``summary.json``: per (phase, model, task) the mean
and 95% confidence interval (Student t) of each metric over seeds, and a success flag.

Experiment folders come from ``$ROTA_NEEDS_OUT`` or the command line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path

# Two-sided 95% Student t quantiles for df = 1..30 (no scipy needed).
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
       2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
       2.045, 2.042]


def mean_ci(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "ci95": 0.0, "n": n}
    t = T95[min(n - 1, len(T95)) - 1] if n - 1 <= len(T95) else 1.96
    return {"mean": mean, "ci95": t * statistics.stdev(values) / math.sqrt(n), "n": n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("ROTA_OUT", "."))
    ap.add_argument("dirs", nargs="*", help="experiment output folders (default: $ROTA_NEEDS_OUT)")
    args = ap.parse_args()
    folders = [Path(d) for d in args.dirs] if args.dirs else [Path(p) for p in json.loads(os.environ["ROTA_NEEDS_OUT"]).values()]
    groups: dict[str, dict[str, list[float]]] = {}
    missing = []
    for d in sorted(folders):
        try:
            cfg = json.loads((d / "config.json").read_text())
            metrics = json.loads((d / "metrics.json").read_text())
        except OSError:
            missing.append(str(d))
            continue
        key = "/".join(str(cfg[k]) for k in ("phase", "model", "task"))
        if cfg["phase"] == "probe":
            key += f"/L{cfg['layer']}"
        if cfg["phase"] == "latency":
            key += f"/c{cfg['factor']}-b{cfg['batch']}"
        for name, value in metrics.items():
            groups.setdefault(key, {}).setdefault(name, []).append(float(value))
    summary = {
        "experiments": len(folders) - len(missing),
        "missing": missing,
        "success": not missing,
        "groups": {k: {m: mean_ci(v) for m, v in ms.items()} for k, ms in sorted(groups.items())},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    for key, ms in summary["groups"].items():
        if key.startswith("main/") and "accuracy" in ms:
            s = ms["accuracy"]
            print(f"{key:28s} accuracy {s['mean']:.4f} ± {s['ci95']:.4f} (n={s['n']})")
    print(f"ROTA_METRIC experiments={summary['experiments']}")
    print(f"ROTA_METRIC missing={len(missing)}")
    if missing:
        print(f"{len(missing)} experiments have no metrics: {missing[:5]}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
