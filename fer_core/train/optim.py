"""Optimizers and learning-rate schedules for the trainer, with the Keras notebook's semantics.

Two functions of the training loop, each chosen by a string and configured by keyword-only
settings (so a sweep can pass them straight through):

- ``create_optimizer(model, name="adam" | "adamw" | "sgd", lr=..., ...)``
- ``LRSchedule(optimizer, name="constant" | "cosine" | "step" | "plateau", epochs=..., steps_per_epoch=...)``

Two kinds of L2, named apart on purpose:

- ``l2`` (the trainer's setting, not this module's): the Keras ``kernel_regularizer`` penalty
  ``l2 * sum(w**2)`` added to the loss. With Adam it is *coupled*: its gradient goes through Adam's
  per-parameter scaling. This is what the notebook's models used.
- ``weight_decay`` (here): *decoupled* decay, ``w -= lr * weight_decay * w`` applied outside Adam's
  scaling (AdamW, Loshchilov & Hutter 2019, https://arxiv.org/abs/1711.05101). Only ``"adamw"`` and
  ``"sgd"`` take it; ``"adam"`` with ``weight_decay > 0`` is refused, so that nobody gets torch
  Adam's coupled L2 thinking it is AdamW (or the trainer's ``l2`` twice).

Example::

    opt = create_optimizer(model, name="adam", lr=5e-4)                  # notebook B+ / B++
    sched = LRSchedule(opt, name="cosine", epochs=75, steps_per_epoch=len(train_loader),
                       cosine_alpha=0.02)
    for epoch in range(75):
        for x, y in train_loader:
            loss = loss_fn(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
            sched.step_batch()                        # after every optimizer step
        sched.step_epoch({"val_loss": val_loss, "val_accuracy": val_acc})   # after every epoch
    checkpoint = {"optimizer": opt.state_dict(), "schedule": sched.state_dict(), ...}
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from ..validate import check_int, check_number

__all__ = ["OPTIMIZERS", "SCHEDULES", "create_optimizer", "match_state_layout", "LRSchedule"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step", "plateau")
PLATEAU_MODES = ("min", "max")

#: Keras ReduceLROnPlateau defaults kept fixed here (the notebook never changed them).
PLATEAU_MIN_DELTA = 1e-4
PLATEAU_COOLDOWN = 0

# Substrings of a monitored metric's name that imply its direction (checked in this order).
_MIN_WORDS = ("loss",)
_MAX_WORDS = ("acc", "f1", "auc", "precision", "recall")


# ---------------------------------------------------------------------------------------------
# Argument checks (ValueError quoting the value and the rule)
# ---------------------------------------------------------------------------------------------


def _choice(what: str, value, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(map(repr, choices))}")
    return value


# ---------------------------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------------------------


def _trainable(params_or_model) -> list[torch.Tensor]:
    """The trainable parameters of a module, or of a flat iterable of tensors, without duplicates."""
    params: list[torch.Tensor]
    if isinstance(params_or_model, nn.Module):
        params = list(params_or_model.parameters())
    elif isinstance(params_or_model, torch.Tensor):
        params = [params_or_model]
    else:
        try:
            params = list(params_or_model)
        except TypeError:
            raise ValueError(
                f"params_or_model must be an nn.Module or an iterable of parameters, "
                f"got {type(params_or_model).__name__}"
            ) from None
        bad = [type(p).__name__ for p in params if not isinstance(p, torch.Tensor)]
        if bad:
            raise ValueError(
                "params_or_model must be an nn.Module or a flat iterable of parameter tensors "
                f"(param-group dicts are built here); got items of type {sorted(set(bad))}"
            )
    seen: set[int] = set()
    out: list[torch.Tensor] = []
    for p in params:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    if not out:
        raise ValueError("create_optimizer: no trainable parameters (all have requires_grad=False, or none given)")
    return out


def create_optimizer(
    params_or_model,
    *,
    name: str = "adam",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = True,
    eps: float = 1e-7,
    betas: tuple[float, float] = (0.9, 0.999),
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """A torch optimizer over the trainable parameters of ``params_or_model``, chosen by name.

    - ``"adam"``: ``torch.optim.Adam(lr, betas, eps)``, the notebook's ``keras.optimizers.Adam``.
      ``weight_decay > 0`` raises ``ValueError``: the coupled L2 of Keras' ``kernel_regularizer`` is
      the trainer's ``l2`` setting, and decoupled decay is ``"adamw"``.
    - ``"adamw"``: ``torch.optim.AdamW`` with two param groups: weights (>= 2-D: conv kernels,
      dense matrices) decay by ``weight_decay``; biases and normalization scales/shifts (1-D and
      scalar parameters) do not (standard practice: decaying them only hurts). Both groups share
      ``lr``; with ``weight_decay=0`` it is Adam with AdamW's update rule.
    - ``"sgd"``: ``torch.optim.SGD(lr, momentum, nesterov, weight_decay)``, one group. Its
      ``weight_decay`` is torch's: *coupled* L2 (``weight_decay * w`` added to the gradient, before
      momentum), applied to every parameter, biases included.

    Keras note: Keras' Adam adds ``epsilon`` to ``sqrt(v)`` before bias correction, torch after
    (Keras' eps is torch's ``eps / sqrt(1 - beta2**t)``); with eps 1e-7 the two differ only in the
    first few hundred steps and only where ``sqrt(v_hat)`` is below ~1e-6.

    Args:
        params_or_model: an ``nn.Module`` or a flat iterable of parameter tensors; parameters with
            ``requires_grad=False`` are left out.
        name: one of ``OPTIMIZERS``.
        lr: base learning rate > 0 (an ``LRSchedule`` scales it per step).
        weight_decay: decoupled decay for ``"adamw"``, coupled L2 for ``"sgd"``; >= 0.
        momentum: SGD momentum in [0, 1); ignored by Adam/AdamW (see ``betas``).
        nesterov: SGD Nesterov momentum (needs ``momentum > 0``); ignored by Adam/AdamW.
        eps: Adam/AdamW epsilon > 0; 1e-7 is Keras' default (torch's is 1e-8). Ignored by SGD.
        betas: Adam/AdamW ``(beta1, beta2)``, each in [0, 1). Ignored by SGD.
        fused: torch's fused implementation (one kernel for all parameters; the trainer asks for it on
            CUDA); None is torch's default (foreach on CUDA, a loop over the parameters on CPU).
    """
    name = _choice("optimizer", name, OPTIMIZERS)
    lr = check_number(lr, "lr", low=0.0, low_open=True, one_rule=True)
    weight_decay = check_number(weight_decay, "weight_decay", low=0.0, one_rule=True)
    momentum = check_number(momentum, "momentum", low=0.0, high=1.0, high_open=True, one_rule=True)
    eps = check_number(eps, "eps", low=0.0, low_open=True, one_rule=True)
    if not isinstance(nesterov, bool):
        raise ValueError(f"nesterov must be True or False, got {nesterov!r}")
    if fused is not None and not isinstance(fused, bool):
        raise ValueError(f"fused must be True, False or None, got {fused!r}")
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
    betas = (
        check_number(b1, "betas[0]", low=0.0, high=1.0, high_open=True, one_rule=True),
        check_number(b2, "betas[1]", low=0.0, high=1.0, high_open=True, one_rule=True),
    )
    params = _trainable(params_or_model)

    if name == "adam":
        if weight_decay > 0:
            raise ValueError(
                f"optimizer 'adam' does not take weight_decay (got {weight_decay!r}): the coupled L2 penalty "
                "of Keras' kernel_regularizer is the trainer's `l2` setting; for decoupled weight decay "
                "use name='adamw'"
            )
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, fused=fused)
    if name == "adamw":
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [
            g
            for g in (dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0))
            if g["params"]
        ]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused)
    if nesterov and momentum == 0:
        raise ValueError("optimizer 'sgd' with nesterov=True needs momentum > 0, got momentum=0.0")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, fused=fused)


# ---------------------------------------------------------------------------------------------
# Learning-rate schedule
# ---------------------------------------------------------------------------------------------


def match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor (Adam's moments, SGD's momentum) its parameter's memory layout.

    A checkpoint keeps the layout its run had: ``train()``'s parameters are channels_last, a packed trial's are
    contiguous slices of the pack's stacked tensors. Resumed the other way, the fused CUDA kernels refuse
    tensors whose strides differ from their parameter's ("same dtype, device, and layout"); the CPU ones don't."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if not state:
                continue
            for key, value in list(state.items()):
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def infer_plateau_mode(monitor: str) -> str:
    """ "min" for a loss-like metric name, "max" for an accuracy-like one; ``ValueError`` otherwise.

    Keras' ``mode="auto"`` treats every name without "acc" as "min" (so "val_f1" would be
    minimized); here an unrecognized name must get an explicit mode instead.
    """
    low = monitor.lower()
    if any(w in low for w in _MIN_WORDS):
        return "min"
    if any(w in low for w in _MAX_WORDS):
        return "max"
    raise ValueError(
        f"cannot infer whether plateau_monitor {monitor!r} should go down or up; pass plateau_mode='min' or 'max'"
    )


class LRSchedule:
    """Per-step learning-rate schedule with linear warmup; call step_batch() after each optimizer step
    and step_epoch(metrics) after each epoch.

    The rule, for optimizer step ``k`` (0-based; the lr in the param groups is always the one the
    *next* ``optimizer.step()`` uses) and completed epochs ``e``:

    - warmup: the first ``W = round(warmup_epochs * steps_per_epoch)`` steps use
      ``schedule_lr * (k + 1) / W`` (a linear ramp reaching the schedule's lr at step ``W - 1``).
    - ``"constant"``: ``lr``.
    - ``"cosine"``: Keras ``CosineDecay(lr, decay_steps=D, alpha)`` per step, measured from the end
      of warmup: ``s = min(k - W, D)``, ``lr * ((1 - alpha) * 0.5 * (1 + cos(pi * s / D)) + alpha)``,
      with ``D = epochs * steps_per_epoch - W``; so ``lr`` at the first step after warmup,
      ``lr * (alpha + (1 - alpha) / 2)`` halfway and ``lr * alpha`` from step ``W + D`` on.
    - ``"step"``: ``lr * step_gamma ** (e // step_size)``, changing at epoch boundaries; epochs are
      counted from the start of training (as torch's ``StepLR``), so a warmup overlaps the first ones.
    - ``"plateau"``: Keras ``ReduceLROnPlateau(monitor, factor, patience, min_lr)`` with its defaults
      ``min_delta=1e-4`` (absolute) and ``cooldown=0``: after each epoch, the metric improves if it
      beats the best so far by more than ``min_delta`` (lower for mode "min", higher for "max");
      after ``patience`` epochs in a row without improvement the lr becomes
      ``max(lr * factor, min_lr)`` (only if it is still above ``min_lr``) and the count restarts.
      A NaN metric never improves (so it counts towards the patience); a missing one raises
      ``ValueError``. Every epoch counts, warmup epochs included; the warmup ramp multiplies the
      plateau's lr.

    The lr is written into each param group directly (no torch scheduler chain): every group gets
    ``group["initial_lr"] * (lr_0 / initial_lr_0)``, i.e. one scale relative to each group's initial
    lr (``initial_lr`` is set from ``group["lr"]`` when missing, as torch schedulers do), so groups
    with different base lrs keep their ratio. ``state_dict()`` is a few counters, and
    ``load_state_dict`` on a freshly built schedule continues with exactly the same lrs.

    Args:
        optimizer: the torch optimizer whose param groups are driven.
        name: one of ``SCHEDULES``.
        epochs: planned training length in epochs (>= 1); sets the cosine's decay length.
        steps_per_epoch: optimizer steps per epoch (>= 1), usually ``len(train_loader)``.
        warmup_epochs: linear warmup length in epochs (>= 0, fractions allowed), rounded to steps.
        cosine_alpha: ``"cosine"``: final lr as a fraction of the base lr, in [0, 1].
        step_size: ``"step"``: epochs between decays (>= 1).
        step_gamma: ``"step"``: multiplier per decay, in (0, 1].
        plateau_factor: ``"plateau"``: multiplier per reduction, in (0, 1) (Keras refuses >= 1).
        plateau_patience: ``"plateau"``: epochs without improvement before a reduction (>= 0).
        plateau_min_lr: ``"plateau"``: floor of the (first group's) lr, >= 0.
        plateau_monitor: ``"plateau"``: the key of ``step_epoch``'s metrics to watch.
        plateau_mode: ``"min"``, ``"max"`` or None to infer it from ``plateau_monitor`` ("loss" ->
            min; "acc", "f1", "auc", "precision", "recall" -> max; anything else must be given).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        name: str = "constant",
        epochs: int,
        steps_per_epoch: int,
        warmup_epochs: float = 0.0,
        cosine_alpha: float = 0.0,
        step_size: int = 10,
        step_gamma: float = 0.1,
        plateau_factor: float = 0.5,
        plateau_patience: int = 5,
        plateau_min_lr: float = 1e-6,
        plateau_monitor: str = "val_loss",
        plateau_mode: str | None = None,
    ):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.name = _choice("schedule", name, SCHEDULES)
        self.epochs = check_int(epochs, "epochs", low=1, one_rule=True)
        self.steps_per_epoch = check_int(steps_per_epoch, "steps_per_epoch", low=1, one_rule=True)
        self.warmup_epochs = check_number(warmup_epochs, "warmup_epochs", low=0.0, one_rule=True)
        self.total_steps = self.epochs * self.steps_per_epoch
        self.warmup_steps = int(round(self.warmup_epochs * self.steps_per_epoch))
        if self.warmup_steps > self.total_steps or (self.name == "cosine" and self.warmup_steps == self.total_steps):
            raise ValueError(
                f"warmup_epochs={warmup_epochs!r} ({self.warmup_steps} steps) must be shorter than "
                f"training ({self.epochs} epochs = {self.total_steps} steps)"
            )
        self.decay_steps = self.total_steps - self.warmup_steps
        self.cosine_alpha = check_number(cosine_alpha, "cosine_alpha", low=0.0, high=1.0, one_rule=True)
        self.step_size = check_int(step_size, "step_size", low=1, one_rule=True)
        self.step_gamma = check_number(step_gamma, "step_gamma", low=0.0, high=1.0, low_open=True, one_rule=True)
        self.plateau_factor = check_number(
            plateau_factor, "plateau_factor", low=0.0, high=1.0, low_open=True, high_open=True, one_rule=True
        )
        self.plateau_patience = check_int(plateau_patience, "plateau_patience", low=0, one_rule=True)
        self.plateau_min_lr = check_number(plateau_min_lr, "plateau_min_lr", low=0.0, one_rule=True)
        if not isinstance(plateau_monitor, str) or not plateau_monitor:
            raise ValueError(f"plateau_monitor must be a metric name, got {plateau_monitor!r}")
        self.plateau_monitor = plateau_monitor
        if plateau_mode is not None:
            _choice("plateau_mode", plateau_mode, PLATEAU_MODES)
        elif self.name == "plateau":
            plateau_mode = infer_plateau_mode(plateau_monitor)
        self.plateau_mode = plateau_mode

        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lr = float(optimizer.param_groups[0]["initial_lr"])
        if not self.base_lr > 0:
            raise ValueError(f"the first param group's initial_lr must be > 0, got {self.base_lr!r}")

        # Mutable state: everything state_dict() saves.
        self.step_count = 0  # optimizer steps taken (step_batch calls)
        self.epoch = 0  # epochs completed (step_epoch calls)
        self.plateau_lr = self.base_lr  # ReduceLROnPlateau's current lr (first group)
        self.best = math.inf if self.plateau_mode == "min" else -math.inf
        self.wait = 0
        self._apply()

    # --- the rule ------------------------------------------------------------------------------

    def _schedule_lr(self) -> float:
        """The first group's lr after warmup, before the warmup factor."""
        if self.name == "constant":
            return self.base_lr
        if self.name == "cosine":
            s = min(max(self.step_count - self.warmup_steps, 0), self.decay_steps)
            cosine = 0.5 * (1.0 + math.cos(math.pi * s / self.decay_steps))
            return self.base_lr * ((1.0 - self.cosine_alpha) * cosine + self.cosine_alpha)
        if self.name == "step":
            return self.base_lr * self.step_gamma ** (self.epoch // self.step_size)
        return self.plateau_lr

    def _current_lr(self) -> float:
        lr = self._schedule_lr()
        if self.step_count < self.warmup_steps:
            lr = lr * (self.step_count + 1) / self.warmup_steps
        return lr

    def _apply(self) -> None:
        lr0 = self._current_lr()
        for group in self.optimizer.param_groups:
            ratio = group["initial_lr"] / self.base_lr
            group["lr"] = lr0 if ratio == 1.0 else lr0 * ratio

    # --- the training loop's calls -------------------------------------------------------------

    def step_batch(self) -> None:
        """Advance by one optimizer step (call right after ``optimizer.step()``)."""
        self.step_count += 1
        self._apply()

    def step_epoch(self, metrics: Mapping[str, float] | None = None) -> None:
        """Close an epoch; ``"plateau"`` reads ``metrics[plateau_monitor]``, the others ignore metrics."""
        if self.name == "plateau":
            self._plateau_update(metrics)
        self.epoch += 1
        self._apply()

    def _plateau_update(self, metrics: Mapping[str, float] | None) -> None:
        if metrics is None or self.plateau_monitor not in metrics:
            available = sorted(metrics) if metrics is not None else []
            raise ValueError(
                f"plateau schedule monitors {self.plateau_monitor!r}, which is not among the epoch's "
                f"metrics {available}"
            )
        value = metrics[self.plateau_monitor]
        current = float(value.item() if isinstance(value, torch.Tensor) else value)
        # NaN compares False: no improvement (Keras behaves the same).
        if self.plateau_mode == "min":
            improved = current < self.best - PLATEAU_MIN_DELTA
        else:
            improved = current > self.best + PLATEAU_MIN_DELTA
        if improved:
            self.best = current
            self.wait = 0
            return
        self.wait += 1
        # Keras: reduce once the patience is used up and the lr is still above the floor; at the
        # floor the wait keeps counting (harmless, since nothing can change any more).
        if self.wait >= self.plateau_patience and self.plateau_lr > self.plateau_min_lr:
            self.plateau_lr = max(self.plateau_lr * self.plateau_factor, self.plateau_min_lr)
            self.wait = 0

    # --- inspection and checkpoints ------------------------------------------------------------

    @property
    def lr(self) -> float:
        """The first param group's current lr (the one the next optimizer step uses)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def _config(self) -> dict:
        return dict(
            name=self.name,
            epochs=self.epochs,
            steps_per_epoch=self.steps_per_epoch,
            warmup_steps=self.warmup_steps,
            base_lr=self.base_lr,
        )

    def state_dict(self) -> dict:
        """The counters that determine every future lr, plus the settings they depend on."""
        return dict(
            config=self._config(),
            step_count=self.step_count,
            epoch=self.epoch,
            plateau_lr=self.plateau_lr,
            best=self.best,
            wait=self.wait,
        )

    def load_state_dict(self, state: Mapping) -> None:
        """Restore ``state_dict()``'s counters into a schedule built with the same settings."""
        config = dict(state["config"])
        if config != self._config():
            diff = {k: (config.get(k), v) for k, v in self._config().items() if config.get(k) != v}
            raise ValueError(f"schedule state was saved with other settings (saved, here): {diff}")
        self.step_count = int(state["step_count"])
        self.epoch = int(state["epoch"])
        self.plateau_lr = float(state["plateau_lr"])
        self.best = float(state["best"])
        self.wait = int(state["wait"])
        self._apply()

    def __repr__(self) -> str:
        return (
            f"LRSchedule(name={self.name!r}, step={self.step_count}/{self.total_steps}, "
            f"epoch={self.epoch}, lr={self.lr:.3g})"
        )
