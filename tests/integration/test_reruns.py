"""Reruns (issue 17, items 8 and 13): a task that runs again reruns what used its output, and a new run
of a task starts in an empty output folder while a retry resumes from its checkpoints. Real `rota run`s."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers import by_name, rota, write_spec

REPO = Path(__file__).resolve().parents[2]

CHAIN = """\
    tasks:
      - name: a
        command: test -f ok && echo a >> runs.txt
      - name: b
        needs: [a]
        command: echo b >> runs.txt
      - name: c
        needs: [b]
        command: echo c >> runs.txt
      - name: d
        command: echo d >> runs.txt
"""


def _runs(folder: Path) -> list[str]:
    return (folder / "runs.txt").read_text().split()


def test_rerun_reruns_transitive_dependents_and_the_flag_keeps_them(tmp_path):
    spec = write_spec(tmp_path, CHAIN)
    (tmp_path / "ok").touch()
    rota("run", spec, "--gpus", "none", "--plain", check=True)
    assert sorted(_runs(tmp_path)) == ["a", "b", "c", "d"]

    (tmp_path / "runs.txt").unlink()
    out = rota("run", spec, "--gpus", "none", "--plain", "--rerun", "a", check=True)
    assert sorted(_runs(tmp_path)) == ["a", "b", "c"], out.stdout  # d does not use a: kept
    assert "run again too: " in out.stdout

    (tmp_path / "runs.txt").unlink()
    rota("run", spec, "--gpus", "none", "--plain", "--rerun", "a", "--no-rerun-dependents", check=True)
    assert _runs(tmp_path) == ["a"]


def test_failed_rerun_skips_its_dependents_and_a_fixed_rerun_runs_them(tmp_path):
    spec = write_spec(tmp_path, CHAIN)
    sd = tmp_path / ".rota"
    (tmp_path / "ok").touch()
    rota("run", spec, "--gpus", "none", "--plain", check=True)

    (tmp_path / "ok").unlink()
    got = rota("run", spec, "--gpus", "none", "--plain", "--rerun", "a")
    assert got.returncode == 1
    states = {n: t["state"] for n, t in by_name(sd).items()}
    # Before: b and c stayed "succeeded" beside their failed need, from a's older output.
    assert states == {"a": "failed", "b": "skipped", "c": "skipped", "d": "succeeded"}
    assert "rota logs a " in got.stdout  # the run-end line names the failed task's log

    (tmp_path / "runs.txt").unlink()
    (tmp_path / "ok").touch()
    rota("run", spec, "--gpus", "none", "--plain", check=True)  # a failed: it runs again, b and c with it
    assert _runs(tmp_path) == ["a", "b", "c"]
    assert {t["state"] for t in by_name(sd).values()} == {"succeeded"}


def test_quickstart_rerun_of_one_train_task_reruns_summary(tmp_path):
    ex = tmp_path / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", ex)
    spec = ex / "rota.yaml"
    sd = ex / ".rota"
    rota("run", spec, "--plain", check=True, timeout=180)
    first = by_name(sd)
    out = rota("run", spec, "--plain", "--rerun", "train-small-1", check=True, timeout=180)
    again = by_name(sd)
    assert again["summary"]["started_at"] > first["summary"]["ended_at"], out.stdout
    assert again["train-small-2"]["started_at"] == first["train-small-2"]["started_at"]
    assert again["prepare"]["started_at"] == first["prepare"]["started_at"]


def test_nothing_left_to_do_says_so_and_a_run_says_where_its_files_are(tmp_path):
    spec = write_spec(tmp_path, "tasks:\n  - {name: a, command: echo hi}\n")
    first = rota("run", spec, "--gpus", "none", "--plain", check=True)
    sd = (tmp_path / ".rota").resolve()
    assert f"outputs in {sd}/out/TASK, logs in {sd}/logs/TASK/" in first.stdout
    assert f"rota: next: 'rota report {spec}', 'rota logs TASK {spec}'" in first.stdout
    assert "nothing ran" not in first.stdout

    second = rota("run", spec, "--gpus", "none", "--plain", check=True)
    assert "rota: nothing ran: all 1 tasks succeeded in an earlier run" in second.stdout
    assert "--rerun PATTERN" in second.stdout


SHARD = """\
    import json, os, sys
    import rota.shard

    mine = rota.shard.range(40)
    new = 0
    for chunk in rota.shard.chunks(mine, 5):
        chunk.save([i * 2 for i in chunk.items])
        new += 1
        crash = os.environ.get("CRASH_AFTER") and new == int(os.environ["CRASH_AFTER"])
        if crash and os.environ["ROTA_ATTEMPT"] == "1" and not os.path.exists("fixed"):
            sys.exit(3)
    with open("chunks-made.jsonl", "a") as f:
        f.write(json.dumps({"task": os.environ["ROTA_TASK"], "attempt": int(os.environ["ROTA_ATTEMPT"]),
                            "new": new}) + "\\n")
"""

SHARD_SPEC = """\
    tasks:
      - name: emb
        shards: 2
        retries: {retries}
        env: {{CRASH_AFTER: "{crash}"}}
        command: python shard_task.py {arg}
