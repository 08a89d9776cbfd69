"""Checks of plain values - an integer, a number within bounds - that raise an error naming the key.

The one owner of the checks the trainer's config, its optimizer and schedule, augmentation, the
losses and models, and the sweep's search space and collapse rule make of their settings. Each
caller keeps its own error class and wording:

- ``template``: the message, with ``{key}``, ``{rule}`` and ``{value!r}`` (the value as given);
  ``prefix`` goes before it (a file and key path, say), unformatted;
- ``rule``: the requirement the message states; without one, the requirement that failed is named
  ("a finite number", "an integer", ">= 0", "< 1.0"), or with ``one_rule=True`` the whole
  requirement, whichever part failed ("a finite number in [0, 1)", "an integer >= 1").

    >>> check_number(0.5, "lr", low=0.0, low_open=True)
    0.5
    >>> check_int(0, "epochs", low=1, template=KEY)       # raises ValueError("epochs: must be >= 1; got 0")
"""

from __future__ import annotations

import math
from numbers import Integral, Real

__all__ = ["check_number", "check_int", "is_real", "is_int", "interval", "ARG", "KEY", "ARG_SEMI"]

#: ``ValueError`` style of functions and classes: ``lr must be a finite number in (0, inf), got -1``.
ARG = "{key} must be {rule}, got {value!r}"
#: Config key style (``ConfigError``): ``lr: must be > 0.0; got -1``.
KEY = "{key}: must be {rule}; got {value!r}"
#: ``dropout_scale must be a finite number >= 0; got -1``.
ARG_SEMI = "{key} must be {rule}; got {value!r}"


def is_real(value, kind=Real) -> bool:
    """A number of ``kind`` (``numbers.Real``: Python and numpy ints and floats), not a bool."""
    return isinstance(value, kind) and not isinstance(value, bool)


def is_int(value, kind=Integral) -> bool:
    """An integer of ``kind`` (``numbers.Integral``: numpy ints too; ``int``: Python's only), not a bool."""
    return isinstance(value, kind) and not isinstance(value, bool)


def interval(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False) -> str:
    """``[0, 1]``, ``(0, inf)``: an interval as a rule's text."""
    return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open or high == math.inf else ']'}"


def _error(error: type[Exception], prefix: str, template: str, key: str, rule: str, value) -> Exception:
    return error(prefix + template.format(key=key, rule=rule, value=value))


def check_number(
    value,
    key: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
    kind=Real,
    error: type[Exception] = ValueError,
    template: str = ARG,
    rule: str | None = None,
    one_rule: bool = False,
    prefix: str = "",
    quote_float: bool = False,
) -> float:
    """``value`` as a float, or ``error`` unless it is a number (of ``kind``; ``finite`` unless told
    otherwise) within the bounds; NaN is never within bounds. ``quote_float``: an error about a bound
    quotes the value as a float (``2.0``, not ``2``)."""
    if one_rule and rule is None:
        rule = (
            ("a finite number" if finite else "a number")
            + " in "
            + interval(
                -math.inf if low is None else low,
                math.inf if high is None else high,
                low_open=low_open,
                high_open=high_open,
            )
        )
    if not is_real(value, kind) or (finite and not math.isfinite(value)):
        raise _error(error, prefix, template, key, rule or ("a finite number" if finite else "a number"), value)
    v = float(value)
    quoted = v if quote_float else value
    if low is not None and not (v > low if low_open else v >= low):
        raise _error(error, prefix, template, key, rule or f"{'>' if low_open else '>='} {low}", quoted)
    if high is not None and not (v < high if high_open else v <= high):
        raise _error(error, prefix, template, key, rule or f"{'<' if high_open else '<='} {high}", quoted)
    return v


def check_int(
    value,
    key: str,
    *,
    low: int | None = None,
    kind=Integral,
    whole_floats: bool = False,
    error: type[Exception] = ValueError,
    template: str = ARG,
    rule: str | None = None,
    one_rule: bool = False,
    prefix: str = "",
) -> int:
    """``value`` as an int, or ``error`` unless it is an integer (of ``kind``) >= ``low``.

    ``whole_floats``: a float with an integer value (``3.0``) counts as that integer (and is what an
    error then shows).
    """
    if one_rule and rule is None:
        rule = "an integer" + ("" if low is None else f" >= {low}")
    if whole_floats and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not is_int(value, kind):
        raise _error(error, prefix, template, key, rule or "an integer", value)
    if low is not None and value < low:
        raise _error(error, prefix, template, key, rule or f">= {low}", value)
    return int(value)
