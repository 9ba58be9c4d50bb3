"""The executor contract suite runs against every backend.

Each backend contributes a module ``tests/contract/backend_<name>.py`` with

    NAME = "<name>"
    def make_executor(tmp_path) -> Executor   # may call pytest.skip only when CI is unset
    def cleanup(executor) -> None             # optional

The fixture below parametrizes over all of them.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

HERE = Path(__file__).parent
BACKENDS = sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("backend_"))


@pytest.fixture(params=BACKENDS)
def backend(request):
    return importlib.import_module(f"tests.contract.{request.param}")


@pytest.fixture
def fresh_executor(backend, tmp_path):
    """Another executor object on the same backend, as a restarted controller would build."""
    made = []

    def make():
        ex = backend.make_executor(tmp_path)
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.close()


@pytest.fixture
def executor(backend, tmp_path):
    mod = backend
    ex = mod.make_executor(tmp_path)
    yield ex
    cleanup = getattr(mod, "cleanup", None)
    if cleanup is not None:
        cleanup(ex)
    ex.close()
