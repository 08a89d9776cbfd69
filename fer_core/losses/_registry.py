"""The loss registry: a module-level dict of name -> loss class, filled by ``@register_loss``.

``create_loss(name, **kwargs)`` is the one way the trainer and the sweeps build a loss, so a sweep
knob is just a keyword argument: ``create_loss("focal", gamma=2.0, label_smoothing=0.1)``.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable

from torch import nn

_LOSSES: dict[str, type[nn.Module]] = {}


def register_loss(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make the loss available to ``create_loss(name, ...)``.

    A name can be registered once; registering it again raises ``ValueError``.
    """

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _LOSSES:
            raise ValueError(f"loss {name!r} is already registered (by {_LOSSES[name].__qualname__})")
        _LOSSES[name] = cls
        return cls

    return decorate


def list_losses(pattern: str = "*") -> list[str]:
    """Registered loss names matching a shell-style ``pattern`` (``"*"``: all), sorted."""
    return sorted(n for n in _LOSSES if fnmatch.fnmatchcase(n, pattern))


def is_loss(name: str) -> bool:
    """Whether ``name`` is a registered loss."""
    return name in _LOSSES


def create_loss(name: str, **kwargs) -> nn.Module:
    """Build the loss registered as ``name`` with ``kwargs``.

    Keyword arguments that are ``None`` are dropped, so a sweep or CLI default of ``None`` means
    "the loss's own default". Raises ``ValueError`` for an unknown name (listing the registered
    ones), for an argument the loss does not take (naming it and the loss, and listing what it
    takes), and, from the loss itself, for an invalid value (quoting it and the rule).

    Example::

        loss_fn = create_loss("focal", num_classes=4, gamma=2.0, alpha=0.25, label_smoothing=0.1)
        loss = loss_fn(logits, target)   # logits (N, K) float, target (N,) int64
    """
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; registered losses: {', '.join(list_losses())}")
    cls = _LOSSES[name]
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    accepted = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"loss {name!r} got unknown argument(s) {', '.join(map(repr, unknown))}; it takes: {', '.join(accepted)}"
        )
    return cls(**kwargs)
