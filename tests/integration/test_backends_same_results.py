"""The scenario-5 suite on local, SLURM and Ray: same tasks, same metrics, same report groups."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers import rota

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.ray]


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    """A copy of examples/experiment-suite whose jobs sleep 0.02% of their estimate."""
    dst = tmp_path_factory.mktemp("suite") / "experiment-suite"
    shutil.copytree(ROOT / "examples" / "experiment-suite", dst, ignore=shutil.ignore_patterns(".rota"))
    spec = yaml.safe_load((dst / "rota.yaml").read_text())
    spec.setdefault("defaults", {}).setdefault("env", {})["ROTA_EXAMPLE_TIME_SCALE"] = "0.0002"
    (dst / "rota.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return dst / "rota.yaml"


def _groups(state_dir: Path) -> dict:
    out = rota("report", "--state-dir", state_dir, "--json", "--by", "model,task", check=True)
    rep = json.loads(out.stdout)
    assert all(t["state"] == "succeeded" for t in rep["tasks"]), [t for t in rep["tasks"] if t["state"] != "succeeded"]
    return {(g["base"], json.dumps(g["vars"], sort_keys=True), g["metric"]): (round(g["mean"], 9), g["n"])
            for g in rep["groups"]}


def test_suite_same_results_on_local_slurm_and_ray(suite, tmp_path, slurm_cluster, ray_cluster):
    runs = {
        "local": ["--gpus", "4x80GB", "--cpus", "16"],
        "slurm": ["--backend", "slurm", "--gpus", "4x80GB"],
        "ray": ["--backend", "ray", "--address", ray_cluster, "--gpus", "4x80GB"],
    }
    groups = {}
    for name, flags in runs.items():
        sd = tmp_path / name
        p = rota("run", suite, "--plain", "--state-dir", sd, *flags, timeout=900)
        assert p.returncode == 0, f"{name}:\n{p.stdout[-3000:]}\n{p.stderr[-2000:]}"
        groups[name] = _groups(sd)
    assert len(groups["local"]) > 40
    assert groups["slurm"] == groups["local"]
    assert groups["ray"] == groups["local"]
