"""Bad input, systematically: random spec files through the real CLI.

Contract checked for every example: exit 0/1 (a valid spec that ran) or 2 (bad
input); on 2 a single ``rota: error:`` line naming the spec file, never a
traceback, no task started (every command touches a sentinel), no state
written (no ``.rota`` folder). Valid specs that ran created files only in
their state folder. Most examples run the CLI in-process (click's runner);
a handful run ``python -m rota.cli`` for real.

``ROTA_FUZZ_EXAMPLES`` scales the number of examples (default 150 per test).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rota.cli.main import cli

EXAMPLES = int(os.environ.get("ROTA_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
MACHINE = ["--gpus", "4x80GB", "--cpus", "4", "--memory", "64GB"]
TASK_KEYS = ["name", "command", "needs", "gpus", "gpu_memory", "cpus", "memory", "estimate", "retries", "timeout",
             "env", "priority", "workdir", "outputs", "inputs", "devices", "enforce_gpu_memory", "matrix", "shards",
             "sweep"]
TOP_KEYS = ["name", "defaults", "tasks", "machines", "slurm", "max_tasks"]
OUTCOMES: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _summary() -> object:
    """With ROTA_FUZZ_SUMMARY=path, write the exit codes seen (for bench/reliability.py)."""
    yield
    path = os.environ.get("ROTA_FUZZ_SUMMARY")
    if path:
        Path(path).write_text(json.dumps(dict(OUTCOMES)))


class Sandbox:
    """sandbox/a/b/spec: anything a run writes outside ``spec/.rota`` is an escape."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rota-fuzz-"))
        self.dir = self.root / "a" / "b" / "spec"
        self.dir.mkdir(parents=True)
        self.sentinel = self.root / "sentinel"
        self.spec = self.dir / "rota.yaml"
        self.state = self.dir / ".rota"

    def files(self) -> list[Path]:
        return [p for p in self.root.rglob("*") if p.is_file() or p.is_symlink()]

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def cli_run(box: Sandbox, *extra: str) -> tuple[int, str, str]:
    """``rota run`` in-process; uncaught exceptions surface as a traceback string."""
    res = CliRunner().invoke(cli, ["run", str(box.spec), "--plain", "--retry-delay", "0", "--grace", "1",
                                   *MACHINE, *extra], catch_exceptions=True)
    err = res.stderr
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        import traceback

        err += "Traceback (in-process):\n" + "".join(traceback.format_exception(res.exception))
    return res.exit_code, res.stdout, err


def check(box: Sandbox, code: int, out: str, err: str) -> None:
    OUTCOMES[f"exit {code}"] += 1
    assert "Traceback" not in err and "Traceback" not in out, err
    assert code in (0, 1, 2), (code, out, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rota: error: "), err
        assert str(box.spec) in lines[0] or "rota.yaml" in lines[0], err
        assert not box.sentinel.exists(), "a task started from a refused spec"
        assert not box.state.exists(), "state was written for a refused spec"
    else:
        for f in box.files():
            inside = box.state in f.parents or f in (box.spec, box.sentinel)
            assert inside, f"a run wrote outside its state folder: {f}"


def fuzz_one(text: str | bytes) -> None:
    box = Sandbox()
    try:
        if isinstance(text, bytes):
            box.spec.write_bytes(text)
        else:
            box.spec.write_text(text.replace("SENTINEL", str(box.sentinel)), encoding="utf-8",
                                errors="surrogatepass")
        check(box, *cli_run(box))
    finally:
        box.close()


# ------------------------------------------------------------ strategies
huge_ints = st.one_of(st.integers(), st.integers(min_value=2**62, max_value=2**200), st.integers(max_value=-2**62))
scalars = st.one_of(
    st.none(), st.booleans(), huge_ints, st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.sampled_from(["10GB", "-1GB", "1e400GB", "80 GB", "0.5TB", "1h", "-5s", "1e308s",
                                           "../../x", "/etc/passwd", "a\nb", "x\x00y", "{i}", "{out}", "*", "ü😀",
                                           "SENTINEL", "touch SENTINEL", "NaN", "inf", "yes", "0x1F"]),
)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(
    st.one_of(st.sampled_from(TASK_KEYS + TOP_KEYS), st.text(max_size=8)), c, max_size=4), max_leaves=20)


