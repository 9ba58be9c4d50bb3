"""Student t distribution without scipy: CDF and its inverse.

Built on the regularized incomplete beta function (continued fraction,
modified Lentz). Used for confidence intervals in reports; scipy is only a
test dependency that checks these figures.
"""

from __future__ import annotations

import math

from rota.report.model import ReportError


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            return h
    raise ReportError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")  # pragma: no cover


def betainc(a: float, b: float, x: float, y: float | None = None) -> float:
    """Regularized incomplete beta ``I_x(a, b)`` for ``a, b > 0`` and ``0 <= x <= 1``.

    ``y`` may pass ``1 - x`` computed without cancellation (for ``x`` near 1).
    """
    y = 1.0 - x if y is None else y
    if not (a > 0 and b > 0 and 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise ReportError(f"betainc needs a, b > 0 and 0 <= x <= 1, found a={a}, b={b}, x={x}")
    if x == 0.0 or y == 0.0:
        return 0.0 if x == 0.0 else 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, y) / b


def _t_sf(t: float, df: float) -> float:
    """Upper tail ``P(T > t)`` for ``t >= 0``, without cancellation."""
    if math.isinf(t):
        return 0.0
    if t * t <= df:
        denom = df + t * t
        x, y = df / denom, t * t / denom
    else:  # no overflow of t * t for huge t
        r2 = (math.sqrt(df) / t) ** 2
        x, y = r2 / (1.0 + r2), 1.0 / (1.0 + r2)
    return 0.5 * betainc(df / 2.0, 0.5, x, y)


def t_cdf(t: float, df: float) -> float:
    """Student t cumulative distribution function with ``df > 0`` degrees of freedom."""
    t, df = float(t), float(df)
    if not df > 0:
        raise ReportError(f"degrees of freedom must be > 0, found {df}")
    tail = _t_sf(abs(t), df)
    return 1.0 - tail if t > 0 else tail


def _t_pdf(t: float, df: float) -> float:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(t * t / df))


def _t_center(t: float, df: float) -> float:
    """``P(0 < T < t)`` for ``t >= 0``, accurate for small ``t`` (no ``0.5 - tail``)."""
    if t * t <= df:
        denom = df + t * t
        y, x = t * t / denom, df / denom
    else:
        r2 = (math.sqrt(df) / t) ** 2
        y, x = 1.0 / (1.0 + r2), r2 / (1.0 + r2)
    return 0.5 * betainc(0.5, df / 2.0, y, x)


def _solve(target: float, df: float, center: bool) -> float:
    """The ``t > 0`` with ``_t_center(t) == target`` (``center``) or ``_t_sf(t) == target``.

    Newton steps on the log of the function (well behaved in the far tail too),
    kept inside a bisection bracket; relative tolerance 1e-14.
    """
    fn = _t_center if center else _t_sf
    sign = 1.0 if center else -1.0  # center grows with t, the tail shrinks

    def beyond(value: float) -> bool:  # is the root below t?
        return value > target if center else value < target

    lo, hi = 0.0, 1.0
    while not beyond(fn(hi, df)):
        lo, hi = hi, hi * 2.0
        if hi > 1e300:
            return math.inf
    t = 0.5 * (lo + hi) if lo > 0 else min(hi, target / _t_pdf(0.0, df) if center else 1.0)
    log_target = math.log(target)
    for _ in range(400):
        value = fn(t, df)
        if beyond(value):
            hi = t
        else:
            lo = t
        nxt = math.nan
        if value > 0:
            slope = sign * _t_pdf(t, df) / value
            if slope != 0:
                nxt = t - (math.log(value) - log_target) / slope
        if not lo < nxt < hi:
            nxt = math.sqrt(lo * hi) if lo > 0 and hi / lo > 4 else 0.5 * (lo + hi)
        if abs(nxt - t) <= 1e-14 * abs(t) or nxt == t:
            return nxt
        t = nxt
    return t  # pragma: no cover


def t_ppf(p: float, df: float) -> float:
    """Inverse Student t CDF: the ``t`` with ``t_cdf(t, df) == p``, for ``0 < p < 1``.

    Solves on the central part ``P(0 < T < t) = |p - 0.5|`` for ``0.25 <= p <= 0.75``
    and on the smaller tail otherwise, so no precision is lost to ``1 - p``;
    closed forms for ``df`` 1 and 2. Relative error about 1e-12 for ``df >= 1``
    up to 1e5 (1e-8 at 1e6, from ``lgamma`` cancellation) and ``p`` down to 1e-100.
    """
    p, df = float(p), float(df)
    if not 0.0 < p < 1.0:
        raise ReportError(f"t_ppf needs 0 < p < 1, found {p}")
    if not df > 0:
        raise ReportError(f"degrees of freedom must be > 0, found {df}")
    if p == 0.5:
        return 0.0
    sign = 1.0 if p > 0.5 else -1.0
    q = 1.0 - p if p > 0.5 else p  # exact (Sterbenz)
    if df == 1:
        return sign * math.tan(math.pi * (0.5 - q)) if q > 0.25 else sign / math.tan(math.pi * q)
    if df == 2:
        return sign * (1.0 - 2.0 * q) / math.sqrt(2.0 * q * (1.0 - q))
    if q > 0.25:
        return sign * _solve(abs(p - 0.5), df, center=True)
    return sign * _solve(q, df, center=False)
