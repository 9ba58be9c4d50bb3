"""Study names and resume seeds of sweeps (rota.studies.names): pure functions."""

from __future__ import annotations

from rota.studies.names import (
    base_of,
    generation_of,
    group_studies,
    next_study_name,
    resumed_seed,
    trial_ref,
)


def test_resumed_seed_is_the_seed_for_a_new_study_and_differs_at_every_resume_point():
    assert resumed_seed(7, 0) == 7
    seeds = [resumed_seed(7, n) for n in range(1, 2000)]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**32 for s in seeds)
    assert seeds == [resumed_seed(7, n) for n in range(1, 2000)]  # deterministic
    assert resumed_seed(8, 3) != resumed_seed(7, 3)


def test_study_names_by_generation():
    assert next_study_name("hpo", 0, set()) == "hpo"
    assert next_study_name("hpo", 1, {"hpo"}) == "hpo@2"
    assert next_study_name("hpo", 1, {"hpo", "hpo@2"}) == "hpo@3"  # a name another sweep took
    assert base_of("hpo@2", ["hpo"]) == "hpo" and base_of("hpo@2", ["hpo@2", "hpo"]) == "hpo@2"
    assert base_of("other@2", ["hpo"]) is None
    assert generation_of("hpo", ["hpo"]) == 1 and generation_of("hpo@12", ["hpo"]) == 12


def test_group_studies_reads_attributes_and_older_studies():
    studies = [
        ("hpo", {}),  # made by an older rota: generation 1 of 'hpo'
        ("hpo@2", {"rota_sweep": "hpo", "rota_generation": 2}),
        ("hpo@3", {}),  # a controller killed right after creating it, before its attributes
        ("lr@x", {}),  # a sweep whose own name has an '@'
        ("b@2", {"rota_sweep": "b@2", "rota_generation": 1}),  # sweep 'b@2', not a study of 'b'
        ("b", {"rota_sweep": "b", "rota_generation": 1}),
    ]
    assert group_studies(studies) == {
        "hpo": [(1, "hpo"), (2, "hpo@2"), (3, "hpo@3")],
        "lr@x": [(1, "lr@x")],
        "b@2": [(1, "b@2")],
        "b": [(1, "b")],
    }


def test_trial_ref_of_stored_params():
    assert trial_ref({"_optuna_trial": 3, "_optuna_study": "hpo@2", "x": 1.0}, "hpo", "_optuna_trial") == ("hpo@2", 3)
    assert trial_ref({"_optuna_trial": 3}, "hpo", "_optuna_trial") == ("hpo", 3)  # stored by an older rota
    assert trial_ref(None, "hpo", "_optuna_trial") is None
    assert trial_ref({"x": 1}, "hpo", "_optuna_trial") is None
