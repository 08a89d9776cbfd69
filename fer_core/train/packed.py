"""Packed trials: K trainings of one architecture run as one batched network, one kernel launch for all K.

    >>> pack = PackedTrainer(data, capacity=4)
    >>> slots = [pack.add(cfg) for cfg in configs]          # same model, model_args, batch_size, ...
    >>> results = pack.run()                                 # {slot: TrainResult}, as train() returns

A trial on a GPU is tiny (48x48 images, batch 64, a few million parameters): one ``train()`` leaves the
GPU launch-bound. Here the parameters and BatchNorm buffers of K trials are stacked (``(K, ...)``
tensors) and the forward and backward passes run once for all of them under ``torch.vmap`` over
``torch.func.functional_call`` (a convolution becomes one grouped convolution, a linear layer one
batched matrix product). Everything that makes a trial itself stays per trial and is the trainer's own
code (``trainer._setup``, ``_epoch_streams``, ``_train_batch``, ``_optimizer_step``, ``_validate`` and the
epoch bookkeeping), so a packed trial computes what ``train()`` of its config computes:

- its model is built by ``_setup`` (seeded from its ``seed``) and then *aliased* into its slot of the
  stacked tensors (``param.data`` becomes the slot's view), so the trial's own ``nn.Module``, torch
  optimizer (its own state, lr, weight decay; fused on CUDA), ``LRSchedule``, L2 and early stopping
  work on the slot unchanged;
- its data order, augmentation and dropout are seeded from ``(its seed, its epoch)`` exactly as in
  ``train()``: the batch is sliced and augmented per trial, and each dropout layer's mask is drawn
  per trial, in the model's call order, from a generator seeded as ``train()`` seeds the global one
  (on CPU bit for bit the masks ``train()`` draws; CUDA's fused dropout kernel draws differently);
- its loss (``ce``/``focal``, label smoothing, gamma/alpha, class weights), its dropout rates
  (``dropout_scale``: a layer one trial drops with rate 0 multiplies by ones), lr, ``l2``,
  ``weight_decay``, optimizer, schedule, epochs and early stopping are its own.

What packed trials must share (``PACK_KEYS``): the model and ``model_args``, ``batch_size``,
``eval_batch_size``, device and precision, the data; ``compile`` is not supported here.

Float tolerance: the batched kernels reduce in another order than K separate calls. Without BatchNorm
that is all: on CPU a packed trial's per-epoch losses match its ``train()`` within 1e-4 relative (measured
4e-5 over 3 epochs) and its accuracies exactly. BatchNorm is where they part: ``train()``'s channels_last
BatchNorm kernel on CPU is off by ~2e-5 relative per call against float64 (the batched one by ~1e-7), and
a small BatchNorm network amplifies either (Adam's first steps turn rounding-level gradients into whole
lr-sized steps), so its losses agree within a few percent after 2 epochs (``tests/test_packed.py``).

Trials join and leave at epoch boundaries (``add``, ``remove``; a trial that completes, stops early,
diverges or whose ``report`` raises leaves by itself): a freed slot is zeroed and trains nothing until
a new trial takes it, initialized exactly as its own ``train()`` would be. Slots are fixed, so shapes
stay static; a free slot still costs its share of the batched kernels. Each trial's epoch metrics
(``images_per_s`` is the trial's images over the pack's shared epoch time) go to its own ``report``
and, with a ``run_dir``, to its own ``metrics.jsonl``, checkpoint (its slot only) and ``best.pt``. A trial
may join from a checkpoint (``add(resume=...)``, as ``train(resume=...)``). When the last trial has left,
the pack is empty and takes any architecture and batch size again.

The Ray Tune sweep runs packs with ``--pack K`` (``sweeps.pack_actor``): one actor per GPU holds a
``PackedTrainer`` and each of its slots is a Tune trial.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from .. import progress as progress_mod
from ..errors import FerError
from .config import TrainConfig
from .data import DeviceSplit, TrainData
from .metrics import ConfusionAccumulator
from .trainer import (
    Report,
    TrainResult,
    TrainState,
    _divergence,
    _early_stop,
    _epoch_seed,
    _epoch_streams,
    _EpochTrain,
    _finish,
    _load_data,
    _optimizer_step,
    _prepare_run_dir,
    _record_epoch,
    _restore_best,
    _resume,
    _Run,
    _save_and_report,
    _setup,
    _train_batch,
    _validate,
)

__all__ = ["PackedTrainer", "train_packed", "PACK_KEYS"]

#: Config keys every trial of a pack must share (the batched network's shape and where it runs).
PACK_KEYS = (
    "model",
    "model_args",
    "weights_path",
    "freeze_base",
    "batch_size",
    "eval_batch_size",
    "device",
    "precision",
    "compile",
)


class _NoiseDropout(nn.Module):
    """A dropout layer of the batched network: multiplies by the mask it is given (``noise``: Bernoulli(1 - p)
    / (1 - p), drawn per trial outside the vmap); in eval mode the identity."""

    noise: torch.Tensor

    def __init__(self):
        super().__init__()
        self.register_buffer("noise", torch.ones(()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.noise if self.training else x


@dataclass
class _Trial:
    run: _Run
    state: TrainState
    report: Report | None
    bar: object
    dropout: dict[str, float]  # dropout path -> this trial's rate (0: the layer is an identity here)


@dataclass(frozen=True)
class _DropoutCall:
    path: str
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype


class PackedTrainer:
    """Up to ``capacity`` trials of one architecture on ``data``, trained as one batched network.

    Args:
        data: the data set every trial trains on (train and val splits; held once on the device).
        capacity: the number of slots K (>= 1).
    """

    def __init__(self, data: TrainData, *, capacity: int):
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise FerError(f"packed trials: capacity must be an integer >= 1; got {capacity!r}")
        self.data = _load_data(TrainConfig(), data)
        self.capacity = capacity
        self.trials: dict[int, _Trial] = {}
        self._key: dict | None = None
        self._splits: tuple[DeviceSplit, DeviceSplit] | None = None
        self._splits_device: str | None = None
        self._params: dict[str, torch.Tensor] = {}
        self._buffers: dict[str, torch.Tensor] = {}
        self._template: nn.Module | None = None
        self._dropout_paths: set[str] = set()
        self._calls: dict[int, list[_DropoutCall]] = {}

    # --- joining and leaving (at epoch boundaries) ----------------------------------------------

    @property
    def free_slots(self) -> list[int]:
        return [s for s in range(self.capacity) if s not in self.trials]

    def add(
        self,
        config: TrainConfig,
        report: Report | None = None,
        *,
        run_dir: str | os.PathLike | None = None,
        resume: str | os.PathLike | None = None,
    ) -> int:
        """Start a trial of ``config`` in a free slot (its model, optimizer and schedule exactly as ``train()``
        builds them); returns the slot. ``report``, ``run_dir`` and ``resume`` (a checkpoint folder to continue
        from, checked as ``train()`` checks it) are ``train()``'s."""
        cfg = config.check()
        free = self.free_slots
        if not free:
            raise FerError(f"packed trials: all {self.capacity} slots are taken; remove a trial first")
        self._check_key(cfg)
        if self._splits is None or self._splits_device != cfg.device:
            run, state = _setup(cfg, self.data)
            self._splits, self._splits_device = (run.train_split, run.val_split), cfg.device
        else:
            run, state = _setup(cfg, self.data, self._splits)
        _resume(run, state, resume)
        _prepare_run_dir(run, run_dir, resume, report)
        slot = free[0]
        model = state.model
        if not self._params:
            self._allocate(model, run.device)
        dropout = _dropout_rates(model)
        if not set(dropout) <= self._dropout_paths or self._template is None:
            self._dropout_paths |= set(dropout)
            self._template = _template(model, self._dropout_paths)
            self._calls.clear()
        self._alias(model, slot)
        bar = progress_mod.bar(total=cfg.epochs, desc=f"packed {cfg.model}", unit="epoch", progress=False)
        bar.update(state.epoch)
        self.trials[slot] = _Trial(run, state, report, bar, dropout)
        return slot

    def remove(self, slot: int) -> TrainResult:
        """Take the trial in ``slot`` out of the pack (status ``stopped``) and free its slot."""
        if slot not in self.trials:
            raise FerError(f"packed trials: slot {slot} holds no trial; taken: {sorted(self.trials)}")
        state = self.trials[slot].state
        return self._leave(slot, "stopped", f"left the pack after epoch {state.epoch}")

    # --- training -------------------------------------------------------------------------------

    def run(self) -> dict[int, TrainResult]:
        """Train until every trial has ended; the result of each, by slot (a slot reused by a trial that joined
        later holds the last trial's result: use ``step_epoch`` to see each)."""
        results: dict[int, TrainResult] = {}
        while self.trials:
            results.update(self.step_epoch())
        return results

    def step_epoch(self) -> dict[int, TrainResult]:
        """One epoch of every trial in the pack (each at its own epoch), validated and reported per trial; the
        results of the trials that ended in it (their slots are free again)."""
        if not self.trials:
            return {}
        started = time.perf_counter()
        sums = self._train_pass()
        seconds = time.perf_counter() - started
        evaluated = self._evaluate()
        ended: dict[int, TrainResult] = {}
        for slot, trial in list(self.trials.items()):
            run, state = trial.run, trial.state
            loss_sum, correct = sums[slot]
            epoch = state.epoch
            trained = _EpochTrain(float(loss_sum) / run.n_used, int(correct) / run.n_used, started, seconds)
            reason = _divergence(run, state, epoch, trained.loss)
            if reason is not None:
                ended[slot] = self._leave(slot, "diverged", reason)
                continue
            metrics = _record_epoch(run, state, epoch, trained, _validate(run, state, epoch, evaluated[slot]))
            stop_early = _early_stop(run, state, metrics)
            try:
                _save_and_report(run, state, metrics, stop_early, trial.report, trial.bar)
            except Exception as exc:  # a pruner's TrialPruned, a stop request: this trial ends, the others go on
                ended[slot] = self._leave(slot, "stopped", f"report raised {type(exc).__name__}: {exc}")
                continue
            if stop_early:
                ended[slot] = self._leave(slot, "early_stopped", _restore_best(run, state))
            elif state.epoch == run.cfg.epochs:
                ended[slot] = self._leave(slot, "completed", f"trained {run.cfg.epochs} epochs")
        return ended

    def _train_pass(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """One epoch's optimizer steps for every trial: per slot the summed loss and the correct predictions."""
        assert self._template is not None
        first = next(iter(self.trials.values())).run
        device, n_used, batch_size = first.device, first.n_used, first.cfg.batch_size
        streams, gens = {}, {}
        for slot, t in self.trials.items():
            t.state.model.train()
            streams[slot] = _epoch_streams(t.run, t.state.epoch)
            gens[slot] = torch.Generator(device=device).manual_seed(_epoch_seed(t.run.cfg.seed, t.state.epoch, 1))
        sums = {
            slot: (
                torch.zeros((), device=device, dtype=torch.float64),
                torch.zeros((), device=device, dtype=torch.int64),
            )
            for slot in self.trials
        }
        self._template.train()
        batched = torch.vmap(self._forward_train, in_dims=(0, 0, 0, 0))
        for start in range(0, n_used, batch_size):
            batches = {
                slot: _train_batch(t.run, streams[slot][0], start, streams[slot][1]) for slot, t in self.trials.items()
            }
            n = len(next(iter(batches.values()))[1])
            example = next(iter(batches.values()))[0]
            x = torch.stack(
                [batches[s][0] if s in batches else torch.zeros_like(example) for s in range(self.capacity)]
            )
            noise = self._noise(n, example, gens)
            with torch.autocast(
                device.type, dtype=first.amp_dtype or torch.float32, enabled=first.amp_dtype is not None
            ):
                logits = batched(self._params, self._buffers, noise, x)
            logits = logits.float()
            losses = {slot: self.trials[slot].run.loss_fn(logits[slot], batches[slot][1]) for slot in batches}
            for p in self._params.values():
                p.grad = None
            sum(losses.values()).backward()  # one backward pass for every trial: each loss reaches only its slot
            for slot, t in self.trials.items():
                for name, p in t.state.model.named_parameters():
                    grad = self._params[name].grad
                    p.grad = grad[slot] if grad is not None else None
                _optimizer_step(t.run, t.state)
                t.state.optimizer.zero_grad(set_to_none=True)
                loss_sum, correct = sums[slot]
                yb = batches[slot][1]
                loss_sum += losses[slot].detach().double() * len(yb)
                correct += (logits[slot].detach().argmax(1) == yb).sum()
        return sums

    def _forward_train(self, params, buffers, noise, x):
        return functional_call(self._template, {**params, **buffers, **noise}, (x,))

    def _forward_eval(self, params, buffers, x):
        return functional_call(self._template, {**params, **buffers}, (x,))

    def _evaluate(self) -> dict[int, tuple[float, np.ndarray]]:
        """Every trial's val loss and confusion matrix, from one batched pass over the val split."""
        assert self._template is not None and self._splits is not None
        first = next(iter(self.trials.values())).run
        device, split, batch_size = first.device, self._splits[1], first.cfg.eval_batch_size
        for t in self.trials.values():
            t.state.model.eval()
        self._template.eval()
        confs = {s: ConfusionAccumulator(first.num_classes, device=device) for s in self.trials}
        loss_sums = {s: torch.zeros((), device=device, dtype=torch.float64) for s in self.trials}
        order = torch.arange(split.n, device=split.index_device)
        batched = torch.vmap(self._forward_eval, in_dims=(0, 0, None))
        with torch.inference_mode():
            for start in range(0, split.n, batch_size):
                xb, yb = split.batch(order[start : start + batch_size])
                xb = xb.to(torch.float32, memory_format=torch.channels_last).div_(255.0)
                with torch.autocast(
                    device.type, dtype=first.amp_dtype or torch.float32, enabled=first.amp_dtype is not None
                ):
                    logits = batched(self._params, self._buffers, xb)
                logits = logits.float()
                for slot, t in self.trials.items():
                    loss_sums[slot] += t.run.eval_loss_fn(logits[slot], yb).double() * len(yb)
                    confs[slot].update(yb, logits[slot].argmax(1))
        return {s: (float(loss_sums[s]) / max(split.n, 1), confs[s].compute()) for s in self.trials}

    # --- dropout masks --------------------------------------------------------------------------

    def _noise(self, n: int, example: torch.Tensor, gens: dict[int, torch.Generator]) -> dict[str, torch.Tensor]:
        """Each dropout layer's masks for a batch of ``n``, stacked over slots: per trial, in the model's call
        order, ``Bernoulli(1 - p) / (1 - p)`` drawn as ``F.dropout`` draws it (ones where its rate is 0 and in
        free slots)."""
        calls = self._dropout_calls(n, example)
        per_slot: dict[str, list[torch.Tensor]] = {c.path: [] for c in calls}
        for slot in range(self.capacity):
            trial = self.trials.get(slot)
            for c in calls:
                p = trial.dropout.get(c.path, 0.0) if trial is not None else 0.0
                mask = torch.empty_strided(c.shape, c.stride, dtype=c.dtype, device=example.device)
                if p > 0:
                    mask.bernoulli_(1 - p, generator=gens[slot]).div_(1 - p)
                else:
                    mask.fill_(1.0)
                per_slot[c.path].append(mask)
        return {f"{path}.noise": torch.stack(masks) for path, masks in per_slot.items()}

    def _dropout_calls(self, n: int, example: torch.Tensor) -> list[_DropoutCall]:
        """The dropout layers a batch of ``n`` passes through, in call order, with the shape, strides and dtype
        of their input (found once per batch size by one eval-mode pass of the template, whose own weights
        keep the layout of a trial's model in ``train()``: channels_last, which decides the masks' strides)."""
        if n not in self._calls:
            assert self._template is not None
            template = self._template
            amp = next(iter(self.trials.values())).run.amp_dtype
            modules = dict(template.named_modules())
            calls: list[_DropoutCall] = []
            hooks = [
                modules[path].register_forward_pre_hook(
                    lambda _m, args, path=path: calls.append(
                        _DropoutCall(path, tuple(args[0].shape), tuple(args[0].stride()), args[0].dtype)
                    )
                )
                for path in sorted(self._dropout_paths)
            ]
            was_training = template.training
            template.eval()
            try:
                x = torch.zeros((n, *example.shape[1:]), device=example.device).contiguous(
                    memory_format=torch.channels_last
                )
                with (
                    torch.no_grad(),
                    torch.autocast(example.device.type, dtype=amp or torch.float32, enabled=amp is not None),
                ):
                    template(x)
            finally:
                template.train(was_training)
                for h in hooks:
                    h.remove()
            self._calls[n] = calls
        return self._calls[n]

    # --- the stacked tensors --------------------------------------------------------------------

    def _check_key(self, cfg: TrainConfig) -> None:
        if cfg.compile:
            raise FerError("packed trials: compile=true is not supported; pack with compile=false")
        key = {k: getattr(cfg, k) for k in PACK_KEYS}
        if self._key is None:
            self._key = key
            return
        differ = [k for k in PACK_KEYS if key[k] != self._key[k]]
        if differ:
            shown = ", ".join(f"{k}={key[k]!r} (the pack's: {self._key[k]!r})" for k in differ)
            raise FerError(f"packed trials must share {', '.join(PACK_KEYS)}; this trial has {shown}")

    def _allocate(self, model: nn.Module, device: torch.device) -> None:
        k = self.capacity
        for name, p in model.named_parameters():
            self._params[name] = torch.zeros((k, *p.shape), dtype=p.dtype, device=device, requires_grad=True)
        for name, b in model.named_buffers():
            self._buffers[name] = torch.zeros((k, *b.shape), dtype=b.dtype, device=device)

    def _alias(self, model: nn.Module, slot: int) -> None:
        """Copy ``model``'s weights and buffers into ``slot`` and make them views of it (same objects, so its
        optimizer keeps working on them)."""
        params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
        if set(params) != set(self._params) or set(buffers) != set(self._buffers):
            raise FerError("packed trials: this trial's model has other parameters than the pack's")
        with torch.no_grad():
            for name, p in params.items():
                stacked = self._params[name].detach()
                if stacked.shape[1:] != p.shape:
                    raise FerError(
                        f"packed trials: {name} is {tuple(p.shape)} here, {tuple(stacked.shape[1:])} in the pack"
                    )
                stacked[slot].copy_(p)
                p.data = stacked[slot]
            for name, b in buffers.items():
                self._buffers[name][slot].copy_(b)
                b.data = self._buffers[name][slot]

    def _leave(self, slot: int, status: str, message: str) -> TrainResult:
        """End the trial in ``slot``: its model gets weights of its own, the slot is zeroed and freed."""
        trial = self.trials.pop(slot)
        model = trial.state.model
        with torch.no_grad():
            for p in model.parameters():
                p.data = p.data.clone()
            for b in model.buffers():
                b.data = b.data.clone()
            model.to(memory_format=torch.channels_last)
            for t in self._params.values():
                t.detach()[slot].zero_()
            for name, t in self._buffers.items():
                t[slot].fill_(1 if name.endswith("running_var") else 0)
        trial.bar.close()  # type: ignore[attr-defined]
        if not self.trials:
            self._empty()
        return _finish(trial.run, trial.state, status, message)

    def _empty(self) -> None:
        """The last trial left: the next one may bring another architecture or batch size (the data stays on
        the device)."""
        self._key = None
        self._params, self._buffers = {}, {}
        self._template = None
        self._dropout_paths = set()
        self._calls.clear()


def _dropout_rates(model: nn.Module) -> dict[str, float]:
    """Every dropout layer of ``model`` by path, with its rate."""
    out = {}
    for path, m in model.named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            if type(m) is not nn.Dropout:
                raise FerError(f"packed trials: {path} is a {type(m).__name__}; only nn.Dropout can be packed")
            out[path] = float(m.p)
    return out


def _template(model: nn.Module, dropout_paths: set[str]) -> nn.Module:
    """The module ``functional_call`` runs with the stacked tensors: a copy of ``model`` whose layers at
    ``dropout_paths`` (dropout, or an identity where this trial's rate is 0) take their masks as input."""
    template = copy.deepcopy(model)
    for path in dropout_paths:
        parent_path, _, name = path.rpartition(".")
        parent = template.get_submodule(parent_path) if parent_path else template
        setattr(parent, name, _NoiseDropout())
    return template


def train_packed(
    configs: Sequence[TrainConfig],
    data: TrainData,
    reports: Sequence[Report | None] | None = None,
    *,
    run_dirs: Sequence[str | os.PathLike | None] | None = None,
) -> list[TrainResult]:
    """Train ``configs`` packed in one batched network from start to end; their results in order."""
    pack = PackedTrainer(data, capacity=len(configs))
    reports = list(reports) if reports is not None else [None] * len(configs)
    run_dirs = list(run_dirs) if run_dirs is not None else [None] * len(configs)
    slots = [pack.add(cfg, rep, run_dir=d) for cfg, rep, d in zip(configs, reports, run_dirs, strict=True)]
    results = pack.run()
    return [results[s] for s in slots]
