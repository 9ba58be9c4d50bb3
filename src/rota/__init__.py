"""rota: run a declared set of ML jobs on every GPU and CPU, crash-safe.

Public API: :func:`load_spec`, :func:`spec_from_dict`, :func:`run`,
:func:`status`, and :mod:`rota.shard` for code inside shard tasks.
"""

from rota.api import RunResult, run, spec_from_dict, status
from rota.errors import RotaError, SpecError
from rota.spec.load import Spec, load_spec
from rota.spec.model import Task

__all__ = ["RotaError", "RunResult", "Spec", "SpecError", "Task", "load_spec", "run", "spec_from_dict", "status"]
__version__ = "0.1.0"
