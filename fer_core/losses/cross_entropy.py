"""Cross-entropy with label smoothing and class weights (``ce``), plus the helpers every loss shares:
argument checks, smoothed targets and class weights from counts.

Conventions shared by all losses in this package:

- **Label smoothing** spreads ``eps`` uniformly over all K classes (the target class included):
  ``y_smooth = (1 - eps) * onehot + eps / K``. This is both torch's ``label_smoothing`` and Keras'
  ``CategoricalCrossentropy(label_smoothing=...)`` (they are the same rule), so eps = 0.1 with K = 4
  gives targets 0.925 / 0.025. eps must be in [0, 1).
- **Class weights** ``w`` (one positive float per class) follow torch's ``CrossEntropyLoss(weight=...)``:
  each class-k term of the loss is multiplied by ``w_k``, and the batch mean divides by the sum of
  the weights of the samples' target classes, not by N:
  ``loss = sum_i sum_k w_k * term_ik / sum_i w_{target_i}``.
  Without label smoothing this is ``sum_i w_i l_i / sum_i w_i`` (a weighted average of per-sample
  losses), so the loss scale does not depend on the weights. Without weights it is the plain mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn

from ..validate import check_int
from ._registry import register_loss

# ---------------------------------------------------------------------------------------------
# Argument checks (ValueError quoting the value and the rule)


def is_real(value) -> bool:
    """A plain number (int, float, numpy or 0-d tensor), not a bool or a string."""
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not value.dtype.is_complex and value.dtype != torch.bool
    return isinstance(value, Real) and not isinstance(value, bool)


def check_label_smoothing(value: float) -> float:
    """``value`` as a float, or ``ValueError`` unless 0 <= value < 1."""
    if not is_real(value) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {value!r}")
    return float(value)


def check_num_classes(value: int | None) -> int | None:
    """``value`` as an int (or None: taken from the logits), or ``ValueError`` unless it is >= 2."""
    if value is None:
        return None
    return check_int(value, "num_classes", low=2, one_rule=True)


def per_class_tensor(
    values: Sequence[float] | torch.Tensor, what: str, num_classes: int | None, *, allow_zero: bool
) -> torch.Tensor:
    """One finite float per class as a 1-D float32 tensor, or ``ValueError`` naming ``what``.

    Entries must be > 0 (``allow_zero=False``) or >= 0; the length must equal ``num_classes`` when
    that is known.
    """
    try:
        t = torch.as_tensor(values, dtype=torch.float32).detach().clone().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{what} must be a sequence of one float per class, got {values!r}") from None
    shown = [round(v, 6) for v in t.flatten().tolist()]
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError(f"{what} must be a sequence of one float per class, got {shown!r}")
    if num_classes is not None and t.numel() != num_classes:
        raise ValueError(f"{what} must have num_classes={num_classes} entries, got {t.numel()}: {shown!r}")
    bad = ~torch.isfinite(t) | (t < 0 if allow_zero else t <= 0)
    if bad.any():
        rule = "finite and >= 0" if allow_zero else "finite and > 0"
        idx = bad.nonzero().flatten().tolist()
        raise ValueError(f"{what} entries must be {rule}; class index(es) {idx} have {[shown[i] for i in idx]}")
    return t


def check_inputs(logits: torch.Tensor, target: torch.Tensor, num_classes: int | None, loss: str) -> int:
    """Check shapes and dtypes of a loss call; return K (the number of classes in ``logits``)."""
    if logits.ndim != 2 or not logits.is_floating_point():
        raise ValueError(
            f"{loss}: logits must be a float tensor of shape (N, K), got {logits.dtype} {tuple(logits.shape)}"
        )
    if target.dtype != torch.int64 or target.shape != logits.shape[:1]:
        raise ValueError(
            f"{loss}: target must be an int64 tensor of shape ({logits.shape[0]},), "
            f"got {target.dtype} {tuple(target.shape)}"
        )
    k = logits.shape[1]
    if num_classes is not None and k != num_classes:
        raise ValueError(f"{loss}: logits have {k} classes, but the loss was built for {num_classes}")
    return k


def smooth_targets(target: torch.Tensor, num_classes: int, label_smoothing: float, dtype: torch.dtype) -> torch.Tensor:
    """Soft targets (N, K): ``(1 - eps) * onehot(target) + eps / K``."""
    onehot = F.one_hot(target, num_classes).to(dtype)
    return onehot * (1.0 - label_smoothing) + label_smoothing / num_classes


# ---------------------------------------------------------------------------------------------
# Class weights for imbalanced data: either weight the loss, or rebalance the sampler


def class_weights_from_counts(
    counts: Sequence[int] | torch.Tensor, mode: str | None = "balanced"
) -> torch.Tensor | None:
    """Per-class loss weights from the training set's class counts.

    ``mode="balanced"``: ``w_c = n / (K * n_c)`` (n samples, K classes, n_c samples of class c), as
    sklearn's ``compute_class_weight("balanced")``: every class then carries the same total weight,
    and a balanced data set gets weights of 1. ``mode=None``: no weights (returns None).

    A class with no samples would get an infinite weight: that raises ``ValueError`` naming the
    class index (drop the class, or fix the split). From a data set's manifest:
    ``class_weights_from_counts([m["counts"]["train"][c] for c in m["classes"]])``, which equals
    the manifest's own ``class_weights``.
    """
    if mode is None:
        return None
    if mode != "balanced":
        raise ValueError(f"class weight mode must be 'balanced' or None, got {mode!r}")
    try:
        c = torch.as_tensor(counts, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError):
        c = torch.empty(0)
    if c.numel() < 2 or (c < 0).any():
        raise ValueError(f"counts must be a sequence of >= 2 per-class counts >= 0 in class order, got {counts!r}")
    absent = (c == 0).nonzero().flatten().tolist()
    if absent:
        raise ValueError(
            f"class index(es) {absent} have no samples: 'balanced' weights need every "
            f"class present (counts {c.long().tolist()})"
        )
    return (c.sum() / (c.numel() * c)).float()


def weighted_sampler_weights(labels: Sequence[int] | torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-sample weights ``1 / count[label]`` for ``torch.utils.data.WeightedRandomSampler``.

    Every class then has the same total weight, so sampling with replacement draws classes
    equally often on average. Use either this or class weights in the loss, not both::

        w = weighted_sampler_weights(train_labels, num_classes=4)
        sampler = WeightedRandomSampler(w, num_samples=len(w), replacement=True)
    """
    y = torch.as_tensor(labels).flatten()
    if y.is_floating_point() or (y.numel() and (y.min() < 0 or y.max() >= num_classes)):
        raise ValueError(f"labels must be integers in [0, {num_classes}), got values {sorted(set(y.tolist()))[:10]}")
    counts = torch.bincount(y.long(), minlength=num_classes).double()
    return 1.0 / counts[y.long()]


