"""rota: run a declared set of ML jobs on every GPU and CPU, crash-safe.

Public API: :func:`load_spec`, :func:`spec_from_dict`, :func:`run`,
:func:`status`, :func:`stop`; steering a run: :func:`cancel`, :func:`retry`, :func:`hold`,
:func:`release`, :func:`priority`; and :mod:`rota.shard` for code inside shard tasks.

Names are imported on first use, so ``rota status`` and code inside tasks
(``import rota.shard``) do not pay for pydantic and the spec machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rota.errors import RotaError, SpecError

if TYPE_CHECKING:
    from rota.api import (
        RunResult,
        cancel,
        hold,
        priority,
        release,
        retry,
        run,
        spec_from_dict,
        status,
        stop,
    )
    from rota.spec.load import Spec, load_spec
    from rota.spec.model import Task

__all__ = ["RotaError", "RunResult", "Spec", "SpecError", "Task", "cancel", "hold", "load_spec", "priority", "release",
           "retry", "run", "spec_from_dict", "status", "stop"]
__version__ = "0.1.0"

_LAZY = {
    "RunResult": "rota.api", "run": "rota.api", "spec_from_dict": "rota.api", "status": "rota.api", "stop": "rota.api",
    "cancel": "rota.api", "retry": "rota.api", "hold": "rota.api", "release": "rota.api", "priority": "rota.api",
    "Spec": "rota.spec.load", "load_spec": "rota.spec.load", "Task": "rota.spec.model",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rota' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
