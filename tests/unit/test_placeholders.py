"""Placeholders (issue 17, items 2 and 3): any matrix variable name, every built-in filled,
unknown placeholders refused before anything runs, ``{{name}}`` for a literal brace.

CLI tests run the real ``rota`` and real bash; the rest check expansion and the
launch-time rendering directly (``rota.spec.placeholders``)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rota.engine.attempt import render_command, slug
from rota.errors import SpecError
from rota.spec.expand import expand_tasks
from rota.spec.load import load_spec
from rota.spec.model import TaskSpec
from rota.spec.placeholders import BRACES
from tests.helpers import rota, write_spec


def _expand(task: dict, max_tasks: int = 1000) -> list:
    return expand_tasks([(TaskSpec.model_validate(task), 7)], file="f.yaml", root="/r", max_tasks=max_tasks)


def _err(task: dict) -> str:
    with pytest.raises(SpecError) as e:
        _expand(task)
    assert e.value.exit_code == 2
    return str(e.value)


def _run(tmp_path: Path, text: str) -> dict[str, str]:
    """``rota run`` the spec; every task writes its command's output to ``$ROTA_OUT/seen``."""
    spec = write_spec(tmp_path, text)
    p = rota("run", spec, "--plain", "--gpus", "none", "--cpus", "2", timeout=120)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = tmp_path / ".rota" / "out"
    return {d.name: (d / "seen").read_text() for d in out.iterdir() if (d / "seen").is_file()}


# ------------------------------------------------------------------ item 2: any matrix variable name


@pytest.mark.parametrize("var", ["task", "run", "attempt", "out", "shard"])
def test_a_matrix_variable_may_have_a_builtin_name_and_wins(var: str) -> None:
    """Refused before ("matrix variable 'task' is reserved"); now the user's value fills {var}."""
    tasks = _expand({"name": f"t-{{{var}}}", "command": f"echo {{{var}}}", "matrix": {var: ["a b", "c"]},
                     "outputs": [f"o/{{{var}}}"], "env": {"V": f"{{{var}}}"}})
    assert [t.name for t in tasks] == ["t-a b", "t-c"]
    assert [t.command for t in tasks] == ["echo 'a b'", "echo c"]
    assert tasks[0].outputs == ("/r/o/a b",) and dict(tasks[0].env)["V"] == "a b"
    assert tasks[0].vars == ((var, "a b"),)


def test_shadowed_builtins_stay_reachable_as_rota_names_and_env_vars(tmp_path: Path) -> None:
    """A real run: the user's {task}/{out}/{run}/{attempt} values win; {rota.*} and $ROTA_* are the built-ins.
    {rota.attempt} is filled per attempt (the first attempt fails, the retry sees 2)."""
    seen = _run(tmp_path, """
        tasks:
          - name: glue-{task}
            matrix: {task: [sst2, trec], out: [o1], run: [r1], attempt: [a1]}
            retries: 1
            command: >-
              test {rota.attempt} -ge 2 &&
              echo {task} {out} {run} {attempt} "$ROTA_TASK" {rota.task} {rota.out} {rota.run} {rota.attempt}
              "$ROTA_RUN" "$ROTA_ATTEMPT" > "$ROTA_OUT/seen"
    """)
    assert set(seen) == {"glue-sst2", "glue-trec"}
    words = seen["glue-sst2"].split()
    assert words[:5] == ["sst2", "o1", "r1", "a1", "glue-sst2"]
    assert words[5] == "glue-sst2" and words[6] == str(tmp_path / ".rota" / "out" / slug("glue-sst2"))
    assert words[7] == words[9] and words[7]  # {rota.run} is $ROTA_RUN
    assert words[8] == words[10] == "2"


