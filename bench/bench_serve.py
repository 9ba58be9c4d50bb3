"""``rota serve`` never slows a run: browsers watching a big run's page, against none.

    python bench/bench_serve.py [--tasks 20000] [--clients 20] [--reps 3] [--cpus 8] [--mode stream|poll] [--json]

Runs ``rota run`` on TASKS ``true`` tasks (``--gpus none --cpus CPUS``) REPS times without and
REPS times with ``rota serve`` on its state folder and CLIENTS simulated browsers, alternating the
two conditions to spread machine noise. Each client asks what the page asks: ``--mode stream``
(the page's way): the page's two ``/api/events`` streams, read event by event as a browser's
EventSource does; ``--mode poll`` (a page without EventSource, or a script): the polling routes as often as the
page would poll them, on one kept-alive connection: the status and a table page every second, the
timeline every 2 s, GPUs, results and the ETA every 5 s, sweeps and the report's figures every
10 s. The clients stand in for browsers on other machines: they run in their own process at
``nice 19``, so their own CPU is not what is measured (``rota serve`` itself runs at ``nice 10``,
as always). Prints the median wall times and their ratio (with / without; the issue asks under
1.05), the requests (or events) served and any failed request (exit 1 on any), and, what machine
noise moves less than a wall time, the CPU seconds: the run's (controller and tasks) and the
server's own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROTA = [sys.executable, "-m", "rota.cli"]
EVERY_S = {"/api/status?limit=100": 1.0, "/api/timeline": 2.0, "/api/gpus": 5.0, "/api/results": 5.0,
           "/api/eta": 5.0, "/api/sweeps": 10.0, "/api/figures": 10.0}


CLIENTS = """
import http.client, json, os, sys, threading, time
os.nice(19)  # stand-ins for browsers on another machine: their own CPU is not what is measured
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
every = json.loads(sys.argv[4])
stop = threading.Event()
counts = [0, 0]

def client():
    conn = http.client.HTTPConnection(host, port, timeout=60)  # keep-alive, as a browser
    due = dict.fromkeys(every, 0.0)
    while not stop.is_set():
        now = time.monotonic()
        for path, s in every.items():
            if now >= due[path]:
                due[path] = now + s
                try:
                    conn.request("GET", path)
                    r = conn.getresponse()
                    r.read()
                    counts[r.status != 200] += 1
                except OSError as e:
                    counts[1] += 1
                    print(f"{path}: {e}", file=sys.stderr, flush=True)
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=60)
        stop.wait(max(0.0, min(due.values()) - time.monotonic()))

conns = []

def streamer(path):
    # The page's way: an EventSource on /api/events, read as the events come (blocking reads: the
    # bench's end shuts the sockets down).
    while not stop.is_set():
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            conns.append(conn)
            if r.status != 200:
                counts[1] += 1
                r.read()
                continue
            while not stop.is_set():
                line = r.fp.readline()
                if not line:
                    if not stop.is_set():
                        raise OSError("stream closed")
                    break
                if line.startswith(b"event: "):
                    counts[0] += 1
        except OSError as e:
            if not stop.is_set():
                counts[1] += 1
                print(f"/api/events: {e}", file=sys.stderr, flush=True)
                stop.wait(2.0)  # the EventSource's retry
        finally:
            conn.close()

if every.get("stream"):  # the page's two streams: its table's, and the rest's
    paths = ["/api/events?pieces=status&offset=0&limit=100",
             "/api/events?pieces=timeline,gpus,results,sweeps,eta,figures"]
    threads = [threading.Thread(target=streamer, args=(p,), daemon=True) for _ in range(n) for p in paths]
else:
    threads = [threading.Thread(target=client, daemon=True) for _ in range(n)]
for t in threads:
    t.start()
sys.stdin.read()  # until the bench closes it
stop.set()
for c in conns:
    try:
        c.sock.shutdown(2)
    except (OSError, AttributeError):
        pass
for t in threads:
    t.join(60)
