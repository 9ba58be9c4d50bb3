"""Sweep pieces without a controller: search-space checks, grids, slot naming, ROTA_REPORT reading."""

from __future__ import annotations

import pytest

from rota.engine.sweep_prune import ReportReader
from rota.engine.sweep_space import check_param, grid_values
from rota.errors import SpecError
from rota.spec.model import ParamSpec, SweepSpec, Task
from rota.studies.names import study_name


@pytest.mark.parametrize(("p", "why"), [
    (ParamSpec.model_construct(type="float", low=0.0, high=1.0), None),
    (ParamSpec.model_construct(type="float", low=1e-5, high=1e-1, log=True), None),
    (ParamSpec.model_construct(type="int", low=1, high=9, step=2), None),
    (ParamSpec.model_construct(type="categorical", choices=["a", 1, True]), None),
    (ParamSpec.model_construct(type="categorical"), "needs 'choices'"),
    (ParamSpec.model_construct(type="float", low=0.0), "needs 'low' and 'high'"),
    (ParamSpec.model_construct(type="float", low=2.0, high=1.0), "above high"),
    (ParamSpec.model_construct(type="float", low=0.0, high=1.0, log=True), "low > 0"),
    (ParamSpec.model_construct(type="float", low=0.1, high=1.0, log=True, step=0.1), "cannot be combined"),
    (ParamSpec.model_construct(type="int", low=0.5, high=3), "whole-number"),
    (ParamSpec.model_construct(type="float", low=0.0, high=1.0, step=-1), "step must be > 0"),
])
def test_check_param(p, why):
    got = check_param("x", p)
    assert (got is None) if why is None else (why in (got or ""))


def test_grid_values():
    sw = SweepSpec(trials=4, metric="m", sampler="grid", params={
        "a": ParamSpec(type="int", low=1, high=7, step=3),
        "b": ParamSpec(type="float", low=0.0, high=0.5, step=0.25),
        "c": ParamSpec(type="categorical", choices=["x", "y"]),
    })
    assert grid_values(sw, file=None, task=None) == {"a": [1, 4, 7], "b": [0.0, 0.25, 0.5], "c": ["x", "y"]}
    no_step = {"f": ParamSpec(type="float", low=0, high=1)}
    with pytest.raises(ValueError, match="grid needs 'step'"):  # the spec model refuses it first
        SweepSpec(trials=1, metric="m", sampler="grid", params=no_step)
    bad = SweepSpec.model_construct(trials=1, metric="m", sampler="grid", params=no_step)  # unvalidated
    with pytest.raises(SpecError, match="step"):
        grid_values(bad, file="rota.yaml", task="t")


def test_study_name():
    assert study_name(Task(name="hpo-xgb-trial-12", command="x", trial=12)) == "hpo-xgb"
    assert study_name(Task(name="a-trial-1-trial-3", command="x", trial=3)) == "a-trial-1"


def test_report_reader_reads_only_complete_new_lines(tmp_path):
    log = tmp_path / "a.log"
    r = ReportReader()
    assert r.new_reports("k", str(log)) == []  # no log yet
    log.write_bytes(b"hello\nROTA_REPORT step=0 value=0.5\nROTA_REPORT step=1 value=na")
    assert r.new_reports("k", str(log)) == [(0, 0.5)]
    with log.open("ab") as f:
        f.write(b"n\nROTA_REPORT step=2 value=inf\nROTA_REPORT  step=3 value=-1e-3 \nROTA_REPORT step=x value=1\n")
    assert r.new_reports("k", str(log)) == [(3, -0.001)]
    assert r.new_reports("k", str(log)) == []
    r.forget("k")
    assert r.new_reports("k", str(log)) == [(0, 0.5), (3, -0.001)]


def test_invalid_search_space_is_refused_when_the_spec_loads():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="low > 0"):
        ParamSpec(type="float", low=0.0, high=1.0, log=True)
