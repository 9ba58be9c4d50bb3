"""Mutated YAML text, not only valid models: whole spec files edited line by line.

Issue 17's fuzzer found specs that crashed (a YAML tag with a bad value), or ran part
of the work before failing (a .nan sweep bound, an env name with '=', a 1 MB command).
Here valid specs are mutated as text (a value replaced by a nasty token, a line
inserted, deleted, duplicated or re-indented, characters spliced in) and go through:

- the real loader, many of them: it returns a spec or raises SpecError (one line),
  never anything else;
- the real CLI (``rota plan``, ``rota run``, in-process through click), fewer: no
  traceback, exit 0, 1 (a task failed) or 2, and on 2 no task started and no state
  written (see ``test_spec_fuzz.check``).

The cases the issue names are explicit examples, also run through the real executable.
``ROTA_FUZZ_EXAMPLES`` scales the example counts (default: 150 -> 300 loads, 40 plans, 20 runs).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rota.cli.main import cli
from rota.errors import SpecError
from rota.spec.load import load_spec
from tests.fuzz.test_spec_fuzz import EXAMPLES, MACHINE, Sandbox, check, cli_run

SEEDS = [
    """\
tasks:
  - name: prep
    command: touch SENTINEL
    cpus: 1
    memory: 1GB
  - name: train-{seed}
    command: touch SENTINEL; echo {seed}
    needs: prep
    gpus: 1
    gpu_memory: 10GB
    env: {MODE: fast}
    matrix: {seed: [1, 2]}
""",
    """\
defaults:
  retries: 0
  env: {A: "1"}
tasks:
  - name: shard
    command: touch SENTINEL
    shards: 2
    timeout: 1m
  - name: merge
    command: touch SENTINEL
    needs: shard
    estimate: 30s
machines:
  t4: {gpus: 1x16GB, cpus: 4, memory: 16GB, price_per_hour: 0.5}
""",
    """\
tasks:
  - name: first
    command: touch SENTINEL
  - name: hpo
    command: echo ROTA_METRIC loss={x}
    needs: first
    sweep:
      trials: 2
      metric: loss
      seed: 7
      params:
        x: {type: float, low: -2, high: 2}
        k: {type: int, low: 1, high: 4, step: 1}
""",
]
# What a typo, a copy-paste or the issue's fuzzer put where a value belongs.
TOKENS = [
    "!!int x", "!!float x", "!!bool x", "!!timestamp 2001-99-99", "2001-02-30", "!!binary '%%'", "!!null x",
    ".nan", ".inf", "-.inf", "1e400", "true", "false", "~", "[]", "{}", "[true]", "0", "24", "-1", "1.5",
    "1xGB", "2x24", "30G B", "80GB", "0GB", '"a\\u2028b"', '"a\\x85b"', '"x\\0y"', '"\\ud800"', "''",
    "{ROTA_OUT: /tmp}", "{'A=B': 1}", "{'': 1}", '{A: "x\\0"}', "{CUDA_VISIBLE_DEVICES: '0'}", "*anchor",
    "&a [1, 2]", "'{out}'", "'{nope}'", "'*'", "../../x", "10000000", "2**40", "{type: float, low: .nan, high: 1}",
    "|\n      multi\n      line",
]
KEYS = ["name", "command", "needs", "gpus", "gpu_memory", "cpus", "memory", "estimate", "retries", "timeout", "env",
        "priority", "devices", "shards", "matrix", "sweep", "max_tasks", "machines", "low", "high", "step", "seed",
        "workdir", "outputs", "inputs",
        "trials", "choices", "type", "gpus_x"]


@st.composite
def mutated_text(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(SEEDS)).splitlines()
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        kind = draw(st.sampled_from(["value", "value", "value", "insert", "delete", "dup", "indent", "splice"]))
        indent = line[: len(line) - len(line.lstrip())]
        if kind == "value" and ": " in line:
            lines[i] = line[: line.index(": ") + 2] + draw(st.sampled_from(TOKENS))
        elif kind == "insert":
            lines.insert(i, f"{indent}{draw(st.sampled_from(KEYS))}: {draw(st.sampled_from(TOKENS))}")
        elif kind == "delete":
            del lines[i]
        elif kind == "dup":
            lines.insert(i, line)
        elif kind == "indent":
            lines[i] = ("  " + line) if draw(st.booleans()) else line[2:]
        elif "SENTINEL" not in line:  # a spliced SENTINEL would touch a file beside the spec: a real write
            col = draw(st.integers(0, len(line)))
            lines[i] = line[:col] + draw(st.text(max_size=4)) + line[col:]
    return "\n".join(lines) + "\n"


# Issue 17's cases, one spec each, after a first task that must not run when the spec is refused.
FIRST = "tasks:\n  - name: first\n    command: touch SENTINEL\n"
ISSUE_CASES = {
    "!!int x": FIRST + "  - name: b\n    command: touch SENTINEL\n    priority: !!int x\n",
    "!!float x": FIRST + "  - name: b\n    command: touch SENTINEL\n    estimate: !!float x\n",
    "!!bool x": FIRST + "  - name: b\n    command: touch SENTINEL\n    enforce_gpu_memory: !!bool x\n",
    "!!timestamp 2001-99-99": FIRST + "  - name: b\n    command: touch SENTINEL\n    workdir: !!timestamp 2001-99-99\n",
    "sweep low .nan": FIRST + "  - name: s\n    command: echo ROTA_METRIC l={x}\n    sweep: {trials: 2, metric: l, "
                              "params: {x: {type: float, low: .nan, high: 1}}}\n",
    "sweep high .inf": FIRST + "  - name: s\n    command: echo ROTA_METRIC l={x}\n    sweep: {trials: 2, metric: l, "
                               "params: {x: {type: int, low: 0, high: .inf}}}\n",
    "env name with =": FIRST + "  - name: b\n    command: touch SENTINEL\n    env: {'A=B': 1}\n",
    "env name with NUL": FIRST + '  - name: b\n    command: touch SENTINEL\n    env: {"A\\0": 1}\n',
    "empty env name": FIRST + "  - name: b\n    command: touch SENTINEL\n    env: {'': 1}\n",
    "NUL in command": FIRST + '  - name: b\n    command: "touch SENTINEL\\0"\n',
    "NUL in env value": FIRST + '  - name: b\n    command: touch SENTINEL\n    env: {A: "x\\0"}\n',
    "1 MB command": FIRST + "  - name: b\n    command: touch SENTINEL; echo " + "x" * 2**20 + "\n",
    "max_tasks 10M": "max_tasks: 10000000\n" + FIRST,
    "name with U+2028": FIRST + '  - name: "a\\u2028b"\n    command: touch SENTINEL\n',
    "name with \\x85": FIRST + '  - name: "a\\x85b"\n    command: touch SENTINEL\n',
    "gpus: true": FIRST + "  - name: b\n    command: touch SENTINEL\n    gpus: true\n",
    "devices: [true]": FIRST + "  - name: b\n    command: touch SENTINEL\n    gpus: 1\n    devices: [true]\n",
    "machines 1xGB": FIRST + "machines: {t4: {gpus: 1xGB}}\n",
    "env ROTA_OUT": FIRST + "  - name: b\n    command: touch SENTINEL\n    env: {ROTA_OUT: /tmp/x}\n",
    "env ROTA_TASK": FIRST + "  - name: b\n    command: touch SENTINEL\n    env: {ROTA_TASK: x}\n",
    "NUL in inputs (found by this fuzz)": FIRST + '  - name: b\n    command: touch SENTINEL\n    inputs: ["a\\0b"]\n',
    "gpu_memory without a unit": FIRST + "  - name: b\n    command: touch SENTINEL\n    gpus: 1\n    gpu_memory: 24\n",
}
LOAD = settings(max_examples=EXAMPLES * 2, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CLI = settings(max_examples=max(EXAMPLES // 4, 10), deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RUN = settings(max_examples=max(EXAMPLES // 8, 5), deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def load_or_refuse(text: str, tmp: Path) -> None:
    """The loader's contract: a spec with tasks, or one SpecError line; any other exception fails."""
    try:
        spec = load_spec(tmp / "rota.yaml", text=text)
    except SpecError as e:
        assert str(e).strip() and "\n" not in str(e), repr(str(e))
        return
    assert spec.tasks


