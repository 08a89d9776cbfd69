"""Numbers as text: the one owner of how a metric, a score or a duration is written in tables, pages and logs.

    >>> fmt(0.61234), fmt(None), fmt(float("nan"), nonfinite="-"), fmt(3e-4, 3, spec="g")
    ('0.6123', '-', '-', '0.0003')
    >>> fmt(2, strict=True), fmt("x", strict=True), pct(0.612), duration(3725)
    ('2.0000', '-', '61.20%', '1 h 02 min')

``fmt`` writes floats with ``digits`` (``spec`` "f" or "g"), ``None`` as ``missing`` and any other
value as ``str`` (an int as itself); its keywords keep the few variants the callers had:
``nonfinite`` (NaN/inf as this text instead of Python's ``nan``/``inf``), ``strict`` (only finite
numbers, ints included, are written; anything else is ``missing``) and ``compact_below`` (a float
smaller than this in magnitude, or not finite, is written ``.3g``: ``1e-05`` rather than ``0.0000``).
"""

from __future__ import annotations

import math

__all__ = ["fmt", "pct", "duration", "is_finite"]


def is_finite(v) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt(
    v,
    digits: int = 4,
    *,
    spec: str = "f",
    missing: str = "-",
    nonfinite: str | None = None,
    strict: bool = False,
    compact_below: float | None = None,
) -> str:
    """``v`` as text (see the module docstring)."""
    if strict:
        return f"{v:.{digits}{spec}}" if is_finite(v) else missing
    if v is None:
        return missing
    if not isinstance(v, float):
        return str(v)
    if compact_below is not None and not (math.isfinite(v) and abs(v) >= compact_below):
        return f"{v:.3g}"
    if nonfinite is not None and not math.isfinite(v):
        return nonfinite
    return f"{v:.{digits}{spec}}"


def pct(v, digits: int = 2, *, sign: bool = False, missing: str = "-") -> str:
    """A fraction as a percentage (``0.612`` -> ``61.20%``; ``sign``: ``+61.2%``); ``None`` is ``missing``."""
    if v is None:
        return missing
    return f"{100 * v:{'+' if sign else ''}.{digits}f}%"


def duration(seconds) -> str:
    """``12.3 s``, ``4 min 05 s`` or ``1 h 02 min``; ``-`` for anything that is not a finite number."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
