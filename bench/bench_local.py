"""Benchmark: 1,000 trivial tasks on 8 CPU slots, rota vs its peers, same run.

    python bench/bench_local.py [--tasks 1000] [--slots 8] [--reps 5]

Peers: GNU parallel -j8, xargs -P8, a runner's minimum (``runner-min``: a Python loop keeping 8
tasks going, each with its own log file, session/process group and environment: what any task
runner must do, the loop rota is compared with), and a bare Python Popen loop keeping 8
`bash -c true` processes going, run as a script (``popen-script``: a fresh
interpreter, as rota is and as a user runs one) and, for reference, inside this
process (``popen-inproc``: no interpreter start-up). Prints each tool's median
wall time over the repetitions and the ratios rota/peer. Also times the policy
on 10,000 ready tasks on 8 GPUs (median of 20 calls).
"""

from __future__ import annotations

import argparse
import compileall
import inspect
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str] | str, shell: bool = False, **kw) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, shell=shell, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t


def popen_loop(n: int, slots: int) -> float:
    t = time.perf_counter()
    running: list[subprocess.Popen[bytes]] = []
    started = 0
    while started < n or running:
        while started < n and len(running) < slots:
            running.append(subprocess.Popen(["bash", "-c", "true"]))
            started += 1
        still = []
        for p in running:
            if p.poll() is None:
                still.append(p)
        if len(still) == len(running):
            os.wait3(0)  # block until one child exits (reaped via poll next round)
            still = [p for p in running if p.poll() is None]
        running = still
    return time.perf_counter() - t


def runner_loop(n: int, slots: int, log_dir: str) -> float:
    """What any runner of tasks must do at least (issue 18's peer): a log file per task, its own
    session and process group (so a cancel reaches its children), its own environment (a copy of
    the parent's plus the task's variables), and the exit status collected, 8 at a time."""
    t = time.perf_counter()
    base = dict(os.environ)
    running: list[subprocess.Popen[bytes]] = []
    started = 0
    while started < n or running:
        while started < n and len(running) < slots:
            env = dict(base, TASK_NAME=f"t-{started}", TASK_ATTEMPT="1", CUDA_VISIBLE_DEVICES="")
            with open(os.path.join(log_dir, f"t-{started}.log"), "wb") as log:
                running.append(subprocess.Popen(["bash", "-c", "true"], stdout=log, stderr=subprocess.STDOUT,
                                                env=env, start_new_session=True))
            started += 1
        still = [p for p in running if p.poll() is None]
        if len(still) == len(running):
            os.wait3(0)
            still = [p for p in running if p.poll() is None]
        running = still
    return time.perf_counter() - t


def runner_script(n: int, slots: int) -> float:
    d = tempfile.mkdtemp(dir=KEEP.name)
    code = ("import os, subprocess, time\n" + inspect.getsource(runner_loop)
            + f"\nrunner_loop({n}, {slots}, {d!r})\n")
    return timed([sys.executable, "-c", code])


def popen_script(n: int, slots: int) -> float:
    code = "import os, subprocess, time\n" + inspect.getsource(popen_loop) + f"\npopen_loop({n}, {slots})\n"
    return timed([sys.executable, "-c", code])


# rota's state folders (logs, output folders, exit-status files: ~4 inodes per task) are removed
# only at the end: on ext4, creating inodes right after thousands were deleted is slow (the
# allocator skips recently freed ones), which would charge the harness's own clean-up to rota.
KEEP = tempfile.TemporaryDirectory(prefix="rota-bench-")


def bench_rota(n: int, slots: int) -> float:
    d = tempfile.mkdtemp(dir=KEEP.name)
    spec = Path(d) / "rota.yaml"
    spec.write_text(f"tasks:\n  - name: t-{{i}}\n    command: 'true'\n    matrix: {{i: {list(range(n))}}}\n")
    return timed([sys.executable, "-m", "rota.cli", "run", str(spec), "--cpus", str(slots), "--gpus", "none", "--plain"])


def bench_policy() -> float:
    from rota.core.policy import Candidate, schedule
    from rota.core.resources import Gpu, Machine, Request

    gb = 2**30
    m = Machine(tuple(Gpu(i, 80 * gb) for i in range(8)), 64, 1024 * gb)
    ready = [Candidate(f"t{i}", Request(gpus=1, gpu_memory_bytes=(5 + i % 40) * gb), rank_s=float(i % 97),
                       estimate_s=60.0, order=i) for i in range(10_000)]
    times = []
    for _ in range(20):
        t = time.perf_counter()
        schedule(ready, m)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def compile_rota() -> None:
    """Byte-compile rota as ``pip install`` does: with PYTHONDONTWRITEBYTECODE set (or a read-only
    editable checkout) every run would otherwise compile its sources again, ~0.1 s the peers never pay."""
    import rota

    compileall.compile_dir(os.path.dirname(rota.__file__), quiet=1)


def main() -> None:
    compile_rota()
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    n, j = a.tasks, a.slots
    seq = "\n".join(str(i) for i in range(n)) + "\n"
    tools: dict[str, object] = {"rota": lambda: bench_rota(n, j), "runner-min": lambda: runner_script(n, j),
                                "popen-script": lambda: popen_script(n, j),
                                "popen-inproc": lambda: popen_loop(n, j)}
    if shutil.which("parallel"):
        tools["gnu-parallel"] = lambda: timed(["parallel", "-j", str(j), "true", ":::", *map(str, range(n))])
    if shutil.which("xargs"):
        tools["xargs"] = lambda: timed(f"printf '{seq.replace(chr(10), chr(92) + 'n')}' | xargs -P{j} -n1 sh -c true",
                                       shell=True)
    results: dict[str, list[float]] = {k: [] for k in tools}
    for _ in range(a.reps):
        for name, fn in tools.items():  # interleaved so machine noise hits every tool alike
            results[name].append(fn())  # type: ignore[operator]
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"{n} trivial tasks on {j} slots, median of {a.reps} runs (seconds):")
    for k, v in med.items():
        print(f"  {k:<13} {v:7.2f}   runs: {', '.join(f'{x:.2f}' for x in results[k])}")
    for peer in ("gnu-parallel", "runner-min", "xargs", "popen-script", "popen-inproc"):
        if peer in med:
            print(f"  rota / {peer:<13} {med['rota'] / med[peer]:.2f}x")
    print(f"policy: 10,000 ready tasks on 8 GPUs: {bench_policy() * 1000:.1f} ms per decision (median of 20)")


if __name__ == "__main__":
    main()
