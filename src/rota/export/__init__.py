"""Exports of a state folder to other tools (``rota export``): MLflow (:mod:`rota.export.mlflow`).
Each reads the state read-only and imports its tool only when called."""
