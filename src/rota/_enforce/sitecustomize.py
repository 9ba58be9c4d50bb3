"""Cap PyTorch's per-process GPU memory to the share rota booked.

rota puts this folder on PYTHONPATH only for tasks with
``enforce_gpu_memory: true``; it reads ROTA_GPU_MEMORY_FRACTION and, once
torch is imported by the task, calls
``torch.cuda.set_per_process_memory_fraction`` on every visible device, so a
task exceeding its declared ``gpu_memory`` gets a CUDA out-of-memory error
instead of eating its neighbour's share.
"""

import os
import sys


def _install() -> None:
    frac = os.environ.get("ROTA_GPU_MEMORY_FRACTION")
    if not frac:
        return
    import importlib.abc
    import importlib.machinery

    class _Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
            if name != "torch":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return spec
            loader = spec.loader
            orig_exec = loader.exec_module

            def exec_module(module):  # type: ignore[no-untyped-def]
                orig_exec(module)
                try:
                    if module.cuda.is_available():
                        for i in range(module.cuda.device_count()):
                            module.cuda.set_per_process_memory_fraction(float(frac), i)
                except Exception as e:  # never break the task over the cap
                    print(f"rota: could not cap GPU memory: {e}", file=sys.stderr)

            loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, _Hook())


_install()
