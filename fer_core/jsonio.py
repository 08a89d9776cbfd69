"""Strict JSON for every file fer-sweep writes: no bare ``NaN`` / ``Infinity`` (they are not JSON).

Python's ``json`` writes ``NaN`` for a float NaN by default, which ``JSON.parse``, ``jq`` and most
other readers refuse. Non-finite numbers are written as ``null`` instead (a missing value), and
anything else that is not JSON (a path, a numpy scalar) as its string form.

    >>> dumps({"loss": float("nan"), "acc": 0.5})
    '{"loss": null, "acc": 0.5}'
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps", "finite_or_none", "clean"]


def finite_or_none(value: Any) -> Any:
    """``value`` itself, or None when it is a non-finite float."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def clean(obj: Any) -> Any:
    """``obj`` with every non-finite float (nested in dicts, lists, tuples) replaced by None."""
    if isinstance(obj, float):
        return finite_or_none(obj)
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", None) == 0:  # numpy / torch scalar
        return clean(obj.item())
    return obj


def dumps(obj: Any, *, indent: int | None = None) -> str:
    """Strict JSON text of ``obj`` (non-finite floats as null, other non-JSON values as strings)."""
    return json.dumps(clean(obj), indent=indent, default=str, allow_nan=False)