# ---------------------------------------------------------------------------------------------


@register_loss("ce")
class CrossEntropy(nn.Module):
    """Cross-entropy with label smoothing and optional class weights (torch's convention exactly).

    In words: the loss of a sample is minus the sum over classes of its smoothed target times the
    log of the predicted probability, ``l_i = -sum_k y_ik * log p_ik`` with
    ``y_ik = (1 - eps) * [k == target_i] + eps / K``; the batch loss is the mean over samples, or,
    with class weights, ``sum_i sum_k w_k * y_ik * (-log p_ik) / sum_i w_{target_i}``.
    Computed by ``torch.nn.functional.cross_entropy(weight=..., label_smoothing=...)``.

    Args:
        num_classes: K; when given, ``class_weight`` and the logits are checked against it.
        label_smoothing: eps in [0, 1); 0 is plain cross-entropy (Model B+ used 0.1).
        class_weight: one positive float per class (e.g. ``class_weights_from_counts(counts)``).
    """

    class_weight: torch.Tensor | None  # buffers (register_buffer), typed for the checker

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        class_weight: Sequence[float] | torch.Tensor | None = None,
    ):
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        self.label_smoothing = check_label_smoothing(label_smoothing)
        cw = (
            None
            if class_weight is None
            else per_class_tensor(class_weight, "class_weight", self.num_classes, allow_zero=False)
        )
        self.register_buffer("class_weight", cw, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        k = check_inputs(logits, target, self.num_classes, "ce")
        weight = self.class_weight
        if weight is not None:
            if weight.numel() != k:
                raise ValueError(f"ce: logits have {k} classes but class_weight has {weight.numel()}")
            weight = weight.to(logits.dtype)
        return F.cross_entropy(logits, target, weight=weight, label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        cw = None if self.class_weight is None else [round(v, 4) for v in self.class_weight.tolist()]
        return f"num_classes={self.num_classes}, label_smoothing={self.label_smoothing}, class_weight={cw}"
