"""Readers never disturb the writer: ``rota status`` in a loop during a big run.

    python bench/bench_status_load.py [--tasks 5000] [--reps 3] [--interval 1]
                                      [--reader cli|api] [--human] [--json]

Runs ``rota run`` on TASKS ``true`` tasks (``--cpus 8``) REPS times without and
REPS times with one reader polling the state, and prints the median wall times,
the slowdown (of the medians, and the median of each with/without pair's), the number of status calls, reader errors (any non-zero exit,
any unparsable output), the reader's median CPU seconds per call and the
largest ``state.db-wal`` seen. Alternates the two conditions to spread machine
noise. Exit 1 on any reader error.

The default, ``--interval 1``, is the realistic user: ``watch -n1 rota status
--json`` (one call a second, a new process each time). ``--interval 0`` polls
back to back (the worst case: one core spent on readers). ``--reader api``
calls ``rota.status()`` in one long-lived process (the database cost alone);
``--human`` polls the table (``rota status``) instead of ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
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
        c0 = time.process_time()
        try:
            data = api.status(state_dir=sd)
            print(json.dumps({"ok": len(data["tasks"]), "cpu": time.process_time() - c0}), flush=True)
        except Exception as e:
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
    time.sleep(interval if interval > 0 else 0.001)
"""


class Reader(threading.Thread):
    """``--reader cli``: a new ``rota status [--json]`` process per call (pays Python start-up and
    imports each time). ``--reader api``: one process calling ``rota.status()`` in a loop
    (the database cost alone)."""

    def __init__(self, state_dir: Path, interval: float, mode: str = "cli", human: bool = False) -> None:
        super().__init__(daemon=True)
        self.state_dir, self.interval, self.mode, self.human = state_dir, interval, mode, human
        self.stop = threading.Event()
        self.calls = 0
        self.errors: list[str] = []
        self.cpu: list[float] = []  # user + system seconds per call
        self.seen_tasks = 0

    def run(self) -> None:
        if self.mode == "api":
            self._run_api()
            return
        args = [*ROTA, "status", *([] if self.human else ["--json"]), "--state-dir", str(self.state_dir)]
        while not self.stop.is_set():
            if (self.state_dir / "state.db").exists():
                code, out, err = self._call(args)
                self.calls += 1
                if code != 0:
                    self.errors.append(f"exit {code}: {err.strip()[-200:]}")
                elif self.human:
                    if not out.strip() or "Traceback" in err:
                        self.errors.append(f"empty table: {err.strip()[-200:]}")
                else:
                    try:
                        self.seen_tasks = len(json.loads(out)["tasks"])
                    except (ValueError, KeyError) as e:
                        self.errors.append(f"bad JSON: {e}")
            self.stop.wait(self.interval if self.interval > 0 else 0.001)

    def _call(self, args: list[str]) -> tuple[int, str, str]:
        """Run one reader process; wait4 gives its own CPU time (user + system)."""
        with tempfile.TemporaryFile() as errf:
            p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errf)
            assert p.stdout is not None
            out = p.stdout.read()
            p.stdout.close()
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            self.cpu.append(ru.ru_utime + ru.ru_stime)
            errf.seek(0)
            err = errf.read()
        return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")

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
            else:
                self.cpu.append(rec["cpu"])


class WalWatch(threading.Thread):
    """The largest ``state.db-wal`` seen (checkpoint starvation would grow it without bound)."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(daemon=True)
        self.path = state_dir / "state.db-wal"
        self.stop = threading.Event()
        self.max_bytes = 0

    def run(self) -> None:
        while not self.stop.wait(0.1):
            try:
                self.max_bytes = max(self.max_bytes, self.path.stat().st_size)
            except OSError:
                pass


def one(tasks: int, with_reader: bool, interval: float, cpus: int, mode: str = "cli",
        human: bool = False) -> tuple[float, Reader | None, int]:
    root = Path(tempfile.mkdtemp(prefix="rota-statusload-"))
    spec = root / "rota.yaml"
    spec.write_text(f"tasks:\n  - name: t-{{i}}\n    command: 'true'\n    matrix: {{i: {list(range(tasks))}}}\n")
    sd = root / ".rota"
    reader = Reader(sd, interval, mode, human) if with_reader else None
    wal = WalWatch(sd)
    wal.start()
    if reader:
        reader.start()
    t0 = time.perf_counter()
    p = subprocess.run([*ROTA, "run", str(spec), "--plain", "--gpus", "none", "--cpus", str(cpus)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    wal.stop.set()
    if reader:
        reader.stop.set()
        reader.join()
    wal.join()
    if p.returncode != 0:
        raise SystemExit(f"rota run failed ({p.returncode}): {p.stderr[-500:]}")
    shutil.rmtree(root, ignore_errors=True)
    return wall, reader, wal.max_bytes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=8)
    ap.add_argument("--interval", type=float, default=1.0,
                    help="seconds between status calls (default 1: watch -n1; 0: back to back)")
    ap.add_argument("--reader", choices=["cli", "api"], default="cli")
    ap.add_argument("--human", action="store_true", help="poll 'rota status' (the table), not --json")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    base: list[float] = []
    loaded: list[float] = []
    wal_base: list[int] = []
    wal_loaded: list[int] = []
    cpu: list[float] = []
    calls = 0
    errors: list[str] = []
    for _ in range(args.reps):
        wall, _r, wal = one(args.tasks, False, args.interval, args.cpus)
        base.append(wall)
        wal_base.append(wal)
        wall, reader, wal = one(args.tasks, True, args.interval, args.cpus, args.reader, args.human)
        loaded.append(wall)
        wal_loaded.append(wal)
        assert reader is not None
        calls += reader.calls
        errors += reader.errors
        cpu += reader.cpu
    mb, ml = statistics.median(base), statistics.median(loaded)
    what = "rota.status()" if args.reader == "api" else "rota status" + ("" if args.human else " --json")
    res = {"tasks": args.tasks, "cpus": args.cpus, "reps": args.reps, "interval_s": args.interval,
           "reader": args.reader, "human": args.human,
           "median_wall_s_without_readers": round(mb, 2), "median_wall_s_with_readers": round(ml, 2),
           "slowdown_pct": round(100 * (ml - mb) / mb, 1),
           "paired_slowdown_pct_median": round(100 * statistics.median(w / b - 1 for b, w in zip(base, loaded, strict=True)), 1),
           "status_calls": calls, "reader_errors": len(errors),
           "reader_cpu_s_per_call_median": round(statistics.median(cpu), 3) if cpu else None,
           "wal_max_bytes_without": max(wal_base), "wal_max_bytes_with": max(wal_loaded),
           "walls_without": [round(x, 2) for x in base], "walls_with": [round(x, 2) for x in loaded],
           "errors": errors[:5]}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        per_call = f"{res['reader_cpu_s_per_call_median']:.3f}" if cpu else "?"
        print(f"{args.tasks} 'true' tasks, --cpus {args.cpus}, median of {args.reps}: {mb:.2f}s without readers, "
              f"{ml:.2f}s with {what} polling (interval {args.interval:g}s): "
              f"{res['slowdown_pct']:+.1f}% (median of paired runs {res['paired_slowdown_pct_median']:+.1f}%); {calls} status calls, {len(errors)} reader errors, "
              f"reader CPU {per_call}s per call; largest WAL {max(wal_base) / 2**20:.1f} MiB without, "
              f"{max(wal_loaded) / 2**20:.1f} MiB with readers")
        for e in errors[:5]:
            print("error:", e)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
