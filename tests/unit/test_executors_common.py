"""executors/common.py: the helpers every executor shares (one rule, not one copy per backend)."""

from __future__ import annotations

from pathlib import Path

from rota.executors.base import Handle
from rota.executors.common import discard_rc_files, rc_path_for, read_rc, status_from_code
from rota.executors.slurm_parse import status_from_rc


def test_exit_codes_map_to_one_status_for_every_backend():
    cases = {0: ("succeeded", 0, "exit 0"), 7: ("failed", 7, "exit 7"),
             143: ("failed", 143, "exit 143 (signal 15)"), 300: ("failed", 300, "exit 300"),
             -9: ("failed", 137, "signal 9")}
    for code, want in cases.items():
        st = status_from_code(code, 1.0, 2.0)
        assert (st.phase, st.exit_code, st.reason, st.started_at, st.ended_at) == (*want, 1.0, 2.0), code
        if code >= 0:  # an .rc file (SLURM) never holds a negative code
            assert status_from_rc(code, 1.0, 2.0) == st


def test_rc_files_are_read_and_only_a_failures_is_discarded(tmp_path: Path):
    ok, bad, torn = (str(tmp_path / f"{n}.log") for n in ("ok", "bad", "torn"))
    for log, text in ((ok, "0\n"), (bad, "3\n"), (torn, "")):
        Path(rc_path_for(log)).write_text(text)
    assert [read_rc(rc_path_for(p)) for p in (ok, bad, torn)] == [0, 3, None]
    assert read_rc(str(tmp_path / "missing.rc")) is None
    discard_rc_files([Handle(f"{n}#1", "slurm", "1", {"rc_path": rc_path_for(p)})
                      for n, p in (("ok", ok), ("bad", bad), ("torn", torn))])
    assert [Path(rc_path_for(p)).exists() for p in (ok, bad, torn)] == [True, False, True]
