"""Resource pools end to end (scenario 4): `devices:` pins tasks to some GPUs, `gpus: 0` to the CPU.

xgb and lgbm sweeps share GPUs 0 and 1 (8GB each on 16GB GPUs, so at most four
GPU trials at once; two of each kind), catboost trials run one at a time on the
CPU alongside; GPU 2 is
declared but must never be handed to a pooled task. Checked from each trial's
own CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import by_name, rota, write_spec

pytest.importorskip("optuna")

PY = sys.executable

TRIAL = textwrap.dedent("""
    import json, os, sys, time
    rec_dir, kind, x = sys.argv[1], sys.argv[2], float(sys.argv[3])
    start = time.time()
    time.sleep(0.6)
    with open(os.path.join(rec_dir, kind + ".jsonl"), "a") as f:
        f.write(json.dumps({"kind": kind, "task": os.environ["ROTA_TASK"], "start": start, "end": time.time(),
                            "cvd": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\\n")
    print(f"ROTA_METRIC auc={1 - (x - 0.3) ** 2}")
""")


def _records(folder: Path) -> list[dict]:
    out = []
    for f in sorted(folder.glob("*.jsonl")):
        out.extend(json.loads(line) for line in f.read_text().splitlines() if line.strip())
    return out


def test_scenario4_pools_respected(tmp_path):
    rec = tmp_path / "rec"
    rec.mkdir()
    trial = tmp_path / "trial.py"
    trial.write_text(TRIAL)

    def sweep(trials: int, parallel: int) -> str:
        return (f"{{trials: {trials}, parallel: {parallel}, metric: auc, direction: maximize, seed: 1, "
                "params: {x: {type: float, low: 0.0, high: 1.0}}}")

    spec = write_spec(tmp_path, f"""
        tasks:
          - name: xgb
            command: {PY} {trial} {rec} xgb {{x}}
            gpus: 1
            gpu_memory: 8GB
            devices: [0, 1]
            sweep: {sweep(6, 2)}
          - name: lgbm
            command: {PY} {trial} {rec} lgbm {{x}}
            gpus: 1
            gpu_memory: 8GB
            devices: [0, 1]
            sweep: {sweep(6, 2)}
          - name: catboost
            command: {PY} {trial} {rec} catboost {{x}}
            gpus: 0
            cpus: 2
            sweep: {sweep(3, 1)}
    """)
    sd = tmp_path / "st"
    p = rota("run", spec, "--gpus", "3x16GB", "--cpus", "16", "--plain", "--state-dir", sd)
    assert p.returncode == 0, p.stdout + p.stderr

    recs = _records(rec)
    assert sorted(r["kind"] for r in recs).count("xgb") == 6
    assert len(recs) == 15
    gpu_recs = [r for r in recs if r["kind"] in ("xgb", "lgbm")]
    cpu_recs = [r for r in recs if r["kind"] == "catboost"]
    # The pool: only GPUs 0 and 1, one GPU each; GPU 2 never.
    assert all(r["cvd"] in ("0", "1") for r in gpu_recs), [r["cvd"] for r in gpu_recs]
    assert {r["cvd"] for r in gpu_recs} == {"0", "1"}
    assert all(r["cvd"] == "" for r in cpu_recs)  # gpus: 0 -> no GPU visible
    # Memory: at most 16GB (two 8GB trials) booked per GPU at any instant.
    events = sorted([(r["start"], 1, r["cvd"]) for r in gpu_recs] + [(r["end"], -1, r["cvd"]) for r in gpu_recs],
                    key=lambda e: (e[0], e[1]))
    load: dict[str, int] = {}
    peak = 0
    for _, kind, g in events:
        load[g] = load.get(g, 0) + kind
        assert load[g] <= 2
        peak = max(peak, sum(load.values()))
    assert peak >= 3  # packed: more than one trial per GPU at once
    # All at once: a CPU trial overlapped GPU trials of both kinds.
    def overlaps(a: dict, b: dict) -> bool:
        return a["start"] < b["end"] and b["start"] < a["end"]

    assert any(overlaps(c, g) for c in cpu_recs for g in gpu_recs if g["kind"] == "xgb")
    assert any(overlaps(c, g) for c in cpu_recs for g in gpu_recs if g["kind"] == "lgbm")
    # The store agrees with what the processes saw.
    st = by_name(sd)
    for name, t in st.items():
        if name.startswith(("xgb", "lgbm")):
            assert t["gpus"] in ([0], [1])
        else:
            assert t["gpus"] == []


def test_pool_outside_machine_is_refused(tmp_path):
    spec = write_spec(tmp_path, """
        tasks:
          - name: t
            command: "true"
            gpus: 1
            devices: [0, 5]
    """)
    p = rota("run", spec, "--gpus", "3x16GB", "--plain", "--state-dir", tmp_path / "st")
    assert p.returncode == 2
    assert "devices" in p.stderr and "5" in p.stderr
