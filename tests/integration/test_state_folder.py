"""One state folder per spec file: two specs in one folder never share tasks, logs, outputs or a lock."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rota.store.read import state_dir_for_spec, state_dir_of
from tests.helpers import rota, write_spec

# Both specs have a task `prep` (different commands) writing who ran it into its {out}.
TRAIN = """
    tasks:
      - {name: prep, command: "echo train > {out}/who"}
      - name: fit
        needs: prep
        command: python3 -c "import json,os; print(open(json.loads(os.environ['ROTA_NEEDS_OUT'])['prep'] + '/who').read(), end='')" > {out}/saw
"""
EVAL = """
    tasks:
      - {name: prep, command: "echo eval > {out}/who"}
      - {name: score, command: "true", needs: prep}
"""


def _status(*args: str | os.PathLike[str], cwd: Path | None = None) -> dict:
    p = rota("status", "--json", *args, cwd=cwd)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout)


def _attempts(st: dict) -> dict[str, int]:
    return {t["name"]: t["attempts"] for t in st["tasks"]}


def test_rule_rota_yaml_keeps_dot_rota_other_names_get_their_own(tmp_path: Path) -> None:
    base = os.path.realpath(tmp_path)
    for name, want in (("rota.yaml", ".rota"), ("rota.yml", ".rota"), ("train.yaml", ".rota/specs/train"),
                       ("eval.yml", ".rota/specs/eval")):
        spec = tmp_path / name
        spec.write_text("tasks: []\n")
        assert state_dir_for_spec(spec) == os.path.join(base, want)


def test_two_specs_in_one_folder_keep_apart(tmp_path: Path) -> None:
    train = write_spec(tmp_path, TRAIN)  # rota.yaml
    ev = write_spec(tmp_path, EVAL, name="eval.yaml")
    for spec in (train, ev, train, ev):  # each twice, alternating: nothing runs again
        p = rota("run", spec, "--plain", "--gpus", "none")
        assert p.returncode == 0, p.stdout + p.stderr
    st_train, st_eval = _status(train), _status(ev)
    assert _attempts(st_train) == {"prep": 1, "fit": 1}
    assert _attempts(st_eval) == {"prep": 1, "score": 1}
    assert st_train["state_dir"] == os.path.realpath(tmp_path / ".rota")
    assert st_eval["state_dir"] == os.path.realpath(tmp_path / ".rota" / "specs" / "eval")
    # Each `prep` has its own output folder and log; `fit` saw its own spec's prep.
    out_train = Path(next(t["out_dir"] for t in st_train["tasks"] if t["name"] == "prep"))
    out_eval = Path(next(t["out_dir"] for t in st_eval["tasks"] if t["name"] == "prep"))
    assert out_train != out_eval
    assert (out_train / "who").read_text() == "train\n"
    assert (out_eval / "who").read_text() == "eval\n"
    fit_out = Path(next(t["out_dir"] for t in st_train["tasks"] if t["name"] == "fit"))
    assert (fit_out / "saw").read_text() == "train\n"
    # No target: ./.rota, rota.yaml's state; the table names the other spec's.
    assert {t["name"] for t in _status(cwd=tmp_path)["tasks"]} == {"prep", "fit"}
    table = rota("status", cwd=tmp_path)
    assert table.returncode == 0 and "also here: eval.yaml (rota status NAME.yaml)" in table.stdout, table.stdout
    logs = rota("logs", "prep", ev)
    assert logs.returncode == 0 and logs.stdout == "", logs.stdout + logs.stderr


def test_status_without_a_target_finds_the_one_spec_or_asks(tmp_path: Path) -> None:
    ev = write_spec(tmp_path, EVAL, name="eval.yaml")
    assert rota("run", ev, "--plain", "--gpus", "none").returncode == 0
    assert not (tmp_path / ".rota" / "state.db").exists()
    assert {t["name"] for t in _status(cwd=tmp_path)["tasks"]} == {"prep", "score"}
    assert {t["name"] for t in _status(tmp_path)["tasks"]} == {"prep", "score"}  # the folder as target

    train = write_spec(tmp_path, TRAIN, name="train.yaml")
    assert rota("run", train, "--plain", "--gpus", "none").returncode == 0
    for args in ((), (str(tmp_path),)):
        p = rota("status", *args, cwd=tmp_path)
        assert p.returncode == 2, p.stdout + p.stderr
        assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
        assert "eval.yaml" in p.stderr and "train.yaml" in p.stderr
    assert {t["name"] for t in _status(train)["tasks"]} == {"prep", "fit"}


def test_a_dot_rota_made_for_this_spec_by_an_older_rota_is_kept(tmp_path: Path) -> None:
    """Before one folder per spec, every spec's state was .rota/: a run begun then continues there."""
    ev = write_spec(tmp_path, EVAL, name="eval.yaml")
    old = tmp_path / ".rota"
    assert rota("run", ev, "--plain", "--gpus", "none", "--state-dir", old).returncode == 0
    assert state_dir_for_spec(ev) == os.path.realpath(old)
    p = rota("run", ev, "--plain", "--gpus", "none")
    assert p.returncode == 0, p.stdout + p.stderr
    assert _attempts(_status(ev)) == {"prep": 1, "score": 1}  # continued, not run again
    assert not (old / "specs").exists()
    # A different spec next to it still gets its own folder.
    other = write_spec(tmp_path, TRAIN, name="train.yaml")
    assert state_dir_of(other) == os.path.realpath(old / "specs" / "train")