"""


def _made(folder: Path) -> list[tuple[str, int]]:
    import json

    rows = [json.loads(x) for x in (folder / "chunks-made.jsonl").read_text().splitlines()]
    (folder / "chunks-made.jsonl").unlink()
    return sorted((r["task"], r["new"]) for r in rows)


def _shard_spec(folder: Path, *, retries: int = 0, crash: str = "", arg: str = "") -> Path:
    (folder / "shard_task.py").write_text(__import__("textwrap").dedent(SHARD))
    return write_spec(folder, SHARD_SPEC.format(retries=retries, crash=crash, arg=arg))


def test_rerun_of_shards_starts_from_an_empty_output_folder(tmp_path):
    spec = _shard_spec(tmp_path)
    sd = tmp_path / ".rota"
    rota("run", spec, "--gpus", "none", "--plain", check=True)
    assert _made(tmp_path) == [("emb-0", 4), ("emb-1", 4)]

    out = rota("run", spec, "--gpus", "none", "--plain", "--rerun", "*", check=True)
    # Before: every chunk of the previous run was taken as done (0 new chunks, "succeeded" at once).
    assert _made(tmp_path) == [("emb-0", 4), ("emb-1", 4)], out.stdout
    assert "succeeded before: a new run of it starts in an empty output folder" in out.stdout
    assert not (sd / "out" / ".previous" / "emb-0").exists()  # the old folder goes once the new run succeeds


def test_a_retry_resumes_from_checkpoints_within_a_run_and_in_the_next_run(tmp_path):
    spec = _shard_spec(tmp_path, retries=1, crash="3")
    rota("run", spec, "--gpus", "none", "--plain", "--retry-delay", "0", check=True)
    # Attempt 1 of each shard saved 3 of its 4 chunks and crashed; the retry made only the one left.
    assert _made(tmp_path) == [("emb-0", 1), ("emb-1", 1)]

    spec = _shard_spec(tmp_path, retries=0, crash="3")
    sd = tmp_path / "other-state"
    assert rota("run", spec, "--gpus", "none", "--plain", "--state-dir", sd).returncode == 1
    (tmp_path / "fixed").touch()
    rota("run", spec, "--gpus", "none", "--plain", "--state-dir", sd, check=True)
    assert _made(tmp_path) == [("emb-0", 1), ("emb-1", 1)]  # a failed task run again later resumes too


def test_a_changed_command_starts_from_an_empty_output_folder(tmp_path):
    spec = _shard_spec(tmp_path, crash="3")
    sd = tmp_path / ".rota"
    assert rota("run", spec, "--gpus", "none", "--plain").returncode == 1  # 3 of 4 chunks each, then exit 3
    (tmp_path / "fixed").touch()
    spec = _shard_spec(tmp_path, crash="3", arg="--model new")
    out = rota("run", spec, "--gpus", "none", "--plain", check=True)
    # Before: the new command resumed the old command's 3 chunks.
    assert _made(tmp_path) == [("emb-0", 4), ("emb-1", 4)], out.stdout
    assert "its command changed" in out.stdout
    assert not (sd / "out" / ".previous").exists() or not any((sd / "out" / ".previous").iterdir())


def test_a_dependent_with_outputs_runs_again_though_its_outputs_exist(tmp_path):
    spec = write_spec(tmp_path, """\
        tasks:
          - name: prep
            command: echo prep >> runs.txt
          - name: model
            needs: [prep]
            outputs: [model.txt]
            command: echo model >> runs.txt && echo m > model.txt
    """)
    rota("run", spec, "--gpus", "none", "--plain", check=True)
    (tmp_path / "runs.txt").unlink()
    rota("run", spec, "--gpus", "none", "--plain", "--rerun", "prep", check=True)
    assert _runs(tmp_path) == ["prep", "model"]  # not "cached": what it read has changed
    assert by_name(tmp_path / ".rota")["model"]["state"] == "succeeded"


def _out_spec(folder: Path, version: str) -> Path:
    return write_spec(folder, f"""\
        tasks:
          - name: t
            command: test ! -f broken && echo {version} > {{out}}/result.txt
    """)


def test_a_failed_new_run_keeps_the_last_good_folder_aside_until_one_succeeds(tmp_path):
    sd = tmp_path / ".rota"
    rota("run", _out_spec(tmp_path, "v1"), "--gpus", "none", "--plain", check=True)
    out, prev = sd / "out" / "t", sd / "out" / ".previous" / "t"
    (tmp_path / "broken").touch()
    assert rota("run", _out_spec(tmp_path, "v2"), "--gpus", "none", "--plain").returncode == 1
    assert (prev / "result.txt").read_text() == "v1\n" and not (out / "result.txt").exists()
    assert rota("run", _out_spec(tmp_path, "v3"), "--gpus", "none", "--plain").returncode == 1
    assert (prev / "result.txt").read_text() == "v1\n"  # the failed v2 folder did not replace it
    (tmp_path / "broken").unlink()
    rota("run", _out_spec(tmp_path, "v3"), "--gpus", "none", "--plain", check=True)
    assert (out / "result.txt").read_text() == "v3\n" and not prev.exists()


def test_a_folder_an_earlier_rota_made_is_set_aside_on_a_rerun(tmp_path):
    spec = _shard_spec(tmp_path)
    sd = tmp_path / ".rota"
    rota("run", spec, "--gpus", "none", "--plain", check=True)
    _made(tmp_path)
    for i in (0, 1):  # what a rota without records left: chunks, and nothing saying what made them
        shutil.rmtree(sd / "out" / f"emb-{i}" / ".rota")
    out = rota("run", spec, "--gpus", "none", "--plain", "--rerun", "*", check=True)
    assert _made(tmp_path) == [("emb-0", 4), ("emb-1", 4)], out.stdout
    assert "made by an earlier rota that did not record by what" in out.stdout
