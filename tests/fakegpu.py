"""Scripting the stand-in ``pynvml`` (tests/fake_nvml/pynvml.py) from a test.

``FakeGpus(tmp_path, n)`` writes the script (n GPUs of 80 GiB each); ``env`` is what a
controller subprocess needs to load the stand-in first (``PYTHONPATH``) and read the
script; ``update(...)`` rewrites the script atomically while rota runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FAKE_DIR = Path(__file__).resolve().parent / "fake_nvml"
SRC = Path(__file__).resolve().parents[1] / "src"
GiB = 2**30


class FakeGpus:
    def __init__(self, folder: Path, count: int = 1, memory_bytes: int = 80 * GiB) -> None:
        self.path = folder / "nvml.json"
        self.proc_dir = folder / "gpu-procs"
        self.proc_dir.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = {
            "gpus": [{"name": "NVIDIA H100 80GB HBM3", "uuid": f"GPU-fake-{i:04d}", "memory_bytes": memory_bytes,
                      "util": 0, "ecc_uncorrected": 0} for i in range(count)],
            "processes": {},
            "process_dir": str(self.proc_dir),
            "xid": [],
        }
        self.write()

    @property
    def env(self) -> dict[str, str]:
        path = os.pathsep.join([str(FAKE_DIR), str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        return {"PYTHONPATH": path, "ROTA_FAKE_NVML": str(self.path)}

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)

    def hold(self, gpu: int, pid: int, used_bytes: int | None) -> None:
        """A process (not rota's) holds ``used_bytes`` on ``gpu``."""
        self.data["processes"].setdefault(str(gpu), []).append({"pid": pid, "used_bytes": used_bytes})
        self.write()

    def release(self, pid: int) -> None:
        for procs in self.data["processes"].values():
            procs[:] = [p for p in procs if p["pid"] != pid]
        self.write()

    def xid(self, gpu: int, code: int) -> None:
        self.data["xid"].append({"gpu": gpu, "xid": code})
        self.write()

    def set_gpu(self, gpu: int, **fields: Any) -> None:
        self.data["gpus"][gpu].update(fields)
        self.write()

    def task_holds(self, used_bytes: int) -> str:
        """A shell snippet for a task's command: its own shell shows up as a compute process on its
        GPU holding ``used_bytes`` (as a CUDA process of a rota task would)."""
        return f'echo {used_bytes} > "{self.proc_dir}/${{CUDA_VISIBLE_DEVICES}}-$$"'

