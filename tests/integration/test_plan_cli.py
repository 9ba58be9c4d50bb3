"""`rota plan` as a user runs it: text, --json, machines, history, Gantt files, errors,
and the plan's makespan against a real `rota run` of sleeping tasks."""

from __future__ import annotations

import json

import pytest

from tests.helpers import rota, status, write_spec

RECSYS = """
name: multimodal-recsys
machines:
  t4: {gpus: 1x16GB, cpus: 8, memory: 32GB, price_per_gpu_hour: 0.35, price_per_cpu_hour: 0.10}
  l4: {gpus: 1x24GB, cpus: 8, memory: 32GB, price_per_gpu_hour: 0.70, price_per_cpu_hour: 0.10, speed: 2.0}
  cpu-only: {cpus: 8, memory: 32GB, price_per_hour: 1.0}
tasks:
  - {name: img-embed, command: python img.py, gpus: 1, gpu_memory: 12GB, estimate: 7h30m}
  - {name: edges, command: python edges.py, cpus: 2, estimate: 15m}
  - {name: txt-knn, command: python txt.py, cpus: 2, estimate: 20m}
  - {name: fusion, command: python fuse.py, needs: [img-embed, txt-knn], cpus: 2, estimate: 20m}
  - name: gat-{cfg}
    command: python gat.py --cfg {cfg}
    matrix: {cfg: [a, b]}
    needs: [edges, fusion]
    gpus: 1
    gpu_memory: 12GB
    estimate: 1h30m
"""


def plan_json(*args):
    out = rota("plan", *args, "--json", check=True)
    return json.loads(out.stdout)


def test_json_on_compared_machines(tmp_path):
    spec = write_spec(tmp_path, RECSYS)
    d = plan_json(spec, "--machine", "t4", "--machine", "l4")
    assert d["version"] == 1 and [m["machine"]["name"] for m in d["machines"]] == ["t4", "l4"]
    t4, l4 = d["machines"]
    assert d["makespan_s"] == t4["makespan_s"]  # top level is the first machine
    # GPU chain: 7h30 embed, then fusion (20 min after txt-knn), then 2 GAT configs on one GPU
    assert t4["makespan_s"] == pytest.approx(7.5 * 3600 + 20 * 60 + 2 * 1.5 * 3600)
    # On the 24GB L4 both 12GB GAT configs share the GPU: one 45 min slot for both.
    assert l4["makespan_s"] == pytest.approx(3.75 * 3600 + 20 * 60 + 0.75 * 3600)
    assert t4["critical_path"][:2] == ["img-embed", "fusion"] and len(t4["critical_path"]) == 3
    # Booked GPU-hours x price: the L4 is paid double for half the time, and packing saves more.
    assert t4["cost"]["gpu_usd"] == pytest.approx((7.5 + 3) * 0.35, rel=1e-3)
    assert l4["cost"]["gpu_usd"] == pytest.approx((3.75 + 0.75) * 0.70, rel=1e-3)
    assert t4["sequential_s"] >= t4["makespan_s"] >= t4["lower_bound_s"] > 0
    for key in ("makespan_s", "sequential_s", "lower_bound_s", "critical_path", "utilization", "cost", "tasks",
                "speedup", "lower_bound", "unschedulable"):
        assert key in t4
    task = {t["name"]: t for t in t4["tasks"]}["img-embed"]
    assert task["start_s"] == 0 and task["end_s"] == 7.5 * 3600 and task["gpus"] == [0]
    assert task["source"] == "estimate"
    assert set(t4["utilization"]) == {"gpus", "cpus", "memory", "gpu"} and "0" in t4["utilization"]["gpu"]


def test_text_side_by_side_and_unschedulable_reported(tmp_path):
    spec = write_spec(tmp_path, RECSYS)
    out = rota("plan", spec, "--machine", "t4", "--machine", "cpu-only", "--width", "100", check=True).stdout
    assert "machines compared" in out and "t4" in out and "cpu-only" in out
    assert "cannot run here: img-embed" in out and "makespan" in out and "critical path" in out
    d = plan_json(spec, "--machine", "cpu-only")
    assert d["complete"] is False
    assert {u["task"] for u in d["unschedulable"]} == {"img-embed", "gat-a", "gat-b"}
    assert {b["task"] for b in d["blocked"]} == {"fusion"}  # gat-* are unschedulable themselves
    assert d["cost"]["machine_usd"] == pytest.approx(d["makespan_s"] / 3600, abs=1e-4)


