"""Every reliability figure of docs/reliability.md, from one command.

    python bench/reliability.py            # full: 10 chaos runs, 1 GB log, 5,000-task status load
    python bench/reliability.py --quick    # CI-sized: 2 short chaos runs, 200 MB log, 1,000 tasks

Runs, each in its own process: the chaos suite (bench/chaos.py), the spec
fuzz tests (tests/fuzz), the storage/OOM/disk-full tests (tests/reliability),
the big-log RSS bench (bench/bench_big_log.py) and the status-under-load
bench (bench/bench_status_load.py); prints one Markdown table. Exit 1 if any
part failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def _run(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str, float]:
    t0 = time.time()
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})})
    return p.returncode, p.stdout + p.stderr, time.time() - t0


def _json_tail(text: str) -> dict:
    start = text.rfind("\n{")
    return json.loads(text[start + 1 if start >= 0 else text.find("{"):])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--chaos-runs", type=int)
    args = ap.parse_args(argv)
    q = args.quick
    rows: list[tuple[str, str, str]] = []
    ok = True

    # 1. chaos
    runs = args.chaos_runs or (2 if q else 10)
    code, out, wall = _run([PY, "bench/chaos.py", "--runs", str(runs), "--json", *(["--short"] if q else [])])
    c = _json_tail(out)
    ok &= code == 0
    rows += [("chaos", "runs / controller SIGKILLs / task SIGKILLs", f"{c['runs']} / {c['controller_kills']} / {c['task_kills']}"),
             ("chaos", "tasks / executions", f"{c['tasks']} / {c['executions']}"),
             ("chaos", "tasks lost", str(c["lost"])),
             ("chaos", "finished tasks executed again (not adoptable)",
              f"{c['finished_again']} ({c['finished_again_unadoptable']})"),
             ("chaos", "overlapping executions of one task", str(c["overlaps"])),
             ("chaos", "orphan processes left", str(c["orphans"])),
             ("chaos", "GPU memory ledger above capacity", str(c["ledger_over"])),
             ("chaos", "wall time", f"{wall:.0f} s")]

    # 2. fuzz
    summary = Path(tempfile.mkstemp(suffix=".json")[1])
    code, out, wall = _run([PY, "-m", "pytest", "tests/fuzz", "-q", "-s", "-p", "no:warnings", "-p", "no:cacheprovider"],
                           env={"ROTA_FUZZ_SUMMARY": str(summary)})
    ok &= code == 0
    seen = json.loads(summary.read_text() or "{}") if summary.exists() else {}
    summary.unlink(missing_ok=True)
    passed = re.search(r"(\d+) passed", out)
    failed = re.search(r"(\d+) failed", out)
    rows += [("fuzz", "spec files through the CLI (exit 2 / exit 0-1)",
              f"{sum(seen.values())} ({seen.get('exit 2', 0)} / {seen.get('exit 0', 0) + seen.get('exit 1', 0)})"),
             ("fuzz", "tracebacks, tasks started or state written by a refused spec, files outside the state folder",
              "0" if code == 0 else "see failures"),
             ("fuzz", "tests passed / failed", f"{passed.group(1) if passed else 0} / {failed.group(1) if failed else 0}")]
    for m in re.finditer(r"^(.*?): refused in ([\d.]+)s, peak RSS (\d+) MB", out, re.M):
        rows.append(("fuzz", f"refused: {m.group(1).lstrip('.')}", f"{m.group(2)} s, peak RSS {m.group(3)} MB"))
    rows.append(("fuzz", "wall time", f"{wall:.0f} s"))

    # 3. storage: disk full, read-only, bad databases, OOM retries, readers during a run
    code, out, wall = _run([PY, "-m", "pytest", "tests/reliability", "-q", "-p", "no:warnings", "-p", "no:cacheprovider",
                            *(["-m", "not slow"] if q else [])])
    ok &= code == 0
    passed = re.search(r"(\d+) passed", out)
    failed = re.search(r"(\d+) failed", out)
    skipped = re.search(r"(\d+) skipped", out)
    rows.append(("storage", "disk full, read-only, corrupt/foreign/newer db, OOM retry tests: passed / failed / skipped",
                 f"{passed.group(1) if passed else 0} / {failed.group(1) if failed else 0} / "
                 f"{skipped.group(1) if skipped else 0}"))
    code, out, _ = _run([PY, "bench/bench_big_log.py", "--size", "200M" if q else "1G", "--json"])
    b = _json_tail(out)
    ok &= code == 0
    rows.append(("storage", f"controller peak RSS, one task writing {b['log_mb']} MB (baseline)",
                 f"{b['big_log_peak_rss_mb']} MB ({b['baseline_peak_rss_mb']} MB); final metric collected: "
                 f"{'yes' if b['metric_collected'] else 'NO'}"))
    tasks = 1000 if q else 5000
    code, out, _ = _run([PY, "bench/bench_status_load.py", "--tasks", str(tasks), "--reps", "1" if q else "3",
                         "--interval", "1", "--json"])
    s = _json_tail(out)
    ok &= code == 0
    rows += [("storage", f"{tasks} 'true' tasks --cpus 8: median wall without / with 'rota status --json' every 1 s",
              f"{s['median_wall_s_without_readers']} s / {s['median_wall_s_with_readers']} s "
              f"({s['slowdown_pct']:+.1f}%)"),
             ("storage", "status calls / reader errors", f"{s['status_calls']} / {s['reader_errors']}")]

    print("| part | check | result |\n|---|---|---|")
    for part, what, res in rows:
        print(f"| {part} | {what} | {res} |")
    print(f"\nall checks {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
