"""Bench: rota's SLURM executor vs a hand-written ``sbatch --array`` of the same work.

    python bench/bench_slurm.py [--tasks 200] [--reps 3] [--poll 0.5] [--command "sleep 0.1"]

Both sides run N one-GPU tasks on the local cluster (scripts/slurm-up.sh:
4 fake GPUs, so at most 4 at a time), each writing its own log, and wait by
polling every ``--poll`` seconds:

- rota: ``SlurmExecutor.submit_many`` of N launches of one ``array_group``
  (one ``sbatch --array``), then ``poll`` (one squeue, at most one sacct per
  round) until every attempt has ended; every attempt must succeed.
- hand: ``sbatch --array=0-(N-1) --gres=gpu:1 -o DIR/%a.log --wrap CMD``,
  then ``squeue -j JOB -t PD,R,CG,CF`` until empty.

- cli (with ``--cli``): ``rota run --backend slurm`` of a spec with one
  200-element matrix task: the whole engine (policy, store, dashboard off),
  which books against ``capacity()`` (4 GPUs) and so submits as GPUs free up.

Reps alternate hand/rota(/cli); the medians and their ratios are printed. Run
as a user that may submit jobs (root on the test cluster).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rota.executors.base import Launch  # noqa: E402
from rota.executors.slurm import SlurmExecutor  # noqa: E402


def run_hand(n: int, command: str, poll_s: float, work: Path) -> float:
    logs = work / "hand"
    logs.mkdir()
    t0 = time.perf_counter()
    job = subprocess.run(
        ["sbatch", "--parsable", f"--array=0-{n - 1}", "--gres=gpu:1", "--cpus-per-task=1",
         f"--output={logs}/%a.log", f"--wrap={command}"],
        check=True, capture_output=True, text=True,
    ).stdout.strip().split(";")[0]
    while subprocess.run(["squeue", "--noheader", f"--jobs={job}", "--states=PD,R,CG,CF"],
                         capture_output=True, text=True).stdout.strip():
        time.sleep(poll_s)
    wall = time.perf_counter() - t0
    assert len(list(logs.iterdir())) == n, "hand-written array: some logs are missing"
    return wall


def run_rota(n: int, command: str, poll_s: float, work: Path) -> tuple[float, dict[str, int]]:
    ex = SlurmExecutor(work / "state", gpu_memory_bytes=16 * 2**30)
    launches = [
        Launch(key=f"t{i}#1", task=f"t{i}", attempt=1, command=command, env={"ROTA_TASK": f"t{i}"},
               workdir=str(work), log_path=str(work / "rota" / f"t{i}.log"), gpus=(i % 4,), gpu_count=1,
               cpus=1, array_group="bench")
        for i in range(n)
    ]
    t0 = time.perf_counter()
    handles = ex.submit_many(launches)
    left = {h.key: h for h in handles}
    while left:
        for key, st in ex.poll(list(left.values())).items():
            if st.phase != "running":
                if st.phase != "succeeded":
                    raise SystemExit(f"{key} ended {st.phase}: {st.reason}")
                del left[key]
        if left:
            time.sleep(poll_s)
    return time.perf_counter() - t0, dict(ex.command_counts)


def run_cli(n: int, command: str, work: Path) -> float:
    import json

    spec = work / "rota.yaml"
    spec.write_text(json.dumps({  # JSON is YAML
        "slurm": {"gpu_memory": "16GB"},
        "tasks": [{"name": "t-{i}", "command": command, "matrix": {"i": list(range(n))}, "gpus": 1}],
    }))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "rota.cli", "run", str(spec), "--backend", "slurm", "--plain",
                        "--state-dir", str(work / "cli-state")], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0 or f"{n} succeeded" not in p.stdout:
        raise SystemExit(f"rota run failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--poll", type=float, default=0.5)
    ap.add_argument("--command", default="sleep 0.1")
    ap.add_argument("--cli", action="store_true", help="also time `rota run --backend slurm`")
    a = ap.parse_args()
    hand, rota, cli = [], [], []
    calls: dict[str, int] = {}
    for rep in range(a.reps):
        with tempfile.TemporaryDirectory(prefix="rota-bench-slurm-") as d:
            h = run_hand(a.tasks, a.command, a.poll, Path(d))
            r, calls = run_rota(a.tasks, a.command, a.poll, Path(d))
            c = run_cli(a.tasks, a.command, Path(d)) if a.cli else None
        hand.append(h)
        rota.append(r)
        extra = ""
        if c is not None:
            cli.append(c)
            extra = f"   cli {c:6.2f} s"
        print(f"rep {rep + 1}: hand {h:6.2f} s   rota {r:6.2f} s   ratio {r / h:5.2f}{extra}   rota calls {calls}",
              flush=True)
    mh, mr = statistics.median(hand), statistics.median(rota)
    print(f"{a.tasks} one-GPU array tasks ({a.command!r}, 4 GPUs, poll {a.poll:g} s), {a.reps} reps")
    print(f"median wall: hand-written sbatch --array {mh:.2f} s, rota SlurmExecutor {mr:.2f} s, "
          f"ratio rota/hand {mr / mh:.2f}")
    if cli:
        mc = statistics.median(cli)
        print(f"median wall: rota run --backend slurm {mc:.2f} s, ratio cli/hand {mc / mh:.2f}")


if __name__ == "__main__":
    main()
