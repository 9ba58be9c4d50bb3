"""The static checks are part of the test command: ruff over the code, the tests and the
benchmarks, and mypy over src/ (strict for core/, engine/ and store/: pyproject.toml).

Each runs as its own process, as a contributor would run it; a failure shows its output.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> list[str]:
    """The tool as a module of this interpreter (the test extras install both), else on PATH."""
    probe = subprocess.run([sys.executable, "-m", name, "--version"], capture_output=True, text=True)
    if probe.returncode == 0:
        return [sys.executable, "-m", name]
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return [found]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_passes() -> None:
    p = _run([*_tool("ruff"), "check", "src", "tests", "bench"])
    assert p.returncode == 0, f"ruff check src tests bench:\n{p.stdout}{p.stderr}"


def test_mypy_passes() -> None:
    p = _run([*_tool("mypy"), "src"])
    assert p.returncode == 0, f"mypy src:\n{p.stdout}{p.stderr}"


def test_mypy_is_strict_where_configured(tmp_path: Path) -> None:
    """The strict flags reach core/, engine/ and store/ (an untyped function there is an error)
    and only those (the same function elsewhere passes)."""
    pkg = tmp_path / "rota"
    for sub in ("core", "plan"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
        (pkg / sub / "loose.py").write_text("def f(x):\n    return x\n")
    (pkg / "__init__.py").write_text("")
    p = subprocess.run([*_tool("mypy"), "--config-file", str(ROOT / "pyproject.toml"), "-p", "rota.core",
                        "-p", "rota.plan"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert "rota/core/loose.py:1: error: Function is missing a type annotation" in p.stdout, p.stdout
    assert "rota/plan/loose.py" not in p.stdout, p.stdout
