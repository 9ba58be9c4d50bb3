"""Per-task overhead of ``rota run --backend ray`` against plain Ray, same cluster, same run.

    python bench/bench_ray.py [--tasks 1000] [--reps 3] [--address HOST:PORT] [--profile OUT.prof]

Both sides are a fresh Python process (so both pay driver start-up and Ray's
first workers for a new job) running N trivial tasks of 1 CPU each:

- rota: ``rota run SPEC --backend ray`` on a spec of N tasks ``true``;
- plain: ``ray.get([f.remote() for _ in range(N)])`` where ``f`` runs
  ``subprocess.run(["bash", "-c", "true"])``.

Without ``--address`` a local cluster is started (4 CPUs, 4 declared GPUs,
small object store) in its own process group and stopped at the end.
Prints each repetition, the medians and the ratio rota/plain (target <= 1.5).
``--profile`` runs one more rota repetition under cProfile and prints the top
functions by cumulative time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAIN = r"""
import subprocess, sys, time, ray
t0 = time.time()
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
@ray.remote(num_cpus=1, max_retries=0)
def f():
    return subprocess.run(["bash", "-c", "true"]).returncode
t1 = time.time()
codes = ray.get([f.remote() for _ in range(int(sys.argv[2]))])
assert codes == [0] * int(sys.argv[2])
print(f"work_s={time.time() - t1:.3f} init_s={t1 - t0:.3f}")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_cluster() -> tuple[str, int, str]:
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="rrayb", dir="/tmp")
    cmd = ["ray", "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "4",
           "--num-gpus", "4", "--disable-usage-stats", "--include-dashboard", "false",
           "--object-store-memory", "200000000", "--temp-dir", tmp,
           "--ray-client-server-port", str(_free_port()), "--dashboard-agent-listen-port", str(_free_port())]
    proc = subprocess.run(cmd, capture_output=True, text=True, start_new_session=True, timeout=180)
    if proc.returncode != 0:
        sys.exit(f"ray start failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    # `ray start` returns at once; its daemons keep its process group, which we signal to stop.
    pgid = _pgid_of_port(port)
    return f"127.0.0.1:{port}", pgid, tmp


def _pgid_of_port(port: int) -> int:
    import psutil

    for p in psutil.process_iter(["pid", "cmdline"]):
        if f"--gcs_server_port={port}" in " ".join(p.info["cmdline"] or []):
            return os.getpgid(p.pid)
    raise RuntimeError("cannot find the GCS server just started")


def stop_cluster(pgid: int, tmp: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        time.sleep(3)
    shutil.rmtree(tmp, ignore_errors=True)


def write_spec(folder: Path, n: int) -> Path:
    lines = ["tasks:", "  - name: t-{i}", '    command: "true"', "    cpus: 1", "    matrix:", "      i:"]
    lines += [f"        - {i}" for i in range(n)]
    p = folder / "rota.yaml"
    p.write_text("\n".join(lines) + "\n")
    return p


def rota_work_s(state: Path) -> float:
    """First launch to last end, from the run's own records (like plain's work_s)."""
    import json

    p = subprocess.run([sys.executable, "-m", "rota.cli", "status", "--json", "--state-dir", str(state)],
                       capture_output=True, text=True, check=True)
    tasks = json.loads(p.stdout)["tasks"]
    return max(t["ended_at"] for t in tasks) - min(t["started_at"] for t in tasks)


def run_rota(spec: Path, address: str, state: Path, profile: str | None = None) -> float:
    cmd = [sys.executable]
    if profile:
        cmd += ["-m", "cProfile", "-o", profile]
    cmd += ["-m", "rota.cli", "run", str(spec), "--backend", "ray", "--address", address, "--plain",
            "--state-dir", str(state)]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    wall = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"rota run failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return wall


def run_plain(address: str, n: int) -> tuple[float, float]:
    t0 = time.time()
    p = subprocess.run([sys.executable, "-c", PLAIN, address, str(n)], capture_output=True, text=True, timeout=3600)
    wall = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"plain Ray failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return wall, float(p.stdout.split("work_s=")[1].split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--address")
    ap.add_argument("--profile", help="write a cProfile of one more rota run here and print its top lines")
    a = ap.parse_args()
    started = None
    address = a.address
    if address is None:
        address, pgid, tmp = start_cluster()
        started = (pgid, tmp)
        print(f"started a local Ray cluster at {address} (4 CPUs, 4 declared GPUs)")
    work = Path(tempfile.mkdtemp(prefix="rota-bench-ray-"))
    try:
        spec = write_spec(work, a.tasks)
        rota_s: list[float] = []
        plain_s: list[float] = []
        rota_w: list[float] = []
        plain_w: list[float] = []
        for rep in range(a.reps):
            w, pw = run_plain(address, a.tasks)
            plain_s.append(w)
            plain_w.append(pw)
            r = run_rota(spec, address, work / f"state-{rep}")
            rota_s.append(r)
            rota_w.append(rota_work_s(work / f"state-{rep}"))
            print(f"rep {rep + 1}: wall rota {r:.2f}s plain {w:.2f}s | tasks only rota {rota_w[-1]:.2f}s "
                  f"plain {pw:.2f}s", flush=True)
        for what, rs, ps in (("wall (process start to exit)", rota_s, plain_s),
                             ("tasks only (first start to last end)", rota_w, plain_w)):
            mr, mp = statistics.median(rs), statistics.median(ps)
            print(f"{a.tasks} tasks x {a.reps} reps, {what}: median rota {mr:.2f}s "
                  f"({1000 * mr / a.tasks:.2f} ms/task), median plain ray {mp:.2f}s "
                  f"({1000 * mp / a.tasks:.2f} ms/task), ratio {mr / mp:.2f}x (target <= 1.5x)")
        if a.profile:
            run_rota(spec, address, work / "state-profile", profile=a.profile)
            import pstats

            pstats.Stats(a.profile).sort_stats("cumulative").print_stats(35)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if started is not None:
            stop_cluster(*started)


if __name__ == "__main__":
    main()
