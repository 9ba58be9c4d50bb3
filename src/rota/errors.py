"""One exception tree for rota.

Every error a user can cause derives from :class:`RotaError`; the CLI prints its
message on one line and exits with :attr:`RotaError.exit_code`. Messages say
what was expected, what was found, and how to fix it.
"""

from __future__ import annotations


class RotaError(Exception):
    """Base of every error rota raises on purpose."""

    exit_code: int = 1


class SpecError(RotaError):
    """The spec file is invalid. Nothing was started, no state was written."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        task: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.file = file
        self.task = task
        self.field = field
        self.line = line
        self.detail = message
        where = []
        if file:
            where.append(f"{file}:{line}" if line else file)
        if task:
            where.append(f"task {task!r}")
        if field:
            where.append(f"field {field!r}")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class UsageError(RotaError):
    """A bad command-line value (e.g. ``--gpus 4xBANANA``)."""

    exit_code = 2


class MachineError(RotaError):
    """The machine cannot be described (bad --gpus, NVML trouble)."""

    exit_code = 2


class StateError(RotaError):
    """The state folder is unusable: locked by another controller, corrupt, foreign."""

    exit_code = 2


class StateLockedError(StateError):
    """Another controller holds the state folder."""


class NoControllerError(RotaError):
    """``rota stop``: no controller is running on the state folder (nothing to stop)."""

    exit_code = 1


class ExecutorError(RotaError):
    """A backend (local, SLURM, Ray) failed to submit, poll or cancel."""

    exit_code = 1


class ReportError(RotaError):
    """A report or chart cannot be built or written (bad input, missing optional package)."""

    exit_code = 1
