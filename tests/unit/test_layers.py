"""The layers of src/rota, read from the source with ast (nothing is imported).

A package is a folder of src/rota (``core``, ``engine``, ``spec``, ...) or a top-level
module (``machine``, ``units``, ...). Every import counts, also those inside functions
and under ``TYPE_CHECKING``: a lazy import hides a cycle from Python, not from a reader.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from rota.store.sqlite import SqliteStore
from tests.helpers import rota, write_spec

SRC = Path(__file__).resolve().parents[2] / "src"

NEUTRAL = frozenset({"rota.errors", "rota.units", "rota.lanes", "rota.logtail"})
"""Modules any layer may import: the exception tree, sizes and durations, the Gantt lane
model, a log's tail. Each imports only the standard library and other neutral modules."""

PUBLIC_EXECUTOR_MODULES = frozenset({"rota.executors.base", "rota.executors.common"})
"""What the engine may import from ``executors/``: the interface and the shared helpers, never a
concrete executor."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / "rota").rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` for every rota import in a module."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "rota"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "rota":
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.append((sub, None, node.lineno) if sub in known else (mod, a.name, node.lineno))
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "rota"


def _owner(module: str) -> str:
    """Who may share private names: a package, and in ``executors/`` one backend (``ray``, ``ray_task``
    and ``ray_supervisor`` are one; ``local`` and ``ray`` are not)."""
    pkg = _package(module)
    return f"executors.{module.split('.')[-1].split('_')[0]}" if pkg == "executors" else pkg


def _graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], list[str]]]:
    mods = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    why: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, path in mods.items():
        for target, _, line in _imports(name, path, set(mods)):
            a, b = _package(name), _package(target)
            if a != b:
                edges[a].add(b)
                why[(a, b)].append(f"{path.relative_to(SRC.parent)}:{line} imports {target}")
    return edges, why


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return found


def _violations(rule: str, bad: list[str]) -> str:
    return f"{rule}:\n  " + "\n  ".join(bad)


def test_the_graph_sees_the_packages_and_their_imports():
    """The checks below are only as good as the graph: it must see known edges, lazy ones too."""
    edges, why = _graph()
    assert {"core", "engine", "executors", "spec", "store", "plan", "report", "ui", "cli"} <= set(edges)
    assert "core" in edges["engine"] and "store" in edges["engine"]
    assert "api" in edges["cli"]  # only lazy imports (inside functions) link cli to api
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_package_cycles():
    edges, why = _graph()
    cycles = _cycles(edges)
    detail = []
    for comp in cycles:
        for a in comp:
            for b in sorted(edges[a] & set(comp)):
                detail += why[(a, b)][:3]
    assert not cycles, _violations(f"package cycles {cycles}", detail)


def test_core_imports_only_itself_and_the_neutral_modules():
    mods = _modules()
    bad = [
        f"{path.relative_to(SRC.parent)}:{line} imports {target}"
        for name, path in mods.items() if name.startswith("rota.core")
        for target, _, line in _imports(name, path, set(mods))
        if not (target == "rota.core" or target.startswith("rota.core.") or target in NEUTRAL)
    ]
    assert not bad, _violations("core/ may import only rota.core and " + ", ".join(sorted(NEUTRAL)), bad)


def test_neutral_modules_import_only_neutral_modules():
    mods = _modules()
    assert NEUTRAL <= set(mods)
    bad = [
        f"{mods[name].relative_to(SRC.parent)}:{line} imports {target}"
        for name in sorted(NEUTRAL)
        for target, _, line in _imports(name, mods[name], set(mods))
        if target not in NEUTRAL
    ]
    assert not bad, _violations("a neutral module imports only neutral modules", bad)


def test_layer_rules():
    """report and plan do not import the engine; the engine imports no concrete executor; private
    (``_``) names stay inside their package (their backend, in executors/); only store/ touches the
    store's database connection."""
    mods = _modules()
    bad = []
    for name, path in mods.items():
        where = path.relative_to(SRC.parent)
        pkg = _package(name)
        for target, attr, line in _imports(name, path, set(mods)):
            if pkg in ("report", "plan") and _package(target) == "engine":
                bad.append(f"{where}:{line} imports {target}: {pkg} must not import the engine")
            if (pkg == "engine" and _package(target) == "executors" and target != "rota.executors"
                    and target not in PUBLIC_EXECUTOR_MODULES):
                bad.append(f"{where}:{line} imports {target}: the engine imports only "
                           + " and ".join(sorted(PUBLIC_EXECUTOR_MODULES)))
            if attr is not None and attr.startswith("_") and not attr.startswith("__") and _owner(target) != _owner(name):
                bad.append(f"{where}:{line} imports the private name {attr} of {target}")
        if pkg != "store":
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr == "conn" and isinstance(node.value, ast.Attribute) \
                        and node.value.attr == "store":
                    bad.append(f"{where}:{node.lineno} uses store.conn: add a store method instead")
    assert not bad, _violations("layer rules", bad)


def test_set_peak_gpu_memory_writes_the_attempt_row(tmp_path: Path):
    """The GPU monitor's one write goes through the store: the attempt's peak lands in its row."""
    spec = write_spec(tmp_path, "tasks:\n  - name: t\n    command: 'true'\n")
    sd = tmp_path / "state"
    rota("run", spec, "--state-dir", sd, "--plain", check=True)
    store = SqliteStore(sd)
    try:
        last = store.attempts("t")[-1]
        store.set_peak_gpu_memory("t", last["attempt"], 12345)
        assert store.attempts("t")[-1]["peak_gpu_memory_bytes"] == 12345
    finally:
        store.close()
