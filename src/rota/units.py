"""Parse sizes and durations with the usual units.

Sizes: ``30GB``, ``30 GiB``, ``512M``, ``1.5TB``, ``100B`` (bytes). A size needs a
unit: a bare number (``24``, ``--gpus 2x24``) is refused, since it almost always
means GB and would book bytes; only ``0`` stands alone (it is zero in any unit).
Decimal (GB) and binary (GiB) prefixes are both accepted; ``G``/``GB`` mean
10**9 except for GPU sizes, where vendors say "80GB" for 80 GiB-ish cards:
rota treats ``GB`` as 2**30 everywhere, which matches ``nvidia-smi`` MiB figures
and how ML users speak of GPU memory.

Durations: ``45m``, ``2h``, ``1h30m``, ``90s``, ``1d``, ``00:30:00``, a bare
number is seconds.
"""

from __future__ import annotations

import math
import re

_SIZE_UNITS = {
    "": 1,  # only for 0: parse_size refuses any other bare number
    "b": 1,
    "k": 2**10, "kb": 2**10, "kib": 2**10,
    "m": 2**20, "mb": 2**20, "mib": 2**20,
    "g": 2**30, "gb": 2**30, "gib": 2**30,
    "t": 2**40, "tb": 2**40, "tib": 2**40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_DUR_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|d|h|m|s)")
_DUR_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}

MAX_SIZE_BYTES = 2**60
MAX_DURATION_S = 10 * 365 * 86400.0


def parse_size(value: object) -> int:
    """Return a size in bytes; raise ValueError with a helpful message.

    A unit is required (``30GB``, ``512MB``, ``100B``); ``0`` alone is allowed.
    Messages quote ``value`` exactly as given.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as '30GB', found {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0 or value > MAX_SIZE_BYTES:
            raise ValueError(f"expected a size such as '30GB' (between 0 and 1EB), found {value!r}")
        if value == 0:
            return 0
        raise ValueError(_no_unit(value))
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as '30GB', found {type(value).__name__}")
    m = _SIZE_RE.match(value)
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as '30GB', '512MB' or '1.5TiB', found {value!r}")
    number = float(m.group(1))
    if not m.group(2) and number != 0:
        raise ValueError(_no_unit(value))
    number *= _SIZE_UNITS[m.group(2).lower()]
    if number > MAX_SIZE_BYTES:
        raise ValueError(f"size {value!r} is too large (at most 1EB)")
    return int(number)


def _no_unit(value: object) -> str:
    text = value.strip() if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)
    return (f"a size needs a unit, found {value!r}; write e.g. '{text}GB' "
            f"(or '{text}B' if you mean bytes)")


def parse_duration(value: object) -> float:
    """Return a duration in seconds; raise ValueError with a helpful message."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '45m', found {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0 or value > MAX_DURATION_S:
            raise ValueError(f"expected a duration between 0 and 10 years, found {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as '45m', found {type(value).__name__}")
    text = value.strip().lower()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return parse_duration(float(text))
    if re.fullmatch(r"([0-9]+:)?[0-9]+:[0-9]+(\.[0-9]+)?", text):
        total = 0.0
        for part in text.split(":"):
            total = total * 60 + float(part)
        return parse_duration(total)
    compact = text.replace(" ", "")
    pos, total = 0, 0.0
    for m in _DUR_PART.finditer(compact):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DUR_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(compact) or not compact:
        raise ValueError(f"expected a duration such as '45m', '2h', '1h30m' or '00:30:00', found {value!r}")
    return parse_duration(total)


def format_size(n_bytes: int | float) -> str:
    """Human form, binary units, as users write them (``30GB``)."""
    n = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f}{unit}" if unit == "B" or n == int(n) else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TB"


def format_duration(seconds: float | None) -> str:
    """``1h02m``, ``3m05s``, ``12s``; ``-`` for unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    if s >= 86400:
        return f"{s // 86400}d{(s % 86400) // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
