"""Benchmark ``rota plan``: speed at scale, and schedule quality against the bound.

    python bench/bench_plan.py            # everything
    python bench/bench_plan.py --quick    # 20,000 tasks instead of 100,000

1. Scale: ``rota plan`` (the CLI, as a subprocess) on a 100,000-task matrix on
   8 GPUs, wall time and peak RSS (targets: < 3 s, < 500 MB), with an
   in-process breakdown (load/expand the spec, simulate, figures) and a
   simulator-only run where every task has a different duration (100,000
   distinct end events).
2. Quality on the scenario-5 suite (``examples/experiment-suite/rota.yaml`` when
   present, else the equivalent task list built below) on 4x80GB: makespan over
   the lower bound (target within 5%) for rota's policy, for the hand-written
   round-robin (job i on GPU i mod 4, ``wait`` after every 4 jobs) and for
   first-in-first-out greedy first-fit (file order, no priorities, no
   reservation).
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from rota.core.policy import Candidate, Running
from rota.core.resources import Gpu, Ledger, Machine, Placement, Request
from rota.plan.bounds import lower_bound
from rota.plan.compare import MachineOption, plan
from rota.plan.estimates import resolve_durations
from rota.plan.simulate import simulate
from rota.spec.model import Task
from rota.spec.units import format_duration

GB = 2**30
ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "examples" / "experiment-suite" / "rota.yaml"


# ------------------------------------------------------------------- scale


def matrix_spec(folder: Path, n_a: int, n_b: int) -> Path:
    a = ", ".join(str(i) for i in range(n_a))
    b = ", ".join(str(i) for i in range(n_b))
    p = folder / "rota.yaml"
    p.write_text(
        "tasks:\n"
        "  - name: job-{a}-{b}\n"
        "    command: python train.py --a {a} --b {b}\n"
        f"    matrix: {{a: [{a}], b: [{b}]}}\n"
        "    gpus: 1\n"
        "    gpu_memory: 20GB\n"
        "    estimate: 10m\n"
    )
    return p


def run_cli(spec: Path) -> tuple[float, float, float, int]:
    """Wall seconds, CPU seconds, peak RSS (MB) and exit code of ``rota plan SPEC --json`` on 8x80GB."""
    cmd = [sys.executable, "-m", "rota.cli", "plan", str(spec), "--gpus", "8x80GB", "--cpus", "64",
           "--memory", "512GB", "--json"]
    t0 = time.perf_counter()
    with open(os.devnull, "w") as null:
        proc = subprocess.Popen(cmd, stdout=null, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode


class _Clock:
    """Wall and CPU seconds of a block."""

    def __enter__(self) -> _Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def breakdown(spec: Path) -> dict[str, _Clock]:
    """In-process phases, with the cyclic GC off as the CLI runs them."""
    from rota.plan.jsontext import plan_json_text
    from rota.spec.load import load_spec

    m = Machine(tuple(Gpu(i, 80 * GB) for i in range(8)), 64, 512 * GB)
    out: dict[str, _Clock] = {}
    gc.disable()
    try:
        with _Clock() as out["load + expand spec (rota.spec)"]:
            spec_obj = load_spec(spec)
        with _Clock() as out["plan (simulate + bounds + critical path)"]:
            d = resolve_durations(spec_obj.tasks, {})
            p = plan(spec_obj.tasks, MachineOption("8x80GB", m), d)
        with _Clock() as out["JSON (compact, as the CLI writes it)"]:
            plan_json_text(spec_obj.path, [p], d)
        with _Clock() as out["simulate alone"]:
            simulate(spec_obj.tasks, m, d.seconds)
    finally:
        gc.enable()
    return out


def distinct_ends(n: int) -> tuple[_Clock, float, int]:
    """Simulator only: n whole-GPU tasks, all durations different, on 8 GPUs (GC off)."""
    tasks = [Task(f"j{i}", f"c{i}", (), Request(gpus=1), 60.0 + (i * 7919) % 541 + i * 1e-6) for i in range(n)]
    m = Machine(tuple(Gpu(i, 80 * GB) for i in range(8)), 64, 512 * GB)
    gc.disable()
    try:
        with _Clock() as c:
            s = simulate(tasks, m, {x.name: x.estimate_s for x in tasks})
    finally:
        gc.enable()
    return c, s.makespan_s, s.policy_calls


# ----------------------------------------------------------------- quality


def _t(name: str, gpus: int, gb: int | None, minutes: float, needs: Sequence[str] = (), cpus: int = 4) -> Task:
    req = Request(gpus=gpus, gpu_memory_bytes=None if gb is None else gb * GB, cpus=cpus, memory_bytes=16 * GB)
    return Task(name, f"python run.py {name}", tuple(needs), req, minutes * 60.0, group=name.split("-")[0])


def suite_tasks() -> tuple[list[Task], str]:
    """Scenario 5 on 4x80GB: the spec file if another helper has written it, else this list."""
    if SUITE.exists():
        from rota.spec.load import load_spec

        return list(load_spec(SUITE).tasks), str(SUITE.relative_to(ROOT))
    seeds, datasets = (42, 123, 456), ("sst2", "agnews", "trec")
    base_min = {"sst2": 40, "agnews": 90, "trec": 20}
    models = {"small": (25, 1.0), "medium": (65, 2.0)}
    tasks: list[Task] = []
    for seed in seeds:
        for ds in datasets:
            for model, (gb, f) in models.items():
                tasks.append(_t(f"main-{model}-{ds}-{seed}", 1, gb, base_min[ds] * f))
    for model, (gb, f) in models.items():
        for ds in datasets:
            tasks.append(_t(f"zeroshot-{model}-{ds}", 1, gb - 5, 10 * f))
    for model, (gb, f) in models.items():
        for layer in (6, 12, 18, 24):
            for ds in datasets:
                needs = [f"main-{model}-{ds}-{s}" for s in seeds]
                tasks.append(_t(f"probe-{model}-{layer}-{ds}", 1, gb - 5, 15 * f, needs))
    for b in ("bow", "tfidf", "fasttext", "bilstm", "distil"):
        for ds in datasets:
            tasks.append(_t(f"baseline-{b}-{ds}", 1, 10, 20))
    for cf in (2, 4, 8, 16):
        for bs in (1, 8, 32, 128):
            tasks.append(_t(f"latency-{cf}-{bs}", 1, None, 8))  # timing runs: a whole GPU each
    tasks.append(_t("xsum-train", 2, 70, 6 * 60))
    tasks.append(_t("ablation-small", 1, 25, 2 * 60))
    tasks.append(_t("ablation-medium", 2, 65, 3 * 60))
    tasks.append(_t("ablation-large", 4, None, 4 * 60))
    tasks.append(_t("aggregate", 0, None, 5, [t.name for t in tasks], cpus=1))
    return tasks, "built-in scenario-5 list (examples/experiment-suite/rota.yaml not found)"


def round_robin_s(tasks: Sequence[Task], n_gpus: int) -> float:
    """The hand-written script: job i on GPU i mod n, ``wait`` after every n GPUs' worth of jobs
    (a k-GPU job takes k slots), one job per GPU whatever its memory; a job also waits
    when something it needs is still in the current batch."""
    dur = {t.name: t.estimate_s or 0.0 for t in tasks}
    now, batch_end, used = 0.0, 0.0, 0
    in_batch: set[str] = set()
    for t in tasks:
        k = max(t.request.gpus, 1)
        if used + k > n_gpus or in_batch.intersection(t.needs):
            now, used, in_batch = batch_end, 0, set()
        batch_end = max(batch_end, now + dur[t.name])
        used += k
        in_batch.add(t.name)
        if used == n_gpus:
            now, used, in_batch = batch_end, 0, set()
    return max(now, batch_end)


def fifo_first_fit(ready: Sequence[Candidate], machine: Machine, running: Sequence[Running] = (), *,
                   presorted: bool = False) -> list[Placement]:
    """File order, no priorities, no reservation: start whatever fits, lowest GPU index first."""
    led = Ledger.for_machine(machine, (r.placement for r in running))
    out = []
    for c in ready if presorted else sorted(ready, key=lambda c: c.order):
        r = c.request
        if r.cpus > led.cpus or r.memory_bytes > led.memory_bytes:
            continue
        pool = [i for i in machine.gpu_indices if r.devices is None or i in r.devices]
        chosen = []
        for i in pool:
            need = led.gpu_total[i] if r.gpu_memory_bytes is None else r.gpu_memory_bytes
            if led.gpu_free[i] >= need:
                chosen.append((i, need))
            if len(chosen) == r.gpus:
                break
        if len(chosen) < r.gpus:
            continue
        p = Placement(c.name, tuple(i for i, _ in chosen), tuple(b for _, b in chosen), r.cpus, r.memory_bytes)
        led.book(p)
        out.append(p)
    return out


def quality() -> None:
    tasks, source = suite_tasks()
    m = Machine(tuple(Gpu(i, 80 * GB) for i in range(4)), 64, 512 * GB)
    d = resolve_durations(tasks, {})
    rota_plan = plan(tasks, MachineOption("4x80GB", m), d)
    lb = rota_plan.bound.value_s
    fifo = simulate(tasks, m, d.seconds, policy=fifo_first_fit, key=lambda c: (c.order,))
    fifo_lb = lower_bound(fifo, {t.name: t.request for t in tasks}, rota_plan.bound.critical_path_s).value_s
    assert abs(fifo_lb - lb) < 1e-6
    rr = round_robin_s(tasks, 4)
    print(f"\n2. Schedule quality: {len(tasks)} tasks, {source}, on 4x80GB")
    print(f"   sequential {format_duration(rota_plan.sequential_s)}; lower bound {format_duration(lb)} "
          f"(set by {rota_plan.bound.binding}: critical path {format_duration(rota_plan.bound.critical_path_s)}, "
          f"GPU work/4 {format_duration(rota_plan.bound.gpu_s)})")
    print(f"   {'schedule':<44} {'makespan':>9} {'/ bound':>8}")
    for name, span in (("rota plan (priority, critical path, best fit, backfill)", rota_plan.makespan_s),
                       ("FIFO greedy first fit (file order)", fifo.makespan_s),
                       ("round-robin, wait every 4 jobs (by hand)", rr)):
        print(f"   {name:<44.44} {format_duration(span):>9} {span / lb:>7.3f}x")
    print(f"   rota GPU utilisation {100 * rota_plan.utilization.gpus:.0f}% (busy), "
          f"memory booked {100 * sum(rota_plan.utilization.gpu_memory.values()) / 4:.0f}%")
    ok = rota_plan.makespan_s <= 1.05 * lb
    print(f"   target: within 5% of the bound -> {'met' if ok else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20,000 tasks instead of 100,000")
    args = ap.parse_args()
    n_a, n_b = (80, 250) if args.quick else (400, 250)
    n = n_a * n_b
    try:
        load = os.getloadavg()[0]
        print(f"host: {os.cpu_count()} CPUs, load average {load:.1f}, Python {sys.version.split()[0]}")
    except OSError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        spec = matrix_spec(Path(tmp), n_a, n_b)
        wall, cpu, rss, rc = run_cli(spec)
        print(f"\n1. Scale: rota plan --json, {n:,} tasks (matrix, 20GB each) on 8x80GB")
        print(f"   CLI: wall {wall:.2f} s, CPU {cpu:.2f} s (target < 3 s); peak RSS {rss:.0f} MB "
              f"(target < 500 MB); exit {rc}")
        print(f"   {'phase (in process)':<42} {'wall':>7} {'CPU':>7}")
        for k, v in breakdown(spec).items():
            print(f"   {k:<42} {v.wall:6.2f}s {v.cpu:6.2f}s")
    c, span, calls = distinct_ends(n)
    print(f"   simulator only, {n:,} whole-GPU tasks, all durations distinct ({calls:,} policy calls): "
          f"wall {c.wall:.2f} s, CPU {c.cpu:.2f} s")
    quality()


if __name__ == "__main__":
    main()