def test_every_builtin_is_filled_in_a_command(tmp_path: Path) -> None:
    """{task}, {run} and {attempt} were documented nowhere and left as written ('{task}')."""
    seen = _run(tmp_path, """
        tasks:
          - name: one
            command: echo {task} {out} {run} {attempt} "$ROTA_RUN" > "$ROTA_OUT/seen"
          - name: sh
            shards: 2
            command: echo {shard} {rota.shard} $ROTA_SHARD_INDEX {task} > "$ROTA_OUT/seen"
    """)
    task, out, run, attempt, env_run = seen["one"].split()
    assert (task, out, attempt) == ("one", str(tmp_path / ".rota" / "out" / "one"), "1")
    assert run == env_run and run
    assert seen["sh-1"].split() == ["1", "1", "1", "sh-1"]


def test_shard_matrix_variable_beside_shards() -> None:
    tasks = _expand({"name": "e-{shard}", "command": "run {shard} {rota.shard}", "shards": 2,
                     "matrix": {"shard": ["x"]}})
    assert [(t.name, t.command, t.vars) for t in tasks] == [
        ("e-x-0", "run x 0", (("shard", "x"),)), ("e-x-1", "run x 1", (("shard", "x"),))]
    named = _expand({"name": "e-{rota.shard}", "command": "true", "shards": 2, "outputs": ["p{shard}/{task}"],
                     "env": {"S": "{shard}"}})
    assert [(t.name, t.outputs, dict(t.env)["S"]) for t in named] == [
        ("e-0", ("/r/p0/e-0",), "0"), ("e-1", ("/r/p1/e-1",), "1")]


def test_a_sweep_parameter_wins_over_a_bare_builtin_at_launch() -> None:
    [t] = _expand({"name": "s", "command": "x {out} {rota.out} {lr}",
                   "sweep": {"trials": 1, "metric": "m", "params": {"out": {"type": "int", "low": 0, "high": 3},
                                                                    "lr": {"type": "float", "low": 0, "high": 1}}}})
    assert render_command(t, "/o/s", {"out": 2, "lr": 0.5}, run_id="R", attempt=1) == "x 2 /o/s 0.5"


# ------------------------------------------------------------------ item 3: unknown placeholders


