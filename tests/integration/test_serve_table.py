"""rota serve's incremental reader (rota.serve.table.TaskTable over rota.store.read.read_changed) on a
real run's state folder: after a change only the changed rows are read again, and what it holds is
what a full read (``rota status --json``'s, rota.store.read.read_status) gives: after a retry, a rerun
(the row replaced under a new rowid), a row removed, the predictor's columns written."""

from __future__ import annotations

from pathlib import Path

from rota.serve import views
from rota.serve.table import TaskTable
from rota.store.read import read_status
from rota.store.sqlite import SqliteStore
from tests.helpers import rota, write_spec

SPEC = """
tasks:
  - name: t-{i}
    command: echo ROTA_METRIC acc=0.{i}
    matrix: {i: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]}
  - name: last
    needs: [t-7]
    command: echo done
"""


def test_only_changed_rows_are_read_again_and_the_table_equals_a_full_read(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC)
    rota("run", spec, "--plain", check=True)
    sd = tmp_path / ".rota"
    rota("priority", "t-0", "5", "--spec", spec, check=True)  # the latest write: one row, t-0

    # Forecasts never come in by themselves here (forecast_s): what is read is what moved.
    table = TaskTable(sd, full_read_s=3600, forecast_s=3600)
    v = table.read()
    assert v.full and v.reread == 21 and v.data == read_status(sd)
    assert v.metrics == 20 and v.gpus == 0 and len(v.started) == 21

    v = table.read()  # nothing changed: only the rows of the instant last seen (>=, never lost)
    assert not v.full and v.reread == 1 and v.data == read_status(sd)

    rota("retry", "t-7", "--force", "--spec", spec, check=True)  # t-7 back to pending
    v = table.read()
    assert not v.full and 1 <= v.reread <= 3  # t-7 (its user, and t-0 again: the instant last seen)
    full = read_status(sd)
    assert v.data == full and v.by_name["t-7"]["state"] == "pending" and "t-7" not in v.started
    assert views.timeline_of(v.started, v.by_name, 1e10) == views.timeline(full["tasks"], 1e10)

    rota("run", spec, "--plain", check=True)  # runs them again: their rows rewritten in place (same rowids)
    v = table.read()
    full = read_status(sd)
    assert not v.full and v.reread <= 4
    assert v.data == full and [t["name"] for t in v.data["tasks"]][-2:] == ["t-19", "last"]  # the rowid order

    # The predictor writes reasons and predictions without moving updated_at: compared and patched.
    rota("retry", "t-7", "--force", "--spec", spec, check=True)
    store = SqliteStore(sd)
    try:
        store.set_forecast([("t-7", "waits for a GPU", 2e9, 2e9 + 60), ("last", None, 2e9 + 60, 2e9 + 61)])
    finally:
        store.close()
    table.forecast_s = 0.0
    v = table.read()
    t7 = v.by_name["t-7"]
    assert (t7["reason"], t7["predicted_start_s"], t7["predicted_end_s"]) == ("waits for a GPU", 2e9, 2e9 + 60)
    assert v.data == read_status(sd)

    # A row removed (a live edit drops a pending task): the rows no longer add up, all read again.
    store = SqliteStore(sd)
    try:
        assert store.remove_pending(["t-7"]) == ["t-7"]
    finally:
        store.close()
    v = table.read()
    assert v.full and v.data == read_status(sd) and "t-7" not in v.by_name
