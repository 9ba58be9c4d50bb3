"""A sweep's ``parallel:`` gate computes its caps once per pass of questions (``begin_gating``):
caps cached by one pass (the predictor's reasons) must not answer the next (the launch after a
trial ended), or a ``parallel: 1`` study's next trial stays pending for good (the HPO example hung)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rota.core.resources import Machine, Placement
from rota.engine import runstate_attempt as RA
from rota.engine.loop import Engine
from rota.executors.local import LocalExecutor
from rota.spec.load import load_spec
from rota.store.sqlite import SqliteStore
from tests.helpers import write_spec

pytest.importorskip("optuna")


def test_caps_follow_the_run_after_begin_gating(tmp_path: Path) -> None:
    from rota.engine.sweep import SweepHook

    spec = load_spec(str(write_spec(tmp_path, """
        tasks:
          - name: hpo
            command: echo ROTA_METRIC loss={x}
            sweep:
              trials: 3
              metric: loss
              parallel: 1
              params:
                x: {type: float, low: 0.0, high: 1.0}
    """)))
    (tmp_path / ".rota").mkdir()
    store = SqliteStore(tmp_path / ".rota")
    hook = SweepHook(spec, str(tmp_path / ".rota"))
    eng = Engine(spec, Machine((), 4, 2**34), store, LocalExecutor(), hooks=[hook])
    eng._sync()  # the real sync: every slot pending and ready
    first, second = (eng.live[f"hpo-trial-{i}"] for i in (0, 1))
    assert first.task.name in eng.ready and second.task.name in eng.ready

    now = time.time()
    eng._apply([RA.placed(first, Placement(first.task.name, (), (), 1, 0), attempt=1, attempt_id=1, now=now,
                         deadline=None, log_path=str(tmp_path / "a.log"), out=str(tmp_path / "o"), params=None)])
    hook.begin_gating(eng)
    assert not hook.may_launch(eng, second)  # trial 0 runs: parallel 1 is used up

    eng._apply([RA.ended(first, RA.End("succeeded", 0, "", now + 1), retry_delay_s=0.0, interrupting=False)])
    assert first.task.name not in eng.running
    assert not hook.may_launch(eng, second)  # the same pass: its caps stand (what went wrong)
    hook.begin_gating(eng)
    assert hook.may_launch(eng, second)  # a new pass sees the free slot
    store.close()
