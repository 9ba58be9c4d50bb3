"""Sizes and durations: re-exported from :mod:`rota.units`, the neutral module every layer shares
(kept importable here for code that imported ``rota.spec.units``)."""

from rota.units import (
    MAX_DURATION_S,
    MAX_SIZE_BYTES,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

__all__ = ["MAX_DURATION_S", "MAX_SIZE_BYTES", "format_duration", "format_size", "parse_duration", "parse_size"]
