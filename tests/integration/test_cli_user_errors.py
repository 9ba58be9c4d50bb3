"""A new user's slips on the command line: one line naming the flag, exit 2, nothing written.

Each case here was a defect a user hit on the README's commands (real subprocesses, a real
run's state): ``rota report --by sed`` (for ``seed``) grouped every task under '-' without a
word (now a warning), and ``rota report --html missing/r.html`` rendered the report, then ended in a
FileNotFoundError traceback with exit 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import by_name, rota, start_rota, wait_for, write_spec

SPEC = """
tasks:
  - name: train-{model}-{seed}
    matrix: {model: [small, big], seed: [1, 2]}
    command: "echo ROTA_METRIC acc=0.{seed}"
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of SPEC: its spec file."""
    spec = write_spec(tmp_path_factory.mktemp("user-errors"), SPEC)
    rota("run", spec, "--gpus", "none", "--cpus", "2", "--plain", check=True)
    return spec


def _one_line_exit_2(p: object, *needles: str) -> None:
    import subprocess

    assert isinstance(p, subprocess.CompletedProcess)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and p.stdout == "", (p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rota: error: "), p.stderr
    assert all(n in lines[0] for n in needles), (needles, lines[0])


def test_report_by_a_variable_no_task_has_is_named_on_stderr(ran: Path) -> None:
    """A warning (exit 0): the report is still right, and stdout stays parseable."""
    for args in (["--by", "sed"], ["--by", "model,sed", "--json"]):
        p = rota("report", ran, *args, check=True)
        warnings = [ln for ln in p.stderr.splitlines() if ln.startswith("rota: warning: --by sed:")]
        assert len(warnings) == 1 and "model, seed" in warnings[0], p.stderr
    assert json.loads(p.stdout)["format"] == "rota-report/1"
    ok = rota("report", ran, "--by", "seed", "--csv", check=True)  # a real variable: no warning
    assert ok.stdout.splitlines()[0].startswith("base,var.seed,") and "warning" not in ok.stderr


def test_report_html_into_a_missing_folder_is_refused_before_rendering(ran: Path, tmp_path: Path) -> None:
    target = tmp_path / "no-such-folder" / "r.html"
    _one_line_exit_2(rota("report", ran, "--html", target), f"--html {target}", "does not exist")
    assert not target.parent.exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    _one_line_exit_2(rota("report", ran, "--html", afile / "r.html"), "is not a folder")
    # A folder that exists: written, as before.
    rota("report", ran, "--html", tmp_path / "r.html", check=True)
    assert (tmp_path / "r.html").read_text().startswith("<!")


@pytest.mark.parametrize(("args", "needle"), [
    (["priority", "train-*", "abc"], "rota priority: Invalid value for 'N'"),
    (["hold"], "rota hold: Missing argument 'PATTERN...'"),
    (["run", "rota.yaml", "--bogus"], "rota run: No such option '--bogus'"),
    (["run", "rota.yaml", "--backend", "k8s"], "rota run: Invalid value for '--backend'"),
    (["nosuchcommand"], "rota: No such command 'nosuchcommand'"),
    (["status", "--bogus"], "rota status: No such option '--bogus'"),
    (["report", "--top", "x"], "rota report: Invalid value for '--top'"),
])
def test_a_usage_error_is_one_line_naming_the_command_and_its_help(args: list[str], needle: str,
                                                                   tmp_path: Path) -> None:
    """Click printed four lines (usage, 'Try ...', a blank, 'Error: ...'); now rota's one line."""
    p = rota(*args, cwd=tmp_path)
    _one_line_exit_2(p, needle, f"(see '{needle.split(':')[0]} --help')")


def test_a_rerun_pattern_that_matches_no_task_is_refused_before_anything_runs(ran: Path) -> None:
    """``--rerun trian-*`` was ignored: 'nothing ran', as if the misspelt task were done."""
    before = rota("status", ran, "--json", check=True).stdout
    _one_line_exit_2(rota("run", ran, "--gpus", "none", "--plain", "--rerun", "trian-*"),
                     "--rerun 'trian-*' matches no task", "train-small-1")
    assert rota("status", ran, "--json", check=True).stdout == before  # no run, no attempt
    ok = rota("run", ran, "--gpus", "none", "--plain", "--rerun", "train-small-1", check=True)
    assert "train-small-1 attempt 2" in ok.stdout


def test_status_after_the_controller_left_shows_no_stale_start(tmp_path: Path) -> None:
    """After ``rota stop --drain`` ended a run, ``rota status`` said 'starts now' / 'starts in ~13s'
    for tasks that nothing would start before the next ``rota run``: the last controller's
    predictions, read back as if it were still there."""
    spec = write_spec(tmp_path, """
        tasks:
          - {name: first, command: "sleep 3"}
          - {name: second, command: "sleep 3"}
    """)
    sd = tmp_path / ".rota"
    run = start_rota("run", spec, "--gpus", "none", "--cpus", "1", "--plain")
    try:
        wait_for(lambda: (sd / "state.db").exists() and by_name(sd).get("second", {}).get("predicted_start_s")
                 is not None, timeout=60, interval=0.2)
        live = rota("status", spec, check=True).stdout
        assert "pending, why they wait (rota why TASK):" in live and "  second  starts " in live, live
        run.kill()  # SIGKILL: its forecast stays in the store (a drain clears it: test_longrun_steer)
        run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert by_name(sd)["second"]["predicted_start_s"] is not None  # the stored forecast outlives its controller
    table = rota("status", spec, check=True).stdout
    assert "no controller running ('rota run' continues them)" in table, table
    line = next(ln for ln in table.splitlines() if ln.startswith("  second "))
    assert "not before 'rota run'" in line and "starts" not in line, line
