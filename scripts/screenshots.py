"""Make the docs' screenshots from a real example run (docs/serve-screenshot.png,
docs/report-screenshot.png, docs/report-sweeps-screenshot.png).

    python scripts/screenshots.py [--out docs]

Copies examples/experiment-suite and examples/hpo-gbdt to a temporary folder, runs them on
declared GPUs (``--gpus 4x80GB``; 15% of the suite's first attempts failing, to show retries),
watches the suite through ``rota serve`` in Debian's headless Chromium (Selenium and
/usr/bin/chromedriver: no browser download) and takes the page halfway through the run, then
renders ``rota report --html`` of both runs and takes those. Needs the ``serve``, ``report`` and
``examples`` extras, chromium and chromium-driver.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROTA = [sys.executable, "-m", "rota.cli"]


def browser(width: int, height: int):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--hide-scrollbars"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def finished_share(state_dir: Path) -> float:
    import json

    out = subprocess.run([*ROTA, "status", "--json", "--state-dir", str(state_dir)], capture_output=True, text=True)
    if out.returncode not in (0, 1) or not out.stdout.strip():
        return 0.0
    counts = json.loads(out.stdout)["counts"]
    done = sum(counts.get(k, 0) for k in ("succeeded", "cached", "failed", "skipped", "cancelled"))
    return done / max(1, sum(counts.values()))


def serve_shot(work: Path, out: Path) -> None:
    suite = work / "experiment-suite"
    env = {**os.environ, "ROTA_EXAMPLE_FAIL_RATE": "0.15"}
    run = subprocess.Popen([*ROTA, "run", str(suite / "rota.yaml"), "--gpus", "4x80GB", "--cpus", "64", "--plain"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    server = subprocess.Popen([*ROTA, "serve", str(suite / "rota.yaml"), "--port", "0"], stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    assert server.stdout is not None
    url = server.stdout.readline().split(" at ", 1)[1].split()[0]
    driver = browser(1400, 2200)
    try:
        driver.get(url)
        deadline = time.monotonic() + 600
        while finished_share(suite / ".rota") < 0.5 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(3)  # the page follows within 2 s; plotly draws
        driver.save_screenshot(str(out / "serve-screenshot.png"))
        print(f"serve-screenshot.png at {finished_share(suite / '.rota'):.0%} done", flush=True)
    finally:
        driver.quit()
        run.wait(900)
        os.killpg(server.pid, signal.SIGINT)
        server.wait(30)


def report_shot(spec: Path, html: Path, png: Path, section: str | None = None) -> None:
    subprocess.run([*ROTA, "report", str(spec), "--html", str(html)], check=True, stdout=subprocess.DEVNULL)
    driver = browser(1400, 2400)
    try:
        driver.get(html.as_uri())
        time.sleep(4)  # plotly draws
        if section:
            driver.execute_script("const e = document.getElementById(arguments[0]); if (e) e.scrollIntoView();", section)
            time.sleep(1)
        driver.save_screenshot(str(png))
        print(png.name, flush=True)
    finally:
        driver.quit()


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rota-shots-"))
    try:
        for name in ("experiment-suite", "hpo-gbdt"):
            shutil.copytree(ROOT / "examples" / name, work / name)
        serve_shot(work, args.out)
        report_shot(work / "experiment-suite" / "rota.yaml", work / "suite.html", args.out / "report-screenshot.png")
        subprocess.run([*ROTA, "run", str(work / "hpo-gbdt" / "rota.yaml"), "--gpus", "4x80GB", "--plain"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        report_shot(work / "hpo-gbdt" / "rota.yaml", work / "hpo.html", args.out / "report-sweeps-screenshot.png",
                    section="sweeps")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
