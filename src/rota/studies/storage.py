"""Where sweep studies are stored and how their failures surface: Optuna's RDB storage on
SQLite, ``<state_dir>/optuna.db``. The only module that imports Optuna itself
(:func:`import_optuna`), so a missing install is one clear error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import warnings
from collections.abc import Iterator
from typing import Any

from rota.errors import RotaError

DB_NAME = "optuna.db"
INSTALL_HINT = "sweeps need Optuna: pip install 'rota[sweep]'"


def import_optuna() -> Any:
    """Import Optuna quietly, or raise RotaError saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise RotaError(INSTALL_HINT) from None
    optuna.logging.set_verbosity(logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


@contextlib.contextmanager
def storage_errors(state_dir: str) -> Iterator[None]:
    """Turn Optuna/SQLAlchemy storage failures into what the engine understands.

    A SQLite error underneath (disk full, read-only) is re-raised as the
    ``sqlite3.OperationalError`` itself, so the engine stops cleanly with its
    "nothing is lost" StateError; anything else becomes a StateError naming
    ``optuna.db``.
    """
    try:
        yield
    except RotaError:
        raise
    except Exception as e:
        optuna = import_optuna()
        import sqlalchemy.exc

        if not isinstance(e, optuna.exceptions.StorageInternalError | sqlalchemy.exc.SQLAlchemyError):
            raise
        cause: BaseException | None = e
        while cause is not None:
            if isinstance(cause, sqlite3.OperationalError):
                raise cause from None
            cause = getattr(cause, "orig", None) or cause.__cause__ or cause.__context__
        from rota.errors import StateError

        raise StateError(f"sweep studies in {os.path.join(state_dir, DB_NAME)}: {e}") from None


def storage_url(state_dir: str | os.PathLike[str]) -> str:
    return f"sqlite:///{os.path.join(os.fspath(state_dir), DB_NAME)}"


def open_storage(state_dir: str | os.PathLike[str], *, readonly: bool = False) -> Any:
    """The RDB storage in ``state_dir``. ``readonly`` skips table creation (for reports)."""
    optuna = import_optuna()
    return optuna.storages.RDBStorage(
        storage_url(state_dir),
        engine_kwargs={"connect_args": {"timeout": 60}},
        skip_table_creation=readonly,
        skip_compatibility_check=readonly,
    )