@st.composite
def mutated_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid spec, then a few keys replaced, added or removed."""
    task: dict[str, Any] = {"name": "t-{i}", "command": "touch SENTINEL", "matrix": {"i": [0, 1]},
                            "gpus": 1, "gpu_memory": "10GB", "cpus": 1}
    spec: dict[str, Any] = {"tasks": [task, {"name": "after", "command": "touch SENTINEL", "needs": "t-*"}]}
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(["task", "task", "task", "top", "second"]))
        tasks = spec.get("tasks")
        second = tasks[1] if isinstance(tasks, list) and len(tasks) > 1 and isinstance(tasks[1], dict) else None
        # An earlier mutation may have replaced 'tasks' itself: then mutate the top level.
        target = task if where == "task" else second if where == "second" and second is not None else spec
        keys = TOP_KEYS if where == "top" else TASK_KEYS
        key = draw(st.one_of(st.sampled_from(keys), st.text(min_size=1, max_size=10)))
        if draw(st.booleans()) and key in target and key not in ("tasks",):
            del target[key]
        else:
            target[key] = draw(values)
    return spec


@st.composite
def deep_matrices(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=6, unique=True))
    matrix = {k: draw(st.lists(st.one_of(scalars, st.lists(scalars, max_size=2)), min_size=0, max_size=30))
              for k in keys}
    name = "m-" + "-".join("{" + k + "}" for k in keys[:2])
    return {"tasks": [{"name": name, "command": "touch SENTINEL", "matrix": matrix}]}


def dump(data: Any) -> str:
    try:
        return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    except (yaml.YAMLError, ValueError, RecursionError):
        return repr(data)


# ------------------------------------------------------------ fuzz tests
@FUZZ
@given(st.text(max_size=400))
def test_random_text(text: str) -> None:
    fuzz_one(text)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    fuzz_one(data)


@FUZZ
@given(values)
def test_random_structure(data: Any) -> None:
    fuzz_one(dump(data))


@FUZZ
@given(st.lists(values, min_size=1, max_size=3))
def test_random_task_lists(tasks: list[Any]) -> None:
    fuzz_one(dump({"tasks": tasks}))


@FUZZ
@given(mutated_specs())
def test_mutated_valid_spec(spec: dict[str, Any]) -> None:
    fuzz_one(dump(spec))


@settings(max_examples=max(EXAMPLES // 3, 10), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(deep_matrices())
def test_deep_matrices(spec: dict[str, Any]) -> None:
    fuzz_one(dump(spec))


YAML_TRAPS = [
    "tasks: [" * 5000,  # deep nesting
    "a: &a [x]\n" + "".join(f"b{i}: &b{i} [*{'a' if i == 0 else f'b{i-1}'}, *{'a' if i == 0 else f'b{i-1}'}]\n"
                            for i in range(40)) + "tasks: *b39\n",  # alias bomb
    "tasks:\n  - !!python/object/apply:os.system ['touch SENTINEL']\n",
    "tasks:\n  - {name: x, command: touch SENTINEL, gpus: 1e400}\n",
    "tasks:\n  - {name: x, command: touch SENTINEL, gpu_memory: 99999999999999999999999999PB, gpus: 1}\n",
    "tasks:\n  - {name: x, command: touch SENTINEL, timeout: 99999999999999999999999d}\n",
    "tasks:\n  - {name: x, command: touch SENTINEL, needs: [x]}\n",
    "tasks:\n  - {name: x, command: touch SENTINEL, needs: [y]}\n  - {name: y, command: touch SENTINEL, needs: [x]}\n",
    "tasks:\n  - {name: x, command: touch SENTINEL}\n  - {name: x, command: touch SENTINEL}\n",
    "tasks:\n  - {name: \"a\\nb\", command: touch SENTINEL}\n",
    "tasks:\n  - {name: \"a\\0b\", command: touch SENTINEL}\n",
    "tasks:\n  - {name: \"t-{v}\", command: touch SENTINEL, matrix: {v: [\"a\\nb\"]}}\n",
    "tasks:\n  - {name: x, command: touch SENTINEL, devices: [7]}\n",
    "tasks:\n  - {name: x, command: touch SENTINEL, matrix: {out: [1]}}\n",
    "tasks:\n  - {name: x, command: touch SENTINEL, matrix: {v: []}}\n",
    "tasks:\n  - {name: x, command: touch SENTINEL}\nmax_tasks: 0\n",
    "\ufefftasks:\n  - {name: x, command: touch SENTINEL, gpus: -1}\n",
    "tasks: {name: x, command: touch SENTINEL}\n",
    "- 1\n- 2\n",
    "%YAML 1.1\n---\ntasks: []\n---\ntasks: []\n",
]


def test_yaml_traps_in_process() -> None:
    for text in YAML_TRAPS:
        fuzz_one(text)


def test_subprocess_sample() -> None:
    """A handful through the real executable: same contract."""
    for text in [YAML_TRAPS[0], YAML_TRAPS[1], YAML_TRAPS[3], "tasks: [{name: x}]\n", "\x00\x01"]:
        box = Sandbox()
        try:
            box.spec.write_text(text.replace("SENTINEL", str(box.sentinel)))
            p = subprocess.run([sys.executable, "-m", "rota.cli", "run", str(box.spec), "--plain", *MACHINE],
                               capture_output=True, text=True, timeout=120)
            check(box, p.returncode, p.stdout, p.stderr)
            assert p.returncode == 2
        finally:
            box.close()


# ------------------------------------------------------------ escapes
ESCAPING = ["../../x", "../../../../../../tmp/rota-escape-{tag}", "/tmp/rota-escape-{tag}", "..", ".", "./../y",
            "a/../../b", "~/z", "$HOME", "`id`", "\\..\\..\\w", "ü/../../😀", "-rf", "x" * 190, "%2e%2e%2f"]


def test_names_and_values_cannot_escape_the_state_folder() -> None:
    tag = f"{os.getpid()}-{time.time_ns()}"
    names = [n.replace("{tag}", tag) for n in ESCAPING]
    box = Sandbox()
    try:
        tasks: list[dict[str, Any]] = [{"name": n, "command": f"touch {box.sentinel}"} for n in names]
        tasks.append({"name": "v-{v}", "command": f"touch {box.sentinel}; echo {{v}}", "matrix": {"v": names}})
        box.spec.write_text(yaml.safe_dump({"tasks": tasks}, allow_unicode=True))
        code, out, err = cli_run(box)
        assert code == 0, out + err
        check(box, code, out, err)
        assert len(list((box.state / "logs").iterdir())) == 2 * len(names)
        assert not list(Path("/tmp").glob(f"rota-escape-{tag}*"))
        assert not Path(os.path.expanduser("~/z")).exists() or Path(os.path.expanduser("~/z")).stat().st_mtime < time.time() - 3600
    finally:
        box.close()


@settings(max_examples=max(EXAMPLES // 3, 10), deadline=None, derandomize=True)
@given(st.lists(st.text(alphabet=st.sampled_from("./\\~$`ü😀-_ ab%*"), min_size=1, max_size=40),
                min_size=1, max_size=6, unique=True))
def test_random_path_like_names_stay_inside(names: list[str]) -> None:
    box = Sandbox()
    try:
        tasks = [{"name": n, "command": f"touch {box.sentinel}"} for n in names]
        box.spec.write_text(yaml.safe_dump({"tasks": tasks}, allow_unicode=True))
        check(box, *cli_run(box))
    finally:
        box.close()


# ------------------------------------------------------------ millions of tasks
def _matrix_spec(name: str, matrix: dict[str, int], head: str = "", extra: str = "") -> str:
    values = ", ".join(f"{k}: {list(range(n))}" for k, n in matrix.items())
    return f"{head}tasks:\n  - name: {name}\n    command: touch SENTINEL\n{extra}    matrix: {{{values}}}\n"


MILLIONS = {
    "8M by matrix": _matrix_spec("t-{a}-{b}-{c}", {"a": 200, "b": 200, "c": 200}),
    "100M by shards x matrix": _matrix_spec("s-{a}", {"a": 1000}, extra="    shards: 100000\n"),
    "1M+1 with max_tasks at its ceiling": _matrix_spec("t-{a}-{b}", {"a": 1001, "b": 1000}, head="max_tasks: 1000000\n"),
    "1000 templates of 1000": "tasks:\n" + "".join(
        f"  - name: g{k}-{{a}}\n    command: touch SENTINEL\n    matrix: {{a: *v}}\n" if k else
        f"  - name: g{k}-{{a}}\n    command: touch SENTINEL\n    matrix: {{a: &v {list(range(1000))}}}\n"
        for k in range(1000)),
}


@pytest.mark.parametrize("label", list(MILLIONS))
def test_millions_of_tasks_refused_quickly_in_bounded_memory(label: str) -> None:
    """Real subprocess; wall time and the child's own peak RSS (VmHWM) are bounded."""
    box = Sandbox()
    try:
        box.spec.write_text(MILLIONS[label].replace("SENTINEL", str(box.sentinel)))
        code, out, err, wall, rss_mb = run_measured(
            [sys.executable, "-m", "rota.cli", "run", str(box.spec), "--plain", *MACHINE], box.root)
        check(box, code, out, err)
        assert code == 2 and "more than the limit" in err, err
        print(f"{label}: refused in {wall:.2f}s, peak RSS {rss_mb:.0f} MB: {err.strip()}")
        assert wall < 10, wall
        assert rss_mb < 300, rss_mb
    finally:
        box.close()


