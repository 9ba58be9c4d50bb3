"""The records made once per task in big plans keep their hand-written ``__init__``
exactly in step with their dataclass fields: same parameters, defaults, frozen."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from rota.core.policy import Candidate
from rota.core.resources import Placement, Request
from rota.plan.simulate import Slot

RECORDS = [
    (Placement, ("t", (0, 1), (5, 6), 2, 7)),
    (Candidate, ("t", Request(gpus=1), 3, 1.5, 9.0, 4)),
    (Slot, ("t", 1.0, 2.0, (0,), (5,), 2, 7)),
]


@pytest.mark.parametrize("cls,args", RECORDS)
def test_init_matches_the_fields(cls, args):
    fields = dataclasses.fields(cls)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert [p.name for p in params] == [f.name for f in fields]
    assert [p.default for p in params] == [
        inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default for f in fields]
    obj = cls(*args)
    assert tuple(getattr(obj, f.name) for f in fields) == args
    assert obj == cls(**{f.name: a for f, a in zip(fields, args, strict=True)}) and hash(obj) == hash(cls(*args))
    assert dataclasses.replace(obj) == obj and repr(obj).startswith(f"{cls.__name__}(")
    with pytest.raises(dataclasses.FrozenInstanceError):
        obj.cpus = 0  # type: ignore[misc]
