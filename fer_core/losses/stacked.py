"""Several trials' losses in one call: K loss modules of this package over stacked logits (packed trials).

    >>> loss_k = stacked_loss([trial_a.loss_fn, trial_b.loss_fn])   # None if one is not ce or focal
    >>> losses = loss_k(logits, target)                             # (K, N, C), (K, N) -> (K,)

Each trial keeps its own settings: its loss (``ce`` or ``focal``), focal ``gamma`` and ``alpha`` (one value
or one per class), label smoothing and class weights. Every one is the focal formula of ``focal.py``
(``ce`` is focal with ``gamma=0, alpha=1``, as that module says):

    loss_k = sum_i sum_c alpha_kc w_kc y_kic (1 - p_kic)^gamma_k (-log p_kic) / sum_i w_k,target_ki

with ``w_k`` the trial's class weights (ones without), so the K batch means take the same few kernels
as one. It computes what each module computes, up to float rounding (``ce`` goes through
``F.cross_entropy``, which sums in another order; a float exponent of 2 may be a square there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .cross_entropy import CrossEntropy, check_inputs
from .focal import FocalLoss

__all__ = ["stacked_loss"]

StackedLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def stacked_loss(losses: Sequence[nn.Module]) -> StackedLoss | None:
    """One function computing every loss of ``losses`` (``CrossEntropy`` or ``FocalLoss``, any settings) on
    logits ``(K, N, C)`` and targets ``(K, N)``: the ``(K,)`` batch losses. None when one of them is another
    kind of loss (compute those one by one)."""
    if not losses or not all(type(m) in (CrossEntropy, FocalLoss) for m in losses):
        return None
    modules = cast("list[CrossEntropy | FocalLoss]", list(losses))
    classes: set[int] = {m.num_classes for m in modules if m.num_classes is not None}
    if len(classes) > 1:
        raise ValueError(f"stacked losses must share num_classes; got {sorted(classes)}")
    params: dict[tuple[torch.device, torch.dtype, int], tuple[torch.Tensor, ...]] = {}

    def settings(device: torch.device, dtype: torch.dtype, k: int) -> tuple[torch.Tensor, ...]:
        key = (device, dtype, k)
        if key not in params:
            gamma, scale, weight, eps = [], [], [], []
            for m in modules:
                w = m.class_weight if m.class_weight is not None else torch.ones(k)
                if w.numel() != k:
                    raise ValueError(f"stacked losses: logits have {k} classes but a class_weight has {w.numel()}")
                w = w.to(device, dtype)
                alpha = m.alpha.to(device, dtype) if isinstance(m, FocalLoss) else torch.ones((), device=device)
                gamma.append(m.gamma if isinstance(m, FocalLoss) else 0.0)
                scale.append((alpha * w).expand(k))
                weight.append(w)
                eps.append(m.label_smoothing)
            params[key] = (
                torch.tensor(gamma, device=device, dtype=dtype).view(-1, 1, 1),
                torch.stack(scale).unsqueeze(1),  # (K, 1, C)
                torch.stack(weight),  # (K, C)
                torch.tensor(eps, device=device, dtype=dtype).view(-1, 1, 1),
            )
        return params[key]

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 3 or target.shape != logits.shape[:2] or logits.shape[0] != len(modules):
            raise ValueError(
                f"stacked losses: logits must be ({len(modules)}, N, C) and target ({len(modules)}, N); got "
                f"{tuple(logits.shape)} and {tuple(target.shape)}"
            )
        k = check_inputs(logits[0], target[0], next(iter(classes), None), "stacked")
        log_p = F.log_softmax(logits, dim=2, dtype=torch.promote_types(logits.dtype, torch.float32))
        gamma, scale, weight, eps = settings(log_p.device, log_p.dtype, k)
        one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)
        y = F.one_hot(target, k).to(log_p.dtype) * (1.0 - eps) + eps / k
        terms = scale * y * one_minus_p.pow(gamma) * -log_p  # (K, N, C)
        return terms.sum(dim=(1, 2)) / weight.gather(1, target).sum(dim=1)

    return loss
