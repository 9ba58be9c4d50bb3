"""Bad spec input found by fuzzing (issue 17): each case is refused at load time, before anything runs.

The loader is the real one (``load_spec`` on YAML text); the CLI cases run ``rota`` as a
subprocess and check the contract: one ``rota: error:`` line, exit 2, no state written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rota.errors import SpecError
from rota.spec.load import count_tasks, load_spec
from rota.spec.model import MAX_COMMAND_BYTES, MAX_TASKS_CEILING, TaskSpec
from tests.helpers import rota, write_spec


def _sweep(params: str, extra: str = "") -> str:
    return f"tasks:\n- name: s\n  command: echo {{x}}\n  sweep: {{trials: 2, metric: loss, {extra}params: {{x: {params}}}}}\n"


def _task(extra: str, name: str = "a", command: str = "echo hi") -> str:
    return f"tasks:\n- name: {name}\n  command: {command}\n{extra}"


REFUSED = {
    # YAML tags whose value does not parse: a traceback before (ValueError, KeyError)
    "!!int x": (_task("  priority: !!int x\n"), "'x' is not a valid int"),
    "!!float x": (_task("  estimate: !!float x\n"), "'x' is not a valid float"),
    "!!bool x": (_task("  enforce_gpu_memory: !!bool x\n"), "'x' is not a valid bool"),
    "!!timestamp 2001-99-99": (_task("  name2: !!timestamp 2001-99-99\n"), "month must be in 1..12"),
    "implicit 2001-02-30": (_task("  workdir: 2001-02-30\n"), "'2001-02-30' is not a valid timestamp"),
    "tag in a matrix": (_task("  matrix: {v: [!!int 0x]}\n", name="a-{v}"), "is not a valid int"),
    # sweep bounds that crashed the sweep after other tasks ran
    "low .nan": (_sweep("{type: float, low: .nan, high: 1}"), "finite number"),
    "high .inf": (_sweep("{type: int, low: 0, high: .inf}"), "finite number"),
    "step .inf": (_sweep("{type: float, low: 0, high: 1, step: .inf}"), "finite number"),
    "range overflows": (_sweep("{type: float, low: -1e308, high: 1e308}"), "too wide to sample"),
    "choices .nan": (_sweep("{type: categorical, choices: [1, .nan]}"), "choices must be finite"),
    "int step 0.5": (_sweep("{type: int, low: 0, high: 3, step: 0.5}"), "whole-number step"),
    "grid without step": (_sweep("{type: float, low: 0, high: 1}", "sampler: grid, "), "grid needs 'step'"),
    "grid of 1e9 points": (_sweep("{type: int, low: 0, high: 1000000000}", "sampler: grid, "), "more than 1,000,000"),
    "seed -1": (_sweep("{type: int, low: 0, high: 3}", "seed: -1, "), "sweep.seed"),
    "seed 2**40": (_sweep("{type: int, low: 0, high: 3}", f"seed: {2**40}, "), "sweep.seed"),
    # environments and commands no process can take
    "env name with =": (_task("  env: {'A=B': 1}\n"), "contains =, which a name cannot hold"),
    "empty env name": (_task("  env: {'': 1}\n"), "needs a name"),
    "NUL in env name": (_task('  env: {"A\\0": 1}\n'), "contains a NUL byte"),
    "NUL in env value": (_task('  env: {A: "x\\0y"}\n'), "NUL byte in its value"),
    "NUL in command": (_task("", command='"echo \\0"'), "the command has a NUL byte"),
    "NUL from a matrix value": (_task('  matrix: {v: ["x\\0"]}\n', command="echo {v}"), "NUL"),
    "1 MB command": (_task("", command="echo " + "x" * 2**20), "put a long script in a file"),
    "long command from a matrix value": (
        _task(f"  matrix: {{i: [1], v: [{'y' * MAX_COMMAND_BYTES}]}}\n", name="a-{i}", command="echo {v}"),
        "put a long script in a file"),
    "lone surrogate in command": (_task("", command='"echo \\ud800"'), "field 'command'"),
    "env value over MAX_ARG_STRLEN": (_task(f"  env: {{A: {'v' * 131_072}}}\n"), "MAX_ARG_STRLEN"),
    "NUL in workdir": (_task('  workdir: "a\\0b"\n'), "field 'workdir': path 'a\\x00b' has a NUL byte"),
    "NUL in outputs": (_task('  outputs: ["a\\0b"]\n'), "field 'outputs'"),
    "NUL in inputs (a traceback at launch)": (_task('  inputs: ["a\\0b"]\n'), "field 'inputs'"),
    "NUL in a path from a matrix value": (
        _task('  outputs: ["x-{v}"]\n  matrix: {i: [1], v: ["a\\0"]}\n', name="b-{i}"), "a path (workdir, outputs"),
    # env: must not override what rota sets
    "env ROTA_OUT": (_task("  env: {ROTA_OUT: /tmp}\n"), "is set by rota itself"),
    "env ROTA_TASK": (_task("  env: {ROTA_TASK: x}\n"), "is set by rota itself"),
    "env CUDA_VISIBLE_DEVICES in defaults": (
        "defaults: {env: {CUDA_VISIBLE_DEVICES: '0'}}\n" + _task(""), "is set by rota itself"),
    # names no terminal line, log or table can hold
    "name with U+2028": (_task("", name='"a\\u2028b"'), "U+2028 (a line or paragraph separator)"),
    "name with U+2029": (_task("", name='"a\\u2029b"'), "U+2029"),
    "name with \\x85 from a matrix": (_task('  matrix: {v: ["\\x85"]}\n', name="a-{v}"), "U+0085"),
    "name with \\x9f": (_task("", name='"a\\x9fb"'), "U+009F (a control character)"),
    # booleans are not numbers
    "gpus: true": (_task("  gpus: true\n"), "expected a whole number, found true"),
    "devices: [true]": (_task("  gpus: 1\n  devices: [true]\n"), "expected a whole number, found true"),
    "cpus: false": (_task("  cpus: false\n"), "found false"),
    "shards: true": (_task("  shards: true\n"), "found true"),
    "max_tasks: true": ("max_tasks: true\n" + _task(""), "found true"),
    # machines: is checked by every command, not only plan --machine
    "machines gpus 1xGB": (_task("") + "machines: {t4: {gpus: 1xGB}}\n", "field 'machines.t4.gpus'"),
    "machines gpus 2x16": (_task("") + "machines: {t4: {gpus: 2x16}}\n", "write e.g. '2x16GB'"),
    "machines gpus by index": (_task("") + "machines: {t4: {gpus: '0,1'}}\n", "declared, not detected"),
    "machines price .inf": (_task("") + "machines: {t4: {price_per_hour: .inf}}\n", "finite number"),
    "machines memory bare": (_task("") + "machines: {t4: {memory: 64}}\n", "a size needs a unit"),
    # sizes need a unit (item 4)
    "memory: 1000": (_task("  memory: 1000\n"), "a size needs a unit, found 1000; write e.g. '1000GB'"),
    "gpu_memory: '24'": (_task("  gpus: 1\n  gpu_memory: '24'\n"), "a size needs a unit, found '24'"),
    "gpu_memory: 1.5": (_task("  gpus: 1\n  gpu_memory: 1.5\n"), "a size needs a unit"),
    "slurm gpu_memory: 80": (_task("") + "slurm: {gpu_memory: 80}\n", "a size needs a unit"),
}


@pytest.mark.parametrize("label", list(REFUSED))
def test_refused_at_load(label: str, tmp_path: Path) -> None:
    text, expected = REFUSED[label]
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "rota.yaml", text=text)
    assert expected in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


ACCEPTED = {
    "memory: 0": _task("  memory: 0\n"),
    "memory: '0'": _task("  memory: '0'\n"),
    "memory: 100B": _task("  memory: 100B\n"),
    "gpu_memory: 30GB": _task("  gpus: 1\n  gpu_memory: 30GB\n"),
    "env OMP_NUM_THREADS": _task("  env: {OMP_NUM_THREADS: 2, PYTHONPATH: src}\n"),
    "name with an emoji and ZWJ": _task("", name='"a-\\U0001F468\\u200D\\U0001F469"'),
    "command of 100 KB": _task("", command="echo " + "x" * 100_000),
    "machines 2x16GB": _task("") + "machines: {t4: {gpus: 2x16GB, memory: 64GB, price_per_hour: 0.5}, cpu: {gpus: none}}\n",
    "sweep grid": _sweep("{type: float, low: 0, high: 1, step: 0.25}", "sampler: grid, seed: 7, "),
}


@pytest.mark.parametrize("label", list(ACCEPTED))
def test_still_accepted(label: str, tmp_path: Path) -> None:
    assert load_spec(tmp_path / "rota.yaml", text=ACCEPTED[label]).tasks


def test_duplicate_name_message_names_the_template_once(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "rota.yaml", text=_task("") + "- name: a\n  command: echo\n")
    assert "two tasks are named 'a';" in str(e.value)
    assert "'a' and 'a'" not in str(e.value)


def test_size_messages_do_not_repeat_what_was_found(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "rota.yaml", text=_task("  memory: 30G B\n"))
    assert str(e.value).count("found") == 1, str(e.value)


def test_count_tasks_matches_the_expansion(tmp_path: Path) -> None:
    text = ("tasks:\n- name: m-{a}-{b}\n  command: echo\n  matrix: {a: [1, 2, 3], b: [x, y]}\n"
            "- name: sh\n  command: echo\n  shards: 4\n  matrix: {a: [1, 2]}\n"
            "- name: sw\n  command: echo {x}\n  sweep: {trials: 5, metric: l, params: {x: {type: int, low: 0, high: 3}}}\n")
    spec = load_spec(tmp_path / "rota.yaml", text=text)
    specs = [TaskSpec.model_validate(t) for t in spec.file.tasks]
    assert count_tasks(specs) == len(spec.tasks) == 6 + 8 + 5


def _limit_address_space(limit_bytes: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))


def test_a_spec_that_would_not_fit_in_memory_is_refused_before_expanding(tmp_path: Path) -> None:
    """A million tasks need ~3 GB: under a 1.5 GB address-space limit (``ulimit -v``) the run is refused
    at once, naming the memory, instead of dying of MemoryError minutes later with its state written."""
    import subprocess

    from tests.helpers import ROTA

    spec = write_spec(tmp_path, "max_tasks: 1000000\ntasks:\n  - name: t-{a}-{b}\n    command: 'true'\n"
                      f"    matrix: {{a: {list(range(1000))}, b: {list(range(1000))}}}\n")
    p = subprocess.run([*ROTA, "run", str(spec), "--plain", "--gpus", "none"], capture_output=True, text=True,
                       timeout=60, preexec_fn=lambda: _limit_address_space(1536 * 2**20))
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rota: error: "), p.stderr
    assert "1,000,000 tasks" in lines[0] and "of memory" in lines[0] and "available here" in lines[0], lines[0]
    assert not (tmp_path / ".rota").exists()


def test_max_tasks_has_a_ceiling_rota_can_run(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"field 'max_tasks': at most 1,000,000, found 10,000,000"):
        load_spec(tmp_path / "rota.yaml", text="max_tasks: 10000000\n" + _task(""))
    assert load_spec(tmp_path / "rota.yaml", text=f"max_tasks: {MAX_TASKS_CEILING}\n" + _task("")).tasks


@pytest.mark.parametrize("command", ["run", "plan"])
def test_a_folder_for_spec_is_one_rota_error_line(command: str, tmp_path: Path) -> None:
    """``rota run DIRECTORY`` gave click's 'Error: Invalid value' (and usage); now rota's own line."""
    write_spec(tmp_path, _task(""))
    p = rota(command, tmp_path, "--gpus", "none")
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.strip().splitlines() == [
        f"rota: error: {tmp_path}: is a folder, not a spec file; did you mean '{tmp_path / 'rota.yaml'}'?"]
    assert not (tmp_path / ".rota").exists()


def test_status_of_a_folder_without_state_is_one_rota_error_line(tmp_path: Path) -> None:
    write_spec(tmp_path, _task(""))
    p = rota("status", tmp_path)
    assert p.returncode == 2 and p.stderr.startswith("rota: error: ") and len(p.stderr.strip().splitlines()) == 1


def test_never_run_message_says_1_gpu_not_1_gpus(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, _task("  gpus: 1\n"))
    p = rota("run", spec, "--gpus", "none", "--plain")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "asks for 1 GPU but the machine has none" in p.stderr, p.stderr
    assert not (tmp_path / ".rota").exists()


@pytest.mark.parametrize("flag,expected", [
    ("2x24", "rota: error: --gpus 2x24: GPU memory needs a unit, found '2x24'; write e.g. '2x24GB'"),
    ("24GB,16", "rota: error: --gpus 24GB,16: GPU memory needs a unit, found '16'; write e.g. '16GB'"),
    ("30G B", "rota: error: --gpus 30G B: expected 'none', indices like '0,2', or sizes like '4x80GB', found '30G B'"),
])
def test_gpus_flag_needs_a_unit_and_echoes_the_users_text(flag: str, expected: str, tmp_path: Path) -> None:
    """Issue 17 item 4: ``--gpus 2x24`` declared 24-byte GPUs and ran whole-GPU tasks on them."""
    spec = write_spec(tmp_path, _task("  gpus: 1\n"))
    for command in (["run", spec, "--plain"], ["plan", spec], ["machine"]):
        p = rota(*command, "--gpus", flag)
        assert p.returncode == 2, (command, p.stdout, p.stderr)
        assert p.stderr.strip().splitlines() == [expected], (command, p.stderr)
    assert not (tmp_path / ".rota").exists()


def test_memory_flag_needs_a_unit(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, _task(""))
    p = rota("run", spec, "--plain", "--gpus", "none", "--memory", "64")
    assert p.returncode == 2 and "--memory 64: a size needs a unit" in p.stderr, p.stderr
    assert not (tmp_path / ".rota").exists()
    assert rota("machine", "--gpus", "none", "--memory", "0").returncode == 0


def test_machine_without_gpus_says_none_once() -> None:
    p = rota("machine", "--gpus", "none")
    assert p.returncode == 0 and p.stdout.splitlines()[0] == "GPUs: none", p.stdout


def test_every_variable_rota_sets_for_a_task_is_refused_in_env(tmp_path: Path) -> None:
    """What ``task_env`` (and the local executor) set is exactly what ``env:`` may not: a new variable
    rota adds without reserving it would again be silently overridden by a spec."""
    from rota.engine.attempt import task_env
    from rota.machine import detect_machine
    from rota.spec.model import check_env_entry

    spec = load_spec(tmp_path / "rota.yaml", text=(
        "tasks:\n- name: t-{seed}\n  command: echo {x}\n  gpus: 1\n  gpu_memory: 8GB\n  enforce_gpu_memory: true\n"
        "  shards: 2\n  matrix: {seed: [1]}\n"
        "  sweep: {trials: 1, metric: l, params: {x: {type: int, low: 0, high: 3}}}\n"))
    task = spec.tasks[0]
    machine = detect_machine(gpus="1x16GB", cpus=2, memory="8GB", environ={})
    env = task_env(task, machine=machine, gpus=[0], run_id="r", state_dir=str(tmp_path), out=str(tmp_path / "o"),
                   attempt=1, key="k", needs_out={}, params={"x": 1}, gpu_memory_bytes=8 * 2**30)
    env.update(task.env)  # the shard variables expansion put there
    env.update({"ROTA_WORKDIR": "/w", "ROTA_COMMAND": "c"})  # the local executor's and the launcher's
    rota_names = [k for k in env if k.startswith(("ROTA_", "CUDA_"))]
    assert {"ROTA_OUT", "ROTA_TASK", "ROTA_SHARD_INDEX", "ROTA_PARAM_X", "ROTA_VAR_SEED"} <= set(rota_names)
    for name in rota_names:
        assert check_env_entry(name, "x") is not None, name
    assert check_env_entry("ROTA_EXAMPLE_TIME_SCALE", "0.01") is None  # the user's own ROTA_* names pass


def test_expanding_a_big_spec_says_so_on_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    """Over PROGRESS_MIN_TASKS a line every PROGRESS_EVERY_S while the expansion lasts (both made small
    here, so that 20,000 tasks take several periods); a small spec prints nothing."""
    import rota.spec.load as load

    text = f"tasks:\n- name: t-{{a}}-{{b}}\n  command: echo\n  matrix: {{a: {list(range(200))}, b: {list(range(100))}}}\n"
    load_spec(tmp_path / "rota.yaml", text=text)
    assert capfd.readouterr().err == ""
    monkeypatch.setattr(load, "PROGRESS_MIN_TASKS", 10_000)
    monkeypatch.setattr(load, "PROGRESS_EVERY_S", 0.001)
    assert len(load_spec(tmp_path / "rota.yaml", text=text).tasks) == 20_000
    lines = capfd.readouterr().err.splitlines()
    assert lines and lines[0].startswith(f"rota: {tmp_path / 'rota.yaml'}: expanding 20,000 tasks ("), lines
