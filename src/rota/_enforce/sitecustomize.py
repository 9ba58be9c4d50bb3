"""Cap PyTorch's per-process GPU memory to the share rota booked.

rota puts this folder on PYTHONPATH only for tasks with
``enforce_gpu_memory: true``; it reads ROTA_GPU_MEMORY_FRACTION and, once
torch is imported by the task, calls
``torch.cuda.set_per_process_memory_fraction`` on every visible device, so a
task exceeding its declared ``gpu_memory`` gets a CUDA out-of-memory error
instead of eating its neighbour's share.

Python imports only the first ``sitecustomize`` on the path; this one then
runs the next one (a distribution's or a virtualenv's), so putting rota's
folder first takes nothing away.
"""

import os
import sys


def _install() -> None:
    frac = os.environ.get("ROTA_GPU_MEMORY_FRACTION")
    if not frac:
        return
    cap = float(frac)
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
                            module.cuda.set_per_process_memory_fraction(cap, i)
                except Exception as e:  # never break the task over the cap
                    print(f"rota: could not cap GPU memory: {e}", file=sys.stderr)

            loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, _Hook())


def _chain() -> None:
    """Run the sitecustomize this one shadows, if any."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as e:  # as Python itself does for a failing sitecustomize
        print(f"Error in sitecustomize ({spec.origin}): {e!r}", file=sys.stderr)


_install()
_chain()
