"""A task writing a huge log must not grow rota's memory; its final metric is still collected.

    python bench/bench_big_log.py [--size 1G] [--json]

Runs ``rota run`` on one task ``head -c SIZE /dev/zero; echo; echo ROTA_METRIC big=1``
(one giant line without a newline, the worst case for line-based readers), samples
the controller's RSS every 10 ms, and prints the peak RSS next to a baseline run of
a task printing one line. Exit 1 if the metric is missing or the peak grew by more
than 64 MB over the baseline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

GROWTH_LIMIT = 64 * 2**20


def measure(command: str) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="rota-biglog-"))
    spec = root / "rota.yaml"
    spec.write_text("tasks:\n  - name: big\n    command: " + json.dumps(command) + "\n")
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "rota.cli", "run", str(spec), "--plain", "--gpus", "none"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        p = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                peak = max(peak, p.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.01)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    rc = proc.wait()
    done.set()
    t.join()
    wall = time.time() - t0
    status = subprocess.run([sys.executable, "-m", "rota.cli", "status", "--json", "--state-dir", str(root / ".rota")],
                            capture_output=True, text=True)
    task = json.loads(status.stdout)["tasks"][0]
    log_bytes = Path(task["log_path"]).stat().st_size
    return {"rc": rc, "peak_rss_mb": peak / 2**20, "wall_s": wall, "log_mb": log_bytes / 2**20,
            "metric": task["metrics"].get("big"), "root": str(root)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1G", help="bytes of output, as head -c takes it (default 1G)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    base = measure("echo hello; echo ROTA_METRIC big=1")
    big = measure(f"head -c {args.size} /dev/zero; echo; echo ROTA_METRIC big=1")
    growth = big["peak_rss_mb"] - base["peak_rss_mb"]
    ok = big["rc"] == 0 and big["metric"] == 1.0 and growth * 2**20 < GROWTH_LIMIT
    res = {"log_mb": round(big["log_mb"]), "baseline_peak_rss_mb": round(base["peak_rss_mb"], 1),
           "big_log_peak_rss_mb": round(big["peak_rss_mb"], 1), "growth_mb": round(growth, 1),
           "metric_collected": big["metric"] == 1.0, "wall_s": round(big["wall_s"], 1), "ok": ok}
    for r in (base, big):
        import shutil

        shutil.rmtree(r["root"], ignore_errors=True)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"log of {res['log_mb']} MB in one task: controller peak RSS {res['big_log_peak_rss_mb']} MB "
              f"(baseline {res['baseline_peak_rss_mb']} MB, growth {res['growth_mb']} MB); "
              f"final ROTA_METRIC collected: {res['metric_collected']}; {res['wall_s']} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