print(counts[0], counts[1], flush=True)
"""


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(tasks: int, clients: int, cpus: int, mode: str = "stream") -> tuple[float, int, int, float, float]:
    """Wall seconds of one run, the requests served, failed requests, the run's CPU seconds
    (controller and tasks) and the server's (clients=0: no server, 0.0)."""
    root = Path(tempfile.mkdtemp(prefix="rota-benchserve-"))
    spec = root / "rota.yaml"
    spec.write_text(f"tasks:\n  - name: t-{{i}}\n    command: 'true'\n    matrix: {{i: {list(range(tasks))}}}\n")
    server = clients_proc = None
    served, failed = 0, 0
    server_cpu = 0.0
    try:
        if clients:
            server = subprocess.Popen([*ROTA, "serve", str(spec), "--port", "0"], stdout=subprocess.PIPE, text=True,
                                      start_new_session=True)
            assert server.stdout is not None
            line = server.stdout.readline()
            if " at http://" not in line:
                raise SystemExit(f"rota serve did not start: {line!r}")
            host, port = line.split(" at http://", 1)[1].split("/")[0].rsplit(":", 1)
            clients_proc = subprocess.Popen([sys.executable, "-c", CLIENTS, host, port, str(clients),
                                             json.dumps({"stream": 1} if mode == "stream" else EVERY_S)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        cpu0 = server_cpu = _cpu_s(server.pid) if server is not None else 0.0
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run([*ROTA, "run", str(spec), "--plain", "--gpus", "none", "--cpus", str(cpus)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        run_cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
        server_cpu = _cpu_s(server.pid) - cpu0 if server is not None else 0.0
        if p.returncode != 0:
            raise SystemExit(f"rota run failed ({p.returncode}): {p.stderr[-500:]}")
    finally:
        if clients_proc is not None:
            out, _ = clients_proc.communicate("", timeout=120)
            served, failed = (int(x) for x in out.split())
        if server is not None:
            os.killpg(server.pid, signal.SIGINT)
            server.wait(30)
        shutil.rmtree(root, ignore_errors=True)
    return wall, served, failed, run_cpu, server_cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=8)
    ap.add_argument("--mode", choices=("stream", "poll"), default="stream",
                    help="how the clients follow the run: the page's event stream, or polling")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    base: list[float] = []
    loaded: list[float] = []
    cpu_base: list[float] = []
    cpu_loaded: list[float] = []
    cpu_server: list[float] = []
    requests = 0
    errors = 0
    for _ in range(args.reps):
        wall, _n, _f, run_cpu, _s = one(args.tasks, 0, args.cpus)
        base.append(wall)
        cpu_base.append(run_cpu)
        wall, n, failed, run_cpu, server_cpu = one(args.tasks, args.clients, args.cpus, args.mode)
        loaded.append(wall)
        cpu_loaded.append(run_cpu)
        cpu_server.append(server_cpu)
        requests += n
        errors += failed
    mb, ml = statistics.median(base), statistics.median(loaded)
    res = {"tasks": args.tasks, "clients": args.clients, "mode": args.mode, "reps": args.reps, "cpus": args.cpus,
           "median_wall_s_without": round(mb, 2), "median_wall_s_with": round(ml, 2), "ratio": round(ml / mb, 3),
           "requests": requests, "failed_requests": errors,
           "walls_without": [round(x, 2) for x in base], "walls_with": [round(x, 2) for x in loaded],
           "median_run_cpu_s_without": round(statistics.median(cpu_base), 2),
           "median_run_cpu_s_with": round(statistics.median(cpu_loaded), 2),
           "median_server_cpu_s": round(statistics.median(cpu_server), 2), "load_avg_1m": os.getloadavg()[0]}
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{args.tasks} tasks, {args.clients} clients ({args.mode}) on rota serve, {args.reps} runs each: "
              f"median {mb:.2f}s without, {ml:.2f}s with: ratio {ml / mb:.3f} (under 1.05 asked); "
              f"{requests} {'events' if args.mode == 'stream' else 'requests'}, {errors} failed; CPU: the run {res['median_run_cpu_s_without']}s without, "
              f"{res['median_run_cpu_s_with']}s with, the server {res['median_server_cpu_s']}s")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