# The child reports its own peak RSS (VmHWM of its own address space) into a file at exit.
# wait4's ru_maxrss cannot be used: Linux starts a vfork+exec'd child's maxrss at the
# parent's RSS, so a big pytest process made every child look 410 MB.
_HWM = """
import atexit, os, runpy, sys
def _hwm():
    with open("/proc/self/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(os.environ["ROTA_TEST_HWM_FILE"], "w") as out:
        out.write(kb)
atexit.register(_hwm)
sys.argv = ["rota", *sys.argv[1:]]
runpy.run_module("rota.cli", run_name="__main__", alter_sys=True)
"""


def run_measured(argv: list[str], folder: Path) -> tuple[int, str, str, float, float]:
    """Run ``python -m rota.cli ARGS``; (exit code, stdout, stderr, wall seconds, its own peak RSS in MB)."""
    assert argv[:3] == [sys.executable, "-m", "rota.cli"], argv
    out_p, err_p, hwm_p = folder / "stdout", folder / "stderr", folder / "hwm"
    t0 = time.perf_counter()
    with open(out_p, "w") as o, open(err_p, "w") as e:
        proc = subprocess.Popen([sys.executable, "-c", _HWM, *argv[3:]], stdout=o, stderr=e,
                                env={**os.environ, "ROTA_TEST_HWM_FILE": str(hwm_p)})
        proc.wait()
    wall = time.perf_counter() - t0
    out, err = out_p.read_text(), err_p.read_text()
    rss_mb = int(hwm_p.read_text()) / 1024
    for p in (out_p, err_p, hwm_p):
        p.unlink()
    return proc.returncode, out, err, wall, rss_mb
