"""Collect every needed task's metrics.json; write summary.json with the mean accuracy per group."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from _common import needs_out, out_dir, report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("dirs", nargs="*", help="task output folders (default: $ROTA_NEEDS_OUT)")
    args = ap.parse_args()
    folders = {Path(d).name: d for d in args.dirs} if args.dirs else needs_out()
    by_group: dict[str, list[float]] = {}
    for name, folder in sorted(folders.items()):
        m = json.loads((Path(folder) / "metrics.json").read_text())
        group = name.rsplit("-", 1)[0]  # train-small-1 -> train-small
        by_group.setdefault(group, []).append(m["accuracy"])
    summary = {g: {"mean_accuracy": statistics.fmean(v), "n": len(v)} for g, v in by_group.items()}
    out = out_dir(args.out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    report({f"{g}_accuracy": round(s["mean_accuracy"], 5) for g, s in summary.items()}, out)


if __name__ == "__main__":
    main()
