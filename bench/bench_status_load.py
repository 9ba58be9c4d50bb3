"""Readers never disturb the writer: ``rota status --json`` in a loop during a big run.

    python bench/bench_status_load.py [--tasks 5000] [--reps 3] [--interval 0] [--json]

Runs ``rota run`` on TASKS ``true`` tasks (``--cpus 8``) REPS times without and
REPS times with a reader polling ``rota status --json`` (a new process each
time, back to back when ``--interval 0``), and prints the median wall times,
the slowdown, the number of status calls and reader errors (any non-zero exit,
any unparsable JSON). Alternates the two conditions to spread machine noise.
Exit 1 on any reader error.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROTA = [sys.executable, "-m", "rota.cli"]


API_LOOP = """
import json, sys, time
from pathlib import Path
from rota import api
sd, interval = Path(sys.argv[1]), float(sys.argv[2])
while True:
    if (sd / "state.db").exists():
        try:
            data = api.status(state_dir=sd)
            print(json.dumps({"ok": len(data["tasks"])}), flush=True)
        except Exception as e:
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
    time.sleep(interval if interval > 0 else 0.001)
"""


class Reader(threading.Thread):
    """``--reader cli``: a new ``rota status --json`` process per call (pays Python start-up and
    imports each time). ``--reader api``: one process calling ``rota.status()`` in a loop
    (the database cost alone)."""

    def __init__(self, state_dir: Path, interval: float, mode: str = "cli") -> None:
        super().__init__(daemon=True)
        self.state_dir, self.interval, self.mode = state_dir, interval, mode
        self.stop = threading.Event()
        self.calls = 0
        self.errors: list[str] = []
        self.seen_tasks = 0

    def run(self) -> None:
        if self.mode == "api":
            self._run_api()
            return
        while not self.stop.is_set():
            if (self.state_dir / "state.db").exists():
                p = subprocess.run([*ROTA, "status", "--json", "--state-dir", str(self.state_dir)],
                                   capture_output=True, text=True)
                self.calls += 1
                if p.returncode != 0:
                    self.errors.append(f"exit {p.returncode}: {p.stderr.strip()[-200:]}")
                else:
                    try:
                        self.seen_tasks = len(json.loads(p.stdout)["tasks"])
                    except (ValueError, KeyError) as e:
                        self.errors.append(f"bad JSON: {e}")
            self.stop.wait(self.interval if self.interval > 0 else 0.001)


    def _run_api(self) -> None:
        proc = subprocess.Popen([sys.executable, "-c", API_LOOP, str(self.state_dir), str(self.interval)],
                                stdout=subprocess.PIPE, text=True)
        self.stop.wait()
        proc.terminate()
        out, _ = proc.communicate()
        for line in out.splitlines():
            self.calls += 1
            rec = json.loads(line)
            if "error" in rec:
                self.errors.append(rec["error"])


def one(tasks: int, with_reader: bool, interval: float, cpus: int, mode: str = "cli") -> tuple[float, Reader | None]:
    root = Path(tempfile.mkdtemp(prefix="rota-statusload-"))
    spec = root / "rota.yaml"
    spec.write_text(f"tasks:\n  - name: t-{{i}}\n    command: 'true'\n    matrix: {{i: {list(range(tasks))}}}\n")
    sd = root / ".rota"
    reader = Reader(sd, interval, mode) if with_reader else None
    if reader:
        reader.start()
    t0 = time.perf_counter()
    p = subprocess.run([*ROTA, "run", str(spec), "--plain", "--gpus", "none", "--cpus", str(cpus)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if reader:
        reader.stop.set()
        reader.join()
    if p.returncode != 0:
        raise SystemExit(f"rota run failed ({p.returncode}): {p.stderr[-500:]}")
    shutil.rmtree(root, ignore_errors=True)
    return wall, reader


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=8)
    ap.add_argument("--interval", type=float, default=0.0, help="seconds between status calls (0: back to back)")
    ap.add_argument("--reader", choices=["cli", "api"], default="cli")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    base: list[float] = []
    loaded: list[float] = []
    calls = 0
    errors: list[str] = []
    for _ in range(args.reps):
        base.append(one(args.tasks, False, args.interval, args.cpus)[0])
        wall, reader = one(args.tasks, True, args.interval, args.cpus, args.reader)
        loaded.append(wall)
        assert reader is not None
        calls += reader.calls
        errors += reader.errors
    mb, ml = statistics.median(base), statistics.median(loaded)
    res = {"tasks": args.tasks, "cpus": args.cpus, "reps": args.reps, "interval_s": args.interval,
           "reader": args.reader,
           "median_wall_s_without_readers": round(mb, 2), "median_wall_s_with_readers": round(ml, 2),
           "slowdown_pct": round(100 * (ml - mb) / mb, 1), "status_calls": calls, "reader_errors": len(errors),
           "walls_without": [round(x, 2) for x in base], "walls_with": [round(x, 2) for x in loaded],
           "errors": errors[:5]}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{args.tasks} 'true' tasks, --cpus {args.cpus}, median of {args.reps}: {mb:.2f}s without readers, "
              f"{ml:.2f}s with {'rota status --json' if args.reader == 'cli' else 'rota.status()'} polling (interval {args.interval:g}s): "
              f"{res['slowdown_pct']:+.1f}%; {calls} status calls, {len(errors)} reader errors")
        for e in errors[:5]:
            print("error:", e)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
