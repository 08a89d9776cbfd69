"""Focal loss (``focal``) for soft, label-smoothed targets, with scalar or per-class alpha."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_loss
from .cross_entropy import (
    check_inputs,
    check_label_smoothing,
    check_num_classes,
    is_real,
    per_class_tensor,
    smooth_targets,
)


@register_loss("focal")
class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017, https://arxiv.org/abs/1708.02002) generalized to soft targets.

    The paper's ``FL = -alpha_t * (1 - p_t)^gamma * log p_t`` down-weights classes the model already
    predicts well: ``(1 - p)^gamma`` is near 0 for an easy, confident example. With soft targets
    (label smoothing) every class contributes, each with its own factor:

        ``loss_i = -sum_k alpha_k * y_ik * (1 - p_ik)^gamma * log p_ik``

    where ``p_ik = softmax(logits_i)_k`` and ``y_ik = (1 - eps) * [k == target_i] + eps / K``. This
    is Keras' ``CategoricalFocalCrossentropy(alpha, gamma, label_smoothing)`` (and the
    capstone notebook's own ``FocalLoss`` for Model B++: gamma 2.0, alpha 0.25, label smoothing
    0.1), which also multiplies a scalar alpha into every class term, and averages over the batch.
    The batch loss is the mean over samples; with class weights ``w`` (multiplied in like alpha),
    ``sum_i sum_k w_k * (per-class term)_ik / sum_i w_{target_i}``, the convention of torch's
    ``CrossEntropyLoss(weight=...)``. So gamma=0, alpha=1 is exactly the ``ce`` loss.

    Numerics: ``log p`` comes from ``log_softmax`` (no clipping, unlike Keras' clip to [1e-7,
    1 - 1e-7]; half-precision logits are computed in float32), ``1 - p`` from ``-expm1(log p)``,
    floored at the smallest normal float so that ``(1 - p)^gamma`` keeps a finite gradient for
    0 < gamma < 1 when p rounds to 1. Huge logits give a finite loss and finite gradients.

    Pitfall: a scalar alpha only rescales the loss (0.25 makes it 4x smaller than with alpha=1).
    With Adam that barely changes the updates, but it does change the balance against an L2 penalty
    added to the loss (the Keras notebook's ``kernel_regularizer``), making L2 relatively 4x stronger.

    Args:
        num_classes: K; when given, per-class ``alpha`` / ``class_weight`` and the logits are checked
            against it.
        gamma: focusing strength >= 0; 0 turns the focal factor off (Keras / paper default 2.0).
        alpha: a float >= 0 applied to every class (default 0.25: Keras' default, from the paper's
            sigmoid setting, where it weighs the positives), or one float >= 0 per class.
        label_smoothing: eps in [0, 1), spread uniformly over the K classes.
        class_weight: one positive float per class, multiplied into each class term; the batch mean
            is normalized by the target classes' weights (see above).
    """

    alpha: torch.Tensor  # buffers (register_buffer), typed for the checker
    class_weight: torch.Tensor | None

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | torch.Tensor = 0.25,
        label_smoothing: float = 0.0,
        class_weight: Sequence[float] | torch.Tensor | None = None,
    ):
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        if not is_real(gamma) or not 0.0 <= float(gamma) < float("inf"):
            raise ValueError(f"gamma must be a finite float >= 0, got {gamma!r}")
        self.gamma = float(gamma)
        if is_real(alpha):
            alpha_f = float(cast(float, alpha))
            if not 0.0 <= alpha_f < float("inf"):
                raise ValueError(f"alpha must be a finite float >= 0 (or one per class), got {alpha!r}")
            alpha_t = torch.tensor(alpha_f)
        else:
            alpha_t = per_class_tensor(
                cast("Sequence[float] | torch.Tensor", alpha), "alpha", self.num_classes, allow_zero=True
            )
        self.label_smoothing = check_label_smoothing(label_smoothing)
        cw = (
            None
            if class_weight is None
            else per_class_tensor(class_weight, "class_weight", self.num_classes, allow_zero=False)
        )
        self.register_buffer("alpha", alpha_t, persistent=False)
        self.register_buffer("class_weight", cw, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        k = check_inputs(logits, target, self.num_classes, "focal")
        for name, t in (("alpha", self.alpha), ("class_weight", self.class_weight)):
            if t is not None and t.ndim == 1 and t.numel() != k:
                raise ValueError(f"focal: logits have {k} classes but {name} has {t.numel()}")
        # Half-precision logits are computed in float32; float64 stays float64.
        log_p = F.log_softmax(logits, dim=1, dtype=torch.promote_types(logits.dtype, torch.float32))
        one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)
        y = smooth_targets(target, k, self.label_smoothing, log_p.dtype)
        scale = self.alpha.to(log_p.dtype)  # scalar or (K,)
        if self.class_weight is not None:
            scale = scale * self.class_weight.to(log_p.dtype)
        terms = scale * y * one_minus_p.pow(self.gamma) * -log_p  # (N, K)
        if self.class_weight is None:
            return terms.sum() / logits.shape[0]
        return terms.sum() / self.class_weight.to(log_p.dtype)[target].sum()

    def extra_repr(self) -> str:
        alpha = self.alpha.item() if self.alpha.ndim == 0 else [round(v, 4) for v in self.alpha.tolist()]
        cw = None if self.class_weight is None else [round(v, 4) for v in self.class_weight.tolist()]
        return (
            f"num_classes={self.num_classes}, gamma={self.gamma}, alpha={alpha}, "
            f"label_smoothing={self.label_smoothing}, class_weight={cw}"
        )