def test_flags_machine_and_default_estimates_flagged(tmp_path):
    spec = write_spec(tmp_path, """
    tasks:
      - {name: known, command: 'true', gpus: 1, estimate: 2m}
      - {name: unknown, command: 'false', gpus: 1}
    """)
    out = rota("plan", spec, "--gpus", "2x24GB", "--cpus", "4", "--memory", "8GB", check=True).stdout
    assert "gpu0" in out and "gpu1" in out
    assert "1 default" in out and "unknown" in out.split("no estimate and no history")[1]
    d = plan_json(spec, "--gpus", "2x24GB", "--cpus", "4", "--memory", "8GB", "--default-estimate", "5m")
    assert d["makespan_s"] == 300 and d["estimates"]["defaulted"] == ["unknown"]


def test_gantt_html_file(tmp_path):
    pytest.importorskip("plotly")
    spec = write_spec(tmp_path, RECSYS)
    out = tmp_path / "plan.html"
    rota("plan", spec, "--machine", "t4", "--gantt", out, check=True)
    text = out.read_text()
    assert "img-embed" in text and "plotly" in text.lower()
    rota("plan", spec, "--machine", "t4", "--machine", "l4", "--gantt", out, check=True)
    assert (tmp_path / "plan-t4.html").exists() and (tmp_path / "plan-l4.html").exists()


def test_bad_input_exits_2_with_one_line(tmp_path):
    spec = write_spec(tmp_path, RECSYS)
    cases = [
        (spec, "--machine", "h100"),
        (spec, "--machine", "t4", "--gantt", tmp_path / "x.svg"),
        (spec, "--gpus", "4xBANANA"),
        (spec, "--default-estimate", "soon"),
        (tmp_path / "missing.yaml",),
    ]
    for args in cases:
        p = rota("plan", *args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("rota: error:"), p.stderr
        assert "Traceback" not in p.stderr
    assert not (tmp_path / "x.svg").exists()


SLEEPS = """
tasks:
  - {name: a, command: sleep 1, gpus: 1, estimate: 1s}
  - {name: b, command: sleep 2, gpus: 1, estimate: 2s}
  - {name: c, command: sleep 2, gpus: 1, estimate: 2s, needs: [a]}
  - {name: d, command: sleep 1, gpus: 1, estimate: 1s, needs: [b, c]}
  - {name: e, command: sleep 1, gpus: 1, estimate: 1s}
  - {name: f, command: sleep 2, cpus: 1}
"""
MACHINE = ("--gpus", "2x24GB", "--cpus", "4", "--memory", "8GB")


def test_plan_matches_a_real_run_and_learns_from_history(tmp_path):
    spec = write_spec(tmp_path, SLEEPS)
    before = plan_json(spec, *MACHINE)
    assert before["estimates"]["defaulted"] == ["f"]
    # GPUs: a, b at 0; c after a (1-3), e beside it on the GPU b frees (2-3), d after b and c (3-4).
    assert before["makespan_s"] == 60  # f: no estimate yet -> 60 s default
    run = rota("run", spec, *MACHINE, "--plain", timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    tasks = status(tmp_path / ".rota")["tasks"]
    real = max(t["ended_at"] for t in tasks) - min(t["started_at"] for t in tasks)
    after = plan_json(spec, *MACHINE)
    sources = {t["name"]: t["source"] for t in after["tasks"]}
    assert sources["f"] == "history" and sources["a"] == "estimate"
    planned = after["makespan_s"]
    assert planned == pytest.approx(4.0, abs=0.3)
    assert abs(real - planned) <= 0.2 * planned + 0.5, (real, planned)
    hist = plan_json(spec, *MACHINE, "--use-history")
    assert {t["source"] for t in hist["tasks"]} == {"history"}
    assert hist["makespan_s"] == pytest.approx(real, rel=0.2, abs=0.5)
