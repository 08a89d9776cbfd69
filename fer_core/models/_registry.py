"""The model registry, and the small contract every registered model follows.

The registry is a plain module-level dict filled by the ``@register_model`` decorator (as in timm).
A builder is a function ``name(pretrained=False, **kwargs) -> nn.Module``; ``create_model`` looks it
up by name, drops ``None`` kwargs (None means "the model's own default", so a CLI or sweep can pass
every knob it has) and calls it.

    >>> from fer_core.models import create_model, list_models
    >>> list_models("fer_cnn_b*")
    ['fer_cnn_b', 'fer_cnn_bplus', 'fer_cnn_bplusplus']
    >>> model = create_model("resnet18", num_classes=7, in_chans=1, dropout=None)   # dropout: default

Every registered model has the same head API, so a trainer never asks which one it has:
``forward_features(x)``, ``forward_head(x, pre_logits=False)``, ``forward(x)``, ``get_classifier()``,
``reset_classifier(num_classes)``, the attributes ``num_classes``, ``in_chans`` and
``num_features``, and ``l2_parameters(scope)`` (from ``FerModelMixin`` below) for a Keras-style
coupled L2 penalty. Inputs are float (N, C, H, W), already normalized: no model normalizes.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, cast

from torch import nn

from ..errors import FerError
from ..validate import ARG_SEMI, check_number

__all__ = [
    "ModelError",
    "register_model",
    "create_model",
    "list_models",
    "is_model",
    "model_entrypoint",
    "build_model_with_cfg",
    "FerModelMixin",
    "get_act_layer",
    "scaled_rate",
    "L2_SCOPES",
]

_model_entrypoints: dict[str, Callable[..., nn.Module]] = {}
_M = TypeVar("_M", bound=nn.Module)


class ModelError(FerError, ValueError):
    """A model name, argument or weights file that cannot be used; the message says which and why."""


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder function under its own name and return it unchanged.

    Re-registering the same function (a module reload) replaces the entry; a different function
    under a name that is taken is an error, so two model files cannot silently shadow each other.
    """
    name = fn.__name__
    old = _model_entrypoints.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
        raise ModelError(
            f"model name {name!r} is already registered by {old.__module__}.{old.__qualname__}; "
            f"rename {fn.__module__}.{fn.__qualname__}"
        )
    _model_entrypoints[name] = fn
    module = sys.modules.get(fn.__module__)
    if module is not None and hasattr(module, "__all__") and name not in module.__all__:
        module.__all__.append(name)
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (fnmatch), sorted."""
    return sorted(n for n in _model_entrypoints if fnmatch.fnmatchcase(n, pattern))


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    return name in _model_entrypoints


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The builder function registered as ``name``; an unknown name lists the registered ones."""
    try:
        return _model_entrypoints[name]
    except KeyError:
        close = difflib.get_close_matches(name, _model_entrypoints, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ModelError(f"unknown model {name!r}{hint}; registered models: {', '.join(list_models())}") from None


def create_model(model_name: str, pretrained: bool | None = False, **kwargs) -> nn.Module:
    """Build a registered model by name.

    Args:
        model_name: a name from ``list_models()``.
        pretrained: load pretrained weights; only the ``tv_*`` backbones have any, and only from a
            local ``weights_path`` (nothing is ever downloaded). True for any other model is an error.
        **kwargs: constructor arguments (``num_classes``, ``in_chans``, ``dropout_scale``, and the
            model's own ones). A kwarg whose value is None is dropped, so the model's default applies.

    Raises:
        ModelError (a ValueError): unknown model name (the message lists the registered names),
            an argument the model does not take (named, with the model), or bad weights.
    """
    fn = model_entrypoint(model_name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return fn(pretrained=bool(pretrained), **kwargs)


def _init_arg_names(model_cls: type) -> set[str]:
    params = inspect.signature(model_cls).parameters.values()
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def build_model_with_cfg(
    model_cls: type[_M],
    model_name: str,
    kwargs: dict,
    *,
    pretrained: bool = False,
    fixed: dict | None = None,
    defaults: dict | None = None,
) -> _M:
    """Instantiate ``model_cls`` for the builder ``model_name``, checking every argument first.

    ``fixed`` are the arguments that define the named model (a ResNet-34's block and layer counts)
    and cannot be overridden; ``defaults`` are the named model's settings that a caller may override
    (a preset's dropout rates). An argument ``model_cls`` does not take is an error naming it and the
    model, and so is ``pretrained=True`` for a class without pretrained weights.
    """
    fixed, defaults = fixed or {}, defaults or {}
    accepted = _init_arg_names(model_cls)
    clash = sorted(set(kwargs) & set(fixed))
    if clash:
        raise ModelError(
            f"{model_name}: argument(s) {', '.join(clash)} are fixed by this model "
            f"({', '.join(f'{k}={fixed[k]!r}' for k in clash)}); pick another model name"
        )
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ModelError(
            f"{model_name}: unknown argument(s) {', '.join(unknown)}; it accepts: "
            f"{', '.join(sorted(accepted - set(fixed) - {'pretrained'}))}"
        )
    args = {**defaults, **kwargs, **fixed}
    if "pretrained" in accepted:
        args["pretrained"] = pretrained
    elif pretrained:
        raise ModelError(
            f"{model_name} has no pretrained weights; train it from scratch "
            "(pretrained=False) or use a tv_* backbone with weights_path"
        )
    return model_cls(**args)


# --------------------------------------------------------------------------------------------
# Helpers shared by the model files
# --------------------------------------------------------------------------------------------

_ACT_LAYERS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "mish": nn.Mish}


def get_act_layer(name: str) -> type[nn.Module]:
    """The activation class for ``name`` ("relu" or "mish")."""
    try:
        return _ACT_LAYERS[name]
    except (KeyError, TypeError):
        raise ModelError(f"act must be one of {', '.join(_ACT_LAYERS)}; got {name!r}") from None


def scaled_rate(rate: float, dropout_scale: float) -> float:
    """A dropout rate times the global ``dropout_scale``, clamped to [0, 0.95].

    ``dropout_scale`` is the sweep knob over a model's dropout rates: 0 turns dropout off, 1 keeps
    the model's rates; it must be a finite number >= 0.
    """
    check_number(
        dropout_scale, "dropout_scale", low=0, error=ModelError, template=ARG_SEMI, rule="a finite number >= 0"
    )
    if not 0.0 <= rate < 1.0:
        raise ModelError(f"dropout rates must be in [0, 1); got {rate!r}")
    return min(max(rate * dropout_scale, 0.0), 0.95)


L2_SCOPES = ("all", "all_but_classifier", "dense")


class FerModelMixin:
    """What every registered model adds to ``nn.Module``: the Keras-style L2 parameter list."""

    if TYPE_CHECKING:  # the head API, which the model defines

        def get_classifier(self) -> nn.Module: ...

    def l2_parameters(self, scope: str = "all") -> list:
        """The "kernel" weights a Keras-style coupled L2 penalty applies to.

        Kernels are the weights of ``nn.Conv2d`` and ``nn.Linear`` layers: never biases, never
        BatchNorm parameters. Frozen weights (``requires_grad=False``) are left out. The trainer adds
        ``l2 * sum(w.pow(2).sum() for w in model.l2_parameters(scope))`` to the loss, which is what a
        Keras ``kernel_regularizer=l2(l2)`` does (no factor 1/2).

        Args:
            scope: "all" - every kernel; "all_but_classifier" - every kernel except the final
                classifier's (the notebook's B+, B++ and D); "dense" - only ``nn.Linear`` kernels,
                classifier included (the notebook's Model C).
        """
        if scope not in L2_SCOPES:
            raise ModelError(f"l2 scope must be one of {', '.join(L2_SCOPES)}; got {scope!r}")
        skip = {id(p) for p in self.get_classifier().parameters()} if scope == "all_but_classifier" else set()
        kinds = (nn.Linear,) if scope == "dense" else (nn.Conv2d, nn.Linear)
        return [
            m.weight
            for m in cast(nn.Module, self).modules()
            if isinstance(m, kinds) and m.weight.requires_grad and id(m.weight) not in skip
        ]