@pytest.mark.parametrize("command", ["run", "plan"])
def test_a_misspelt_placeholder_is_bad_input_before_anything_runs(command: str, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, """
        tasks:
          - {name: ok, command: "touch $HOME/never"}
          - name: train-{seed}
            matrix: {seed: [1, 2]}
            command: echo {sed}
    """)
    p = rota(command, spec, "--gpus", "none", timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rota: error: "), p.stderr
    assert str(spec) in lines[0] and "task 'train-{seed}'" in lines[0] and "field 'command'" in lines[0]
    assert "'{sed}' is not a matrix variable or a built-in; did you mean '{seed}'?" in lines[0]
    assert "write '{{sed}}' for the literal text '{sed}'" in lines[0]
    assert "Traceback" not in p.stderr and not (tmp_path / ".rota").exists()


def test_a_placeholder_with_nothing_to_fill_it_is_refused(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "tasks:\n  - {name: t, command: 'python train.py --lr {lr}'}\n")
    p = rota("run", spec, "--gpus", "none", timeout=60)
    assert p.returncode == 2 and "'{lr}' is not a matrix variable or a built-in" in p.stderr, p.stderr
    assert not (tmp_path / ".rota").exists()


@pytest.mark.parametrize("task,field,words", [
    ({"name": "t-{sed}", "matrix": {"seed": [1]}}, "name", "did you mean '{seed}'"),
    ({"needs": ["prep-{sed}"], "matrix": {"seed": [1]}}, "needs", "did you mean '{seed}'"),
    ({"workdir": "w/{sed}", "matrix": {"seed": [1]}}, "workdir", "did you mean '{seed}'"),
    ({"outputs": ["o/{sed}"], "matrix": {"seed": [1]}}, "outputs", "did you mean '{seed}'"),
    ({"inputs": ["i/{sed}"], "matrix": {"seed": [1]}}, "inputs", "did you mean '{seed}'"),
    ({"env": {"S": "{sed}"}, "matrix": {"seed": [1]}}, "env.S", "did you mean '{seed}'"),
    ({"command": "echo {rota.seed}", "matrix": {"seed": [1]}}, "command", "did you mean '{seed}'"),
    ({"command": "echo {rota.tsk}"}, "command", "did you mean '{rota.task}'"),
    ({"command": "echo {lrr}", "sweep": {"trials": 1, "metric": "m",
                                          "params": {"lr": {"type": "float", "low": 0, "high": 1}}}},
     "command", "not a matrix variable, a sweep parameter or a built-in; did you mean '{lr}'"),
    ({"env": {"L": "{lr}"}, "sweep": {"trials": 1, "metric": "m",
                                      "params": {"lr": {"type": "float", "low": 0, "high": 1}}}},
     "env.L", "'{lr}' is a sweep parameter, filled only in 'command'"),
    ({"name": "t-{out}"}, "name", "'{out}' (the task's output folder) can be used only in 'command'"),
    ({"outputs": ["{out}/m.pt"]}, "outputs", "a command also has it as $ROTA_OUT"),
    ({"name": "t-{task}"}, "name", "a name cannot hold itself"),
    ({"command": "echo {shard}"}, "command", "'{shard}' (the shard index, from 0) is defined only for a task with 'shards:'"),
    ({"command": "echo {{{seed}}}", "matrix": {"seed": [1]}}, "command", "ambiguous braces '{{{seed}}}'"),
])
def test_each_field_checks_its_placeholders(task: dict, field: str, words: str) -> None:
    msg = _err({"name": "t", "command": "true", **task})
    assert f"f.yaml:7: task '{task.get('name', 't')}': field '{field}': " in msg and words in msg, msg


# ------------------------------------------------------------------ literal braces


def test_literal_braces_reach_bash_exactly_once(tmp_path: Path) -> None:
    """Through both passes (expansion, then launch): {{name}} gives {name}, bash's ${...}, awk's
    {print $1} and JSON need no escaping, a value holding braces arrives as written."""
    seen = _run(tmp_path, """
        tasks:
          - name: b-{v}
            matrix: {seed: [1], v: ['{out}', '{{task}}', '{x}}']}
            env: {J: '{"s": {seed}}'}
            command: >-
              V=val;
              { echo {{seed}} {{out}} {{rota.task}} ${V} ${U:-dflt} "${V}";
                echo 'a b' | awk '{print $2}';
                echo '{"a": {"b": {seed}}}' "$J";
                echo {v}; } > "$ROTA_OUT/seen"
    """)
    got = {name: text.splitlines() for name, text in seen.items()}
    assert got[slug("b-{out}")] == ["{seed} {out} {rota.task} val dflt val", "b", '{"a": {"b": 1}} {"s": 1}', "{out}"]
    assert got[slug("b-{{task}}")][-1] == "{{task}}"
    assert got[slug("b-{x}}")][-1] == "{x}}"


def test_escapes_and_values_in_names_and_paths() -> None:
    [t] = _expand({"name": "n-{{v}}-{v}", "command": "true", "matrix": {"v": ["{w}"]}, "outputs": ["{{x}}/{v}"]})
    assert t.name == "n-{v}-{w}" and t.outputs == ("/r/{x}/{w}",)
    # A name holding no variable (only its escaped text) still gets the values appended.
    assert [t.name for t in _expand({"name": "n-{{v}}", "command": "true", "matrix": {"v": [1, 2]}})] == [
        "n-{v}-1", "n-{v}-2"]


_VALUES = st.text(alphabet="{}$ab_.'\" out", max_size=8)
_PIECES = st.lists(st.sampled_from(
    ["{a}", "{b}", "{out}", "{task}", "{rota.out}", "{{a}}", "{{out}}", "{a}}", "{out}}}",
     "{", "}", "$", "${a}", " ", "o", "ut", ".", "x"]), max_size=12)


def _reference(template: str, values: dict[str, str]) -> str:
    """The language in one pass, everything known: what the two passes must add up to."""

    def repl(m) -> str:
        opens, name, closes = len(m.group(1)), m.group(2), len(m.group(3))
        if opens == 2 and closes == 2:
            return "{" + name + "}"
        assert opens == 1
        return shlex.quote(values[name]) + "}" * (closes - 1)

    return BRACES.sub(repl, template)


@settings(max_examples=400, deadline=None)
@given(pieces=_PIECES, a=_VALUES, b=_VALUES)
def test_two_passes_give_what_one_pass_would(pieces: list[str], a: str, b: str) -> None:
    """Expansion then launch equals the language applied once with every value known, as the
    shell reads it (the only textual differences are shell-neutral: '' and quotes)."""
    template = "".join(pieces) or "x"
    try:
        [t] = _expand({"name": "t", "command": template, "matrix": {"a": [a], "b": [b]}})
    except SpecError as e:
        assert "ambiguous braces" in str(e)
        return
    got = render_command(t, "/o/d", None, run_id="R", attempt=1)
    want = _reference(template, {"a": a, "b": b, "out": "/o/d", "rota.out": "/o/d", "task": t.name})
    try:
        expected = shlex.split(want)
    except ValueError:  # unbalanced quotes in the template itself: compare the text
        assert got == want
        return
    assert shlex.split(got) == expected


def test_the_big_matrix_route_and_the_general_route_agree_on_placeholders() -> None:
    """Guarded slots ({o{v}}: a value could join the text into a placeholder) are quoted on both routes."""
    from itertools import product

    from rota.spec.expand import _expand_one, _Fixed

    ts = TaskSpec.model_validate({"name": "g-{v}-{w}", "command": "e {o{v}} {w} {{w}} {task} '{\"k\": {v}}'",
                                  "matrix": {"v": ["ut", "{out}"], "w": ["1", "a b"]}, "env": {"E": "{w}"}})
    fast = expand_tasks([(ts, 1)], file="f", root="/r", max_tasks=100)
    f = _Fixed(ts, "/r")
    slow = [t for v, w in product(["ut", "{out}"], ["1", "a b"]) for t in _expand_one(ts, {"v": v, "w": w}, "/r", f)]
    assert fast == slow
    assert fast[0].command == "e {o'ut'} 1 {w} {task} '{\"k\": ut}'"


def test_examples_still_load() -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    for spec in sorted(root.glob("*/*.yaml")):
        assert load_spec(spec).tasks, spec
    suite = load_spec(root / "experiment-suite" / "rota.yaml")
    t = next(t for t in suite.tasks if t.name == "main-small-sst2-s42")
    assert "--task sst2 --seed 42" in t.command and ("task", "sst2") in t.vars


def test_needs_may_name_another_template_as_written(tmp_path: Path) -> None:
    """The README's 'spec-task names (all expansions: train or train-{seed})' still holds:
    a needs entry that is a template's name keeps the placeholders this task has no value for."""
    spec = load_spec(write_spec(tmp_path, """
        tasks:
          - {name: "train-{seed}", command: "true", matrix: {seed: [1, 2]}}
          - {name: report, command: "true", needs: "train-{seed}"}
          - {name: "eval-{seed}", command: "true", needs: "train-{seed}", matrix: {seed: [1, 2]}}
    """))
    assert spec.task("report").needs == ("train-1", "train-2")
    assert spec.task("eval-2").needs == ("train-2",)
    with pytest.raises(SpecError, match=r"'\{sed\}' is not .* did you mean the spec task 'train-\{seed\}'\?"):
        load_spec(write_spec(tmp_path, """
            tasks:
              - {name: "train-{seed}", command: "true", matrix: {seed: [1, 2]}}
              - {name: report, command: "true", needs: "train-{sed}"}
        """))


def test_a_template_named_with_rota_shard_is_needed_by_its_base_name(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, """
        tasks:
          - {name: "embed-{rota.shard}", command: "true", shards: 2}
          - {name: merge, command: "true", needs: embed}
    """))
    assert spec.task("merge").needs == ("embed-0", "embed-1")
