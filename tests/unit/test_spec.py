"""Spec validation: each problem is one SpecError naming file, task, field (exit 2)."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from rota.errors import SpecError
from rota.spec.load import load_spec
from tests.helpers import write_spec


def load(tmp_path, text):
    return load_spec(write_spec(tmp_path, text))


def err(tmp_path, text) -> SpecError:
    with pytest.raises(SpecError) as e:
        load(tmp_path, text)
    return e.value


def test_matrix_expansion_and_quoting(tmp_path):
    spec = load(tmp_path, """
        tasks:
          - name: train-{model}-{seed}
            command: python train.py --seed {seed} --note {note} --x ${HOME} awk '{print $1}'
            matrix: {model: [a, b], seed: [1, 2], note: ["it's a $HOME \\"x\\""]}
    """)
    names = [t.name for t in spec.tasks]
    assert names == ["train-a-1", "train-a-2", "train-b-1", "train-b-2"]
    cmd = spec.tasks[0].command
    assert "${HOME}" in cmd and "{print $1}" in cmd
    argv = shlex.split(cmd)
    assert argv[argv.index("--note") + 1] == 'it\'s a $HOME "x"'
    out = subprocess.run(["bash", "-c", f"printf '%s\\n' {shlex.quote('x')} " + cmd.split("--note ")[1].split(" --x")[0]],
                         capture_output=True, text=True).stdout.splitlines()
    assert out[1] == 'it\'s a $HOME "x"'
    assert spec.tasks[0].vars_dict == {"model": "a", "seed": "1", "note": 'it\'s a $HOME "x"'}


def test_needs_globs_groups_and_defaults(tmp_path):
    spec = load(tmp_path, """
        defaults: {cpus: 2, retries: 1, env: {A: "1"}}
        tasks:
          - {name: prep, command: "true"}
          - name: train-{seed}
            command: "true"
            matrix: {seed: [1, 2, 3]}
            needs: prep
            env: {B: "2"}
          - {name: agg, command: "true", needs: ["train-*"]}
          - {name: agg2, command: "true", needs: [train]}
    """)
    t = {x.name: x for x in spec.tasks}
    assert t["agg"].needs == ("train-1", "train-2", "train-3")
    assert t["agg2"].needs == ("train-1", "train-2", "train-3")
    assert t["train-1"].request.cpus == 2 and t["train-1"].retries == 1
    assert t["train-1"].env_dict == {"A": "1", "B": "2"}


def test_unknown_key_did_you_mean(tmp_path):
    e = err(tmp_path, """
        tasks:
          - name: a
            command: "true"
            gpu_memroy: 30GB
    """)
    assert "gpu_memory" in str(e) and "did you mean" in str(e)
    assert e.task == "a" and e.line == 5 and "rota.yaml" in str(e)


def test_duplicate_names(tmp_path):
    e = err(tmp_path, """
        tasks:
          - {name: "t-{s}", command: "true", matrix: {s: [1, 1]}}
    """)
    assert "two tasks are named 't-1'" in str(e)


def test_cycle_is_named(tmp_path):
    e = err(tmp_path, """
        tasks:
          - {name: a, command: "true", needs: c}
          - {name: b, command: "true", needs: a}
          - {name: c, command: "true", needs: b}
    """)
    assert "dependency cycle" in str(e)
    assert "->" in str(e) and all(n in str(e) for n in "abc")


def test_needs_matching_nothing(tmp_path):
    e = err(tmp_path, """
        tasks:
          - {name: a, command: "true", needs: "trian-*"}
    """)
    assert "trian-*" in str(e) and e.field == "needs"


@pytest.mark.parametrize(
    "snippet,field",
    [("gpu_memory: 30XB", "gpu_memory"), ("estimate: soon", "estimate"), ("gpus: -1", "gpus"), ("cpus: many", "cpus"),
     ("timeout: 5 minutes", "timeout"), ("retries: 1.5", "retries")],
)
def test_bad_values(tmp_path, snippet, field):
    e = err(tmp_path, f"""
        tasks:
          - name: a
            command: "true"
            {snippet}
    """)
    assert e.field == field and e.task == "a"


def test_yaml_syntax_error_has_line(tmp_path):
    e = err(tmp_path, "tasks:\n  - name: a\n    command: [unclosed\n")
    assert e.line is not None and "YAML" in str(e)


def test_control_characters_in_names_refused(tmp_path):
    e = err(tmp_path, """
        tasks:
          - {name: "t-{v}", command: "true", matrix: {v: ["a\\nb"]}}
    """)
    assert "control character" in str(e)


def test_too_many_tasks_refused_fast(tmp_path):
    e = err(tmp_path, """
        tasks:
          - name: t-{a}-{b}-{c}
            command: "true"
            matrix: {a: [%s], b: [%s], c: [%s]}
    """ % ((",".join(map(str, range(1000))),) * 3))
    assert "limit" in str(e)


def test_shards(tmp_path):
    spec = load(tmp_path, """
        tasks:
          - {name: embed, command: "python e.py --shard {shard}", shards: 4}
          - {name: merge, command: "true", needs: embed}
    """)
    names = [t.name for t in spec.tasks]
    assert names == ["embed-0", "embed-1", "embed-2", "embed-3", "merge"]
    assert spec.tasks[2].env_dict["ROTA_SHARD_INDEX"] == "2" and spec.tasks[2].env_dict["ROTA_SHARD_COUNT"] == "4"
    assert spec.tasks[2].command == "python e.py --shard 2"
    assert spec.tasks[-1].needs == tuple(names[:4])


@pytest.mark.parametrize("name,command,matrix,extra", [
    ("job-{a}-{b}", "python t.py --a {a} --b {b} --out {out}", {"a": [1, 2.5, True], "b": ["x y", "$H"]}, {}),
    ("r-{b}-{a}%x{", "echo %s {b} {a} {b} {{HOME}} ${X} 100% {{a}} %(a)s", {"a": ["%d", "{a}", "}{"], "b": [1, "%"]}, {}),
    ("t-{task}", "run {task} {rota.task} {out} {{task}} {o{task}}", {"task": ["sst2", "{out}", "ut"]},
     {"env": {"T": "{task}-{rota.task}"}, "outputs": ["{rota.task}/o"]}),
    ("plain", "run {v}", {"v": [1, 2]}, {"env": {"A": 1}, "gpus": 1, "gpu_memory": "10GB"}),
    ("w-{v}", "run", {"v": ["a", "b"]}, {"workdir": "runs/{v}", "outputs": ["{v}/o", "f"], "inputs": "in/{v}"}),
    ("n-{v}", "run", {"v": ["a", "b"]}, {"needs": ["prep-{v}", "all"]}),
])
def test_matrix_fast_path_equals_the_generic_expansion(name, command, matrix, extra):
    """Matrix templates take a precompiled route; it must give what _expand_one gives."""
    import itertools

    from rota.spec.expand import _expand_one, _Fixed, expand_tasks, value_text
    from rota.spec.model import TaskSpec

    ts = TaskSpec.model_validate({"name": name, "command": command, "matrix": matrix, **extra})
    fast = expand_tasks([(ts, 1)], file="f", root="/r", max_tasks=1000)
    keys, fixed = list(matrix), _Fixed(ts, "/r")
    slow = [t for combo in itertools.product(*(ts.matrix[k] for k in keys))
            for t in _expand_one(ts, {k: value_text(v) for k, v in zip(keys, combo, strict=True)}, "/r", fixed)]
    assert fast == slow and len(fast) == len(list(itertools.product(*matrix.values())))


def test_only_keeps_matches_and_everything_they_need(tmp_path):
    spec = load_spec(write_spec(tmp_path, """
        tasks:
          - {name: prep, command: 'true'}
          - {name: other, command: 'true'}
          - {name: "train-{i}", command: 'true', needs: prep, matrix: {i: [1, 2]}}
          - {name: "eval-{i}", command: 'true', needs: "train-{i}", matrix: {i: [1, 2]}}
          - {name: report, command: 'true', needs: "eval-*"}
    """))
    assert [t.name for t in spec.only(["eval-2"]).tasks] == ["prep", "train-2", "eval-2"]
    assert [t.name for t in spec.only(["train-*", "other"]).tasks] == ["prep", "other", "train-1", "train-2"]
    assert [t.name for t in spec.only(["report"]).tasks] == [t.name for t in spec.tasks if t.name != "other"]
    # `also` keeps exact names (a dead controller's running attempts) and ignores unknown ones.
    assert [t.name for t in spec.only(["prep"], also=["other", "gone"]).tasks] == ["prep", "other"]
    # Needs stay resolved; the original spec is unchanged.
    assert spec.only(["eval-1"]).task("eval-1").needs == ("train-1",)
    assert len(spec.tasks) == 7


def test_only_pattern_matching_nothing_is_bad_input(tmp_path):
    spec = load_spec(write_spec(tmp_path, "tasks:\n  - {name: train-1, command: 'true'}\n"))
    with pytest.raises(SpecError) as e:
        spec.only(["train-1", "trian-*"])
    assert e.value.exit_code == 2
    assert "rota.yaml" in str(e.value) and "'trian-*' matches no task" in str(e.value) and "train-1" in str(e.value)
