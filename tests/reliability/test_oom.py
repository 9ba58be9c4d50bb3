"""CUDA out-of-memory aware retries on declared GPUs, OOM classification, the enforce shim."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rota.engine.attempt import is_oom
from rota.store.sqlite import SqliteStore
from tests.helpers import by_name, read_records, rota, write_spec

OOM_TASK = str(Path(__file__).resolve().parent / "oom_task.py")
PY = sys.executable
GiB = 2**30

PYTORCH_OOM = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
    "23.65 GiB of which 1.06 GiB is free."
)
PYTORCH_OLD_OOM = "RuntimeError: CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 15.78 GiB total capacity)"
PYTORCH_CUDA_OOM = "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 512.00 MiB"
JAX_OOM = (
    "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
    "17179869184 bytes."
)
JAX_OOM_2 = "2024-01-01 12:00:00.1: W external/xla/xla/tsl/framework/bfc_allocator.cc:482] RESOURCE_EXHAUSTED: Out of memory while trying to allocate 4.00GiB"
TF_OOM = (
    "tensorflow.python.framework.errors_impl.ResourceExhaustedError: OOM when allocating tensor with "
    "shape[8192,8192] and type float on /job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc"
)
CUDA_DRIVER_OOM = "RuntimeError: CUDA driver error: CUDA_ERROR_OUT_OF_MEMORY"

NOT_OOM = [
    "Traceback (most recent call last):\nValueError: shapes (3,) and (4,) not aligned",
    "RuntimeError: CUDA error: device-side assert triggered",
    "RuntimeError: CUDA error: an illegal memory access was encountered",
    "MemoryError",  # host RAM, not the GPU: more GPU memory would not help
    "Out of memory: Killed process 1234 (python) total-vm:123kB",  # the kernel's OOM killer
    "epoch 3: loss 0.12 memory 70.1GiB / 80GiB",
    "",
    "\x00\xff binary junk \ufffd",
]


@pytest.mark.parametrize("text", [PYTORCH_OOM, PYTORCH_OLD_OOM, PYTORCH_CUDA_OOM, JAX_OOM, JAX_OOM_2, TF_OOM,
                                  CUDA_DRIVER_OOM])
def test_is_oom_recognises_framework_messages(text: str) -> None:
    log = "epoch 1\n" * 50 + "Traceback (most recent call last):\n  File 'x.py', line 1\n" + text + "\n"
    assert is_oom(log)


@pytest.mark.parametrize("text", NOT_OOM)
def test_is_oom_rejects_other_failures(text: str) -> None:
    assert not is_oom("epoch 1\n" * 10 + text)


def _attempts(sd: Path, task: str) -> list[dict]:
    store = SqliteStore(sd, readonly=True)
    try:
        return store.attempts(task)
    finally:
        store.close()


def test_oom_retry_books_more_memory(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: grows
            command: {PY} {OOM_TASK} {rec} grows 16
            gpus: 1
            gpu_memory: 10GB
            retries: 2
          - name: hopeless
            command: {PY} {OOM_TASK} {rec} hopeless 1000
            gpus: 1
            gpu_memory: 10GB
          - name: plain-failure
            command: exit 1
    """)
    sd = tmp_path / "st"
    p = rota("run", spec, "--gpus", "4x80GB", "--plain", "--retry-delay", "0.05", "--state-dir", sd)
    assert p.returncode == 1, p.stdout + p.stderr
    st = by_name(sd)
    assert st["grows"]["state"] == "succeeded" and st["grows"]["attempts"] == 2
    assert st["grows"]["metrics"] == {"loss": 0.5}
    assert st["hopeless"]["state"] == "failed" and st["hopeless"]["reason"] == "cuda out of memory"
    assert st["hopeless"]["exit_code"] == 1
    assert st["plain-failure"]["reason"] == "exit 1"
    tries = [a for a in read_records(rec) if a["name"] == "grows"]
    assert [t["booked"] for t in tries] == [10 * GiB, 20 * GiB]
    first = _attempts(sd, "grows")[0]
    assert first["reason"] == "cuda out of memory" and first["exit_code"] == 1
    assert "booking 20GB per GPU" in p.stdout


