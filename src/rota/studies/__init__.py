"""Sweep studies as stored: Optuna's database in the state folder (:mod:`.storage`) and how rota
names studies and tags their trials (:mod:`.names`).

Below the engine, which runs sweeps (:mod:`rota.engine.sweep`), and the plan and report layers,
which only read them, so neither of those imports the engine. Imports only :mod:`rota.errors`
(and Optuna, lazily, through :func:`rota.studies.storage.import_optuna`).
"""
