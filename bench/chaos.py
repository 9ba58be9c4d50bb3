"""Chaos suite: SIGKILL the controller and random tasks, restart, check nothing is lost.

    python bench/chaos.py [--runs N] [--short] [--seed S] [--json] [--ray ADDRESS | --slurm]

Each run is a mixed workload on declared GPUs (``--gpus 4x80GB``): tasks
sharing GPUs by ``gpu_memory``, whole-GPU tasks, two-GPU tasks, CPU tasks,
flaky tasks (fail once), dependencies and retries. While ``rota run`` works,
the controller is killed with SIGKILL at random moments (and restarted) and
random tasks are SIGKILLed. Every task records its start and end in a side
file (``bench/chaos_task.sh``); a watcher thread notes when each task
process disappears. After the run completes, the checks:

* tasks lost: not succeeded at the end, or marked succeeded without a
  recorded successful execution (must be 0);
* finished tasks executed again: an execution after a successful one
  (must be 0, beyond those whose successful attempt rota could not adopt and
  recorded as ``lost``, reported separately);
* overlapping executions of one task (must be 0);
* orphan processes: anything still running with this state folder in its
  environment, or any recorded task process alive (must be 0);
* GPU memory ledger above capacity: summing each execution's declared
  booking on the GPUs of its recorded CUDA_VISIBLE_DEVICES over its start/end
  times, any GPU above 80GB at any instant (must be 0).

With ``--ray ADDRESS`` the same workload runs with ``--backend ray`` on that
cluster (4 CPUs and 4 GPUs declared, as ``scripts/test.sh`` starts it): the
controller's kills then test adoption through the supervisor actor, and the
task kills hit the task's ``bash`` inside a Ray worker. With ``--slurm`` it runs
with ``--backend slurm`` on the local cluster (``scripts/slurm-up.sh``: 4 GPUs,
8 CPUs): a new controller reattaches to the jobs by the ids in its state.

Exit status 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
TASK = HERE / "chaos_task.sh"
GB = 2**30  # rota sizes are binary: 80GB = 80 GiB
GPU_GB = 80
ROTA = [sys.executable, "-m", "rota.cli"]


@dataclass
class Execution:
    name: str
    attempt: int
    pid: int
    gpus: list[int]
    booked_gb: float
    start: float
    end: float | None = None
    code: int | None = None
    killed_by_chaos: bool = False


@dataclass
class RunStats:
    tasks: int = 0
    controller_kills: int = 0
    task_kills: int = 0
    executions: int = 0
    lost: int = 0
    finished_again: int = 0
    finished_again_unadoptable: int = 0
    overlaps: int = 0
    orphans: int = 0
    ledger_over: int = 0
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def workload(rec: Path, marks: Path, rng: random.Random, short: bool) -> str:
    """The spec text: every kind of request, dependencies, retries."""
    n_mem, n_whole, n_pair, n_cpu, n_flaky = (6, 2, 2, 3, 2) if short else (12, 4, 4, 6, 4)

    def nap() -> str:
        return f"{rng.uniform(0.3, 1.6 if short else 2.5):.2f}"

    lines = ["tasks:"]

    def task(name: str, gpu: str, flaky: int = 0, needs: str | None = None) -> None:
        lines.append(f"  - name: {name}")
        lines.append(f"    command: bash {TASK} {rec} {name} {nap()} {flaky} {marks}")
        lines.append("    retries: 6")
        for part in gpu.split(";"):
            if part:
                lines.append(f"    {part}")
        if needs:
            lines.append(f"    needs: {json.dumps(needs)}")

    for i in range(n_mem):
        task(f"mem-{i}", "gpus: 1;gpu_memory: 30GB")
    for i in range(n_whole):
        task(f"whole-{i}", "gpus: 1")
    for i in range(n_pair):
        task(f"pair-{i}", "gpus: 2;gpu_memory: 20GB")
    for i in range(n_cpu):
        task(f"cpu-{i}", "cpus: 1")
    for i in range(n_flaky):
        task(f"flaky-{i}", "gpus: 1;gpu_memory: 50GB", flaky=1)
    task("agg-mem", "cpus: 1", needs=["mem-*"])
    task("agg-gpu", "gpus: 1;gpu_memory: 10GB", needs=["whole-*", "pair-*", "flaky-*"])
    task("final", "cpus: 1", needs=["agg-mem", "agg-gpu", "cpu-*"])
    return "\n".join(lines) + "\n"


class Watcher(threading.Thread):
    """Parses the side file and notes the last time each task process was seen alive."""

    def __init__(self, rec: Path) -> None:
        super().__init__(daemon=True)
        self.rec = rec
        self.execs: dict[int, Execution] = {}
        self.order: list[Execution] = []
        self.last_alive: dict[int, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self._offset = 0

    def scan(self) -> None:
        try:
            with open(self.rec) as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        cut = data.rfind("\n") + 1
        self._offset += len(data[:cut].encode())
        with self.lock:
            for line in data[:cut].splitlines():
                p = line.split()
                if p[0] == "S" and len(p) == 7:
                    gpus = [] if p[4] == "-" else [int(g) for g in p[4].split(",") if g]
                    booked = int(p[5]) / GB if int(p[5]) else (GPU_GB if gpus else 0)
                    e = Execution(p[1], int(p[2]), int(p[3]), gpus, booked, float(p[6]))
                    self.execs[e.pid] = e
                    self.order.append(e)
                    self.last_alive[e.pid] = e.start
                elif p[0] == "E" and len(p) == 6 and int(p[3]) in self.execs:
                    e = self.execs[int(p[3])]
                    e.end, e.code = float(p[5]), int(p[4])

    def run(self) -> None:
        while not self.stop.is_set():
            self.scan()
            now = time.time()
            with self.lock:
                for e in self.order:
                    if e.end is None and e.code is None and _alive(e.pid):
                        self.last_alive[e.pid] = now
            time.sleep(0.02)
        self.scan()

    def running(self) -> list[Execution]:
        with self.lock:
            return [e for e in self.order if e.end is None and not e.killed_by_chaos and _alive(e.pid)]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


LOCAL = ["--gpus", "4x80GB", "--cpus", "4"]


def one_run(index: int, rng: random.Random, short: bool, keep: bool, backend: list[str] = LOCAL) -> RunStats:
    stats = RunStats()
    root = Path(tempfile.mkdtemp(prefix=f"rota-chaos-{index}-"))
    rec, marks, sd = root / "rec.txt", root / "marks", root / "state"
    marks.mkdir()
    spec = root / "rota.yaml"
    spec.write_text(workload(rec, marks, rng, short))
    stats.tasks = spec.read_text().count("  - name:")
    watcher = Watcher(rec)
    watcher.start()
    max_controller_kills = 3 if short else 6
    max_task_kills = 3 if short else 8
    t0 = time.time()
    final_rc = None
    attempts = 0
    while final_rc is None:
        attempts += 1
        if attempts > 40:
            stats.notes.append("gave up after 40 controller starts")
            break
        proc = subprocess.Popen([*ROTA, "run", str(spec), "--plain", *backend,
                                 "--state-dir", str(sd), "--retry-delay", "0.05", "--grace", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        kill_at = None
        if stats.controller_kills < max_controller_kills:
            # Sometimes very early (start-up, sync, first launches), mostly mid-run.
            kill_at = time.time() + (rng.uniform(0.05, 0.8) if rng.random() < 0.3 else rng.uniform(0.8, 4.0))
        next_task_kill = time.time() + rng.uniform(0.5, 2.0)
        while proc.poll() is None:
            now = time.time()
            if kill_at is not None and now >= kill_at:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                stats.controller_kills += 1
                break
            if stats.task_kills < max_task_kills and now >= next_task_kill:
                victims = watcher.running()
                if victims:
                    v = rng.choice(victims)
                    with watcher.lock:
                        v.killed_by_chaos = True
                        kill_time = time.time()
                    try:
                        os.kill(v.pid, signal.SIGKILL)
                        stats.task_kills += 1
                        with watcher.lock:
                            watcher.last_alive[v.pid] = max(watcher.last_alive.get(v.pid, 0.0), kill_time)
                    except ProcessLookupError:
                        v.killed_by_chaos = False
                next_task_kill = now + rng.uniform(0.5, 2.0)
            time.sleep(0.01)
        else:
            final_rc = proc.returncode
            err = proc.stderr.read() if proc.stderr else ""
            if final_rc != 0:
                stats.notes.append(f"final rota run exited {final_rc}: {err.strip()[-300:]}")
        if proc.stderr:
            proc.stderr.close()
    stats.wall_s = time.time() - t0
    time.sleep(0.3)
    watcher.stop.set()
    watcher.join()
    check(stats, watcher, sd)
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        stats.notes.append(f"kept {root}")
    return stats


def check(stats: RunStats, w: Watcher, sd: Path) -> None:
    from rota.store.sqlite import SqliteStore

    execs = w.order
    stats.executions = len(execs)
    for e in execs:  # executions that never wrote an end: ended when last seen alive
        if e.end is None:
            e.end = w.last_alive.get(e.pid, e.start)
    store = SqliteStore(sd, readonly=True)
    try:
        rows = {r.name: r for r in store.tasks()}
        attempts = {(a["task"], a["attempt"]): a for a in store.attempts()}
    finally:
        store.close()
    by_task: dict[str, list[Execution]] = {}
    for e in execs:
        by_task.setdefault(e.name, []).append(e)
    for name, r in rows.items():
        mine = sorted(by_task.get(name, []), key=lambda e: e.start)
        ok = [e for e in mine if e.code == 0]
        if r.state != "succeeded" or not ok:
            stats.lost += 1
            stats.notes.append(f"lost: {name} state={r.state} reason={r.reason!r} executions={len(mine)}")
        first_ok = ok[0] if ok else None
        if first_ok is not None:
            for e in mine:
                if e.start > first_ok.start:
                    row = attempts.get((name, first_ok.attempt), {})
                    if row.get("state") == "lost":
                        stats.finished_again_unadoptable += 1
                    else:
                        stats.finished_again += 1
                        stats.notes.append(f"ran again after success: {name} attempt {e.attempt} "
                                           f"(attempt {first_ok.attempt} recorded {row.get('state')!r})")
        for a, b in zip(mine, mine[1:], strict=False):
            if b.start < (a.end or a.start):
                stats.overlaps += 1
                stats.notes.append(f"overlap: {name} attempts {a.attempt} and {b.attempt}")
    # Orphans: every recorded task process, and anything with this state folder in its environment.
    for e in execs:
        if _alive(e.pid):
            stats.orphans += 1
            stats.notes.append(f"orphan: {e.name} pid {e.pid}")
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("ROTA_STATE_DIR") == str(sd.resolve()) and p.status() != psutil.STATUS_ZOMBIE:
                stats.orphans += 1
                stats.notes.append(f"orphan: pid {p.pid} {p.name()}")
        except (psutil.Error, OSError):
            continue
    # GPU memory ledger, per GPU, ends before starts at equal times.
    events: list[tuple[float, int, int, float]] = []
    for e in execs:
        for g in e.gpus:
            events.append((e.start, 1, g, e.booked_gb))
            events.append((e.end or e.start, -1, g, e.booked_gb))
    events.sort(key=lambda x: (x[0], x[1]))
    load: dict[int, float] = {}
    for ts, kind, g, gb in events:
        load[g] = load.get(g, 0.0) + kind * gb
        if load[g] > GPU_GB + 1e-6:
            stats.ledger_over += 1
            stats.notes.append(f"GPU {g} booked {load[g]:.0f}GB at {ts:.3f}")


FIGURES = [("runs", "runs"), ("controller kills (SIGKILL)", "controller_kills"), ("task kills (SIGKILL)", "task_kills"),
           ("tasks", "tasks"), ("task executions", "executions"), ("tasks lost", "lost"),
           ("finished tasks executed again", "finished_again"),
           ("  (of which not adoptable, recorded lost)", "finished_again_unadoptable"),
           ("overlapping executions of one task", "overlaps"), ("orphan processes left", "orphans"),
           ("GPU memory ledger above capacity", "ledger_over")]
MUST_BE_ZERO = ("lost", "finished_again", "overlaps", "orphans", "ledger_over")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=None, help="runs (default 10, --short 2)")
    ap.add_argument("--short", action="store_true", help="small workload, few kills (CI)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the totals as JSON")
    ap.add_argument("--keep", action="store_true", help="keep each run's folder")
    ap.add_argument("--ray", metavar="ADDRESS", help="run on this Ray cluster (--backend ray)")
    ap.add_argument("--slurm", action="store_true", help="run on the local SLURM cluster (--backend slurm)")
    args = ap.parse_args(argv)
    runs = args.runs if args.runs is not None else (2 if args.short else 10)
    rng = random.Random(args.seed)
    total = RunStats()
    total_runs = 0
    t0 = time.time()
    for i in range(runs):
        backend = ["--backend", "ray", "--address", args.ray] if args.ray else ["--backend", "slurm"] if args.slurm else LOCAL
        s = one_run(i, rng, args.short, args.keep, backend)
        total_runs += 1
        for k in ("tasks", "controller_kills", "task_kills", "executions", "lost", "finished_again",
                  "finished_again_unadoptable", "overlaps", "orphans", "ledger_over"):
            setattr(total, k, getattr(total, k) + getattr(s, k))
        total.notes.extend(f"run {i}: {n}" for n in s.notes)
        if not args.json:
            print(f"run {i}: {s.tasks} tasks, {s.controller_kills} controller kills, {s.task_kills} task kills, "
                  f"{s.executions} executions, {s.wall_s:.1f}s", file=sys.stderr)
    result = {k: getattr(total, k) for _, k in FIGURES if k != "runs"}
    result["runs"] = total_runs
    result["wall_s"] = round(time.time() - t0, 1)
    result["notes"] = total.notes
    ok = all(result[k] == 0 for k in MUST_BE_ZERO)
    result["ok"] = ok
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        width = max(len(label) for label, _ in FIGURES)
        for label, key in FIGURES:
            flag = "" if key not in MUST_BE_ZERO else ("  ok" if result[key] == 0 else "  FAIL (must be 0)")
            print(f"{label:<{width}}  {result[key]:>6}{flag}")
        print(f"{'wall time':<{width}}  {result['wall_s']:>5.0f}s")
        for n in total.notes:
            print("note:", n)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