@LOAD
@given(mutated_text())
@example(text=SEEDS[0])
def test_mutated_text_through_the_loader(text: str) -> None:
    load_or_refuse(text, Path("/nonexistent-rota-fuzz"))


@pytest.mark.parametrize("label", list(ISSUE_CASES))
def test_issue_cases_are_refused_by_the_loader(label: str) -> None:
    with pytest.raises(SpecError):
        load_spec(Path("/nonexistent-rota-fuzz/rota.yaml"), text=ISSUE_CASES[label])


def plan_in_process(box: Sandbox) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, ["plan", str(box.spec), *MACHINE], catch_exceptions=True)
    err = res.stderr
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        import traceback

        err += "Traceback (in-process):\n" + "".join(traceback.format_exception(res.exception))
    return res.exit_code, res.stdout, err


def through_cli(text: str, command: str) -> int:
    box = Sandbox()
    try:
        box.spec.write_text(text.replace("SENTINEL", str(box.sentinel)), encoding="utf-8", errors="surrogatepass")
        code, out, err = plan_in_process(box) if command == "plan" else cli_run(box)
        check(box, code, out, err)
        if command == "plan":
            assert code in (0, 2), (code, out, err)
            assert not box.state.exists() and not box.sentinel.exists(), "rota plan wrote state or ran a task"
        return code
    finally:
        box.close()


@CLI
@given(mutated_text())
def test_mutated_text_through_rota_plan(text: str) -> None:
    through_cli(text, "plan")


@RUN
@given(mutated_text().filter(lambda t: "sweep" not in t))  # a sweep runs Optuna: covered by plan and the loader
def test_mutated_text_through_rota_run(text: str) -> None:
    through_cli(text, "run")


@pytest.mark.parametrize("label", list(ISSUE_CASES))
def test_issue_cases_through_rota_plan_and_run(label: str) -> None:
    for command in ("plan", "run"):
        assert through_cli(ISSUE_CASES[label], command) == 2, (label, command)


@pytest.mark.parametrize("label", ["!!timestamp 2001-99-99", "sweep low .nan", "1 MB command", "env name with ="])
def test_issue_cases_through_the_real_executable(label: str) -> None:
    box = Sandbox()
    try:
        box.spec.write_text(ISSUE_CASES[label].replace("SENTINEL", str(box.sentinel)))
        p = subprocess.run([sys.executable, "-m", "rota.cli", "run", str(box.spec), "--plain", *MACHINE],
                           capture_output=True, text=True, timeout=120)
        check(box, p.returncode, p.stdout, p.stderr)
        assert p.returncode == 2, p.stdout + p.stderr
    finally:
        box.close()
