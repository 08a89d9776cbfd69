"""Losses for the trainer, one registry, every setting a sweepable keyword argument.

Registered losses (``list_losses()``):

- ``ce``: cross-entropy with label smoothing and class weights (torch's ``cross_entropy``).
- ``focal``: focal loss for label-smoothed targets, as Keras' ``CategoricalFocalCrossentropy``;
  ``gamma=0, alpha=1`` is exactly ``ce``.

Both are ``nn.Module``\\ s called as ``loss_fn(logits, target)`` with logits (N, K) float and target
(N,) int64, returning the batch mean. Label smoothing is ``(1 - eps) * onehot + eps / K`` and class
weights follow torch's ``CrossEntropyLoss(weight=...)`` (normalized by the target classes' weights);
see ``cross_entropy.py`` for the conventions.

Example::

    from fer_core.losses import class_weights_from_counts, create_loss
    w = class_weights_from_counts(train_counts)          # or mode=None for no weights
    loss_fn = create_loss("focal", num_classes=4, gamma=2.0, alpha=0.25,
                          label_smoothing=0.1, class_weight=w)
"""

from ._registry import create_loss, is_loss, list_losses, register_loss
from .cross_entropy import CrossEntropy, class_weights_from_counts, weighted_sampler_weights
from .focal import FocalLoss

__all__ = [
    "register_loss",
    "create_loss",
    "list_losses",
    "is_loss",
    "class_weights_from_counts",
    "weighted_sampler_weights",
    "CrossEntropy",
    "FocalLoss",
]