def test_oom_retry_moves_to_the_bigger_gpu(tmp_path: Path) -> None:
    """--gpus 24GB,80GB: 20GB fits GPU 0; after an OOM the 40GB booking only fits GPU 1."""
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: big
            command: {PY} {OOM_TASK} {rec} big 30
            gpus: 1
            gpu_memory: 20GB
            retries: 1
    """)
    sd = tmp_path / "st"
    p = rota("run", spec, "--gpus", "24GB,80GB", "--plain", "--retry-delay", "0.05", "--state-dir", sd)
    assert p.returncode == 0, p.stdout + p.stderr
    tries = read_records(rec)
    assert [t["booked"] for t in tries] == [20 * GiB, 40 * GiB]
    assert tries[0]["cvd"] == "0"  # best fit: the small GPU
    assert tries[1]["cvd"] == "1"  # only the 80GB GPU holds 40GB
    atts = _attempts(sd, "big")
    assert atts[0]["reason"] == "cuda out of memory" and atts[0]["gpus"] == [0] and atts[1]["gpus"] == [1]


def test_oom_booking_is_capped_at_the_largest_gpu(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: huge
            command: {PY} {OOM_TASK} {rec} huge 500
            gpus: 1
            gpu_memory: 30GB
            retries: 3
    """)
    sd = tmp_path / "st"
    p = rota("run", spec, "--gpus", "24GB,80GB", "--plain", "--retry-delay", "0.01", "--state-dir", sd)
    assert p.returncode == 1
    assert [t["booked"] for t in read_records(rec)] == [30 * GiB, 60 * GiB, 80 * GiB, 80 * GiB]
    assert by_name(sd)["huge"]["reason"] == "cuda out of memory"


# ------------------------------------------------------------ enforce_gpu_memory
FAKE_TORCH = '''
"""A stand-in for torch behind the real import interface: records the cap calls."""
import json, os

class _Cuda:
    def is_available(self):
        return True

    def device_count(self):
        return 1

    def set_per_process_memory_fraction(self, fraction, device=None):
        with open(os.environ["FAKE_TORCH_LOG"], "a") as f:
            f.write(json.dumps({"fraction": fraction, "device": device}) + "\\n")

cuda = _Cuda()
'''

PROBE = """
import json, os, sys
import torch
print(json.dumps({"frac": os.environ.get("ROTA_GPU_MEMORY_FRACTION"),
                  "alloc": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
                  "shim": sys.modules["sitecustomize"].__file__,
                  "torch": torch.__file__}))
"""


def _fake_torch(tmp_path: Path) -> Path:
    site = tmp_path / "fake_site"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text(FAKE_TORCH)
    (tmp_path / "probe.py").write_text(PROBE)
    return site


@pytest.mark.parametrize("where", ["controller-env", "spec-env"])
def test_enforce_gpu_memory_sets_fraction_and_caps_torch(tmp_path: Path, where: str) -> None:
    site = _fake_torch(tmp_path)
    log = tmp_path / "torch-calls.jsonl"
    env_block = f"""
            env:
              PYTHONPATH: {site}
              FAKE_TORCH_LOG: {log}""" if where == "spec-env" else f"""
            env:
              FAKE_TORCH_LOG: {log}"""
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: capped
            command: {PY} {tmp_path / 'probe.py'}
            gpus: 1
            gpu_memory: 20GB
            enforce_gpu_memory: true{env_block}
    """)
    extra = {"PYTHONPATH": str(site)} if where == "controller-env" else {}
    p = rota("run", spec, "--gpus", "80GB", "--plain", "--state-dir", tmp_path / "st", env=extra)
    assert p.returncode == 0, p.stdout + p.stderr
    seen = json.loads(Path(by_name(tmp_path / "st")["capped"]["log_path"]).read_text().strip().splitlines()[-1])
    assert seen["frac"] == "0.2500"
    assert seen["alloc"] == "expandable_segments:True"
    assert seen["shim"].endswith("rota/_enforce/sitecustomize.py")
    assert seen["torch"].startswith(str(site))
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    assert calls == [{"fraction": 0.25, "device": 0}]


def test_shim_is_inert_without_fraction_and_chains_other_sitecustomize(tmp_path: Path) -> None:
    """Imported directly: no env -> no hook; another sitecustomize on the path still runs."""
    import rota

    shim = Path(rota.__file__).parent / "_enforce"
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import os\nos.environ['OTHER_SITECUSTOMIZE'] = 'ran'\n")
    site = _fake_torch(tmp_path)
    code = textwrap.dedent("""
        import os, sys
        import torch
        print(os.environ.get("OTHER_SITECUSTOMIZE"), type(sys.meta_path[0]).__name__)
    """)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{shim}:{other}:{site}", "FAKE_TORCH_LOG": str(tmp_path / "l")}
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "ran"
    assert not (tmp_path / "l").exists()
    env["ROTA_GPU_MEMORY_FRACTION"] = "0.5"
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and out.stdout.split()[0] == "ran", out.stderr
    assert json.loads((tmp_path / "l").read_text()) == {"fraction": 0.5, "device": 0}
