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
``eval_batch_size``, device and precision, ``compile``, the data.

``compile=true``: the batched training forward (``vmap`` over ``functional_call``, its backward with it) runs
through ``torch.compile``, which traces away vmap's per-layer reshuffling around the grouped
convolutions; on CUDA in mode ``reduce-overhead`` (CUDA graphs: the stacked parameters and buffers keep
their addresses for the pack's life and are marked static, so a step replays without copying them), as
``train()``'s ``compile`` does. The dropout masks are inputs, drawn as without compile, so the only
difference is the kernels' rounding (``tests/test_packed.py``). The first epoch pays the compilation
(and an epoch's last, shorter batch one more); validation runs eagerly.

Float tolerance: the batched kernels reduce in another order than K separate calls. Without BatchNorm
that is all: on CPU a packed trial's per-epoch losses match its ``train()`` within 1e-4 relative (measured
4e-5 over 3 epochs) and its accuracies exactly. BatchNorm is where they part: ``train()``'s channels_last
BatchNorm kernel on CPU is off by ~2e-5 relative per call against float64 (the batched one by ~1e-7), and
a small BatchNorm network amplifies either (Adam's first steps turn rounding-level gradients into whole
lr-sized steps), so its losses agree within a few percent after 2 epochs (``tests/test_packed.py``).

Host work per step (a GPU running small trials is launch-bound, so this is what packing saves): the
network's forward and backward are shared, and so is almost everything else. The K batches are gathered,
scaled and augmented as one (``Augment.transform`` over each trial's own draws), the K losses are one
call (``fer_core.losses.stacked``: each trial's ``ce``/``focal`` settings as tensors), the L2 gradients of
all trials are one ``_foreach_addcmul_``, each trial's ``.grad`` is a view of the stacked gradients (no
per-step handoff), dropout masks are drawn per trial straight into their slots, and the loss and
accuracy sums are stacked. What stays per trial is its own randomness (sample order, augmentation and
dropout draws) and its optimizer's step (fused on CUDA). ``benchmarks/packed_host_ops.py`` counts the
operations dispatched per trial and step against ``train()``'s.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from .. import progress as progress_mod
from ..errors import FerError
from ..losses.stacked import stacked_loss
from .augment import Augment
from .config import TrainConfig
from .data import DeviceSplit, TrainData
from .metrics import ConfusionAccumulator
from .optim import match_state_layout
from .trainer import (
    Report,
    TrainResult,
    TrainState,
    _divergence,
    _drop_temp_checkpoints,
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
        self._step: tuple[Callable, bool] | None = None  # the batched training forward, and if it is CUDA graphs

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
        _prepare_run_dir(run, state, run_dir, report)
        slot = free[0]
        model = state.model
        if not self._params:
            self._allocate(model, run.device)
        dropout = _dropout_rates(model)
        if not set(dropout) <= self._dropout_paths or self._template is None:
            self._dropout_paths |= set(dropout)
            self._template = _template(model, self._dropout_paths)
            self._calls.clear()
            self._step = None
        self._alias(model, slot)
        match_state_layout(state.optimizer)  # resumed from train()'s checkpoint: moments in channels_last
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
        if self._splits is not None and self._splits[0].device.type == "cuda":  # nothing in the pass waits for
            torch.cuda.synchronize(self._splits[0].device)  # the GPU: the epoch's time must (train() reads its sums)
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
        """One epoch's optimizer steps for every trial: per slot the summed loss and the correct predictions.

        The host work of a step is kept to what is each trial's own: its sample indices, its augmentation
        and dropout draws, its loss and its optimizer step. The batches of all trials are gathered, scaled
        and augmented as one (``Augment.transform`` over every trial's draws), the gradients land in stacked
        tensors that each trial's ``.grad`` views (``_alias``), and the loss and accuracy sums are stacked."""
        assert self._template is not None and self._splits is not None
        slots = sorted(self.trials)
        trials = [self.trials[s] for s in slots]
        first = trials[0].run
        device, n_used, batch_size = first.device, first.n_used, first.cfg.batch_size
        streams, gens = {}, {}
        for slot, t in zip(slots, trials, strict=True):
            t.state.model.train()
            streams[slot] = _epoch_streams(t.run, t.state.epoch)
            gens[slot] = torch.Generator(device=device).manual_seed(_epoch_seed(t.run.cfg.seed, t.state.epoch, 1))
        occupied = None if len(slots) == self.capacity else torch.tensor(slots, device=device)
        loss_sums = torch.zeros(len(slots), device=device, dtype=torch.float64)
        corrects = torch.zeros(len(slots), device=device, dtype=torch.int64)
        grads = [p.grad for p in self._params.values() if p.grad is not None]
        l2_grads, l2_params, l2_coefs = self._l2_terms(dict(zip(slots, trials, strict=True)))
        noise_plans: dict[int, tuple] = {}
        all_losses = stacked_loss([t.run.loss_fn for t in trials])  # None: a loss this cannot stack
        self._template.train()
        batched, cudagraphs = self._batched_train(first.cfg.compile, device)
        for start in range(0, n_used, batch_size):
            idx = torch.cat([streams[s][0][start : start + batch_size] for s in slots])
            xb, yb = self._splits[0].batch(idx)
            n = len(yb) // len(slots)
            xb = xb.to(torch.float32, memory_format=torch.channels_last).div_(255.0)
            xb = self._augment(xb, n, [(t.run.augment, streams[s][1]) for s, t in zip(slots, trials, strict=True)])
            x = xb.view(len(slots), n, *xb.shape[1:])
            if occupied is not None:
                full = x.new_zeros((self.capacity, *x.shape[1:]))
                full[occupied] = x
                x = full
            y = yb.view(len(slots), n)
            noise = self._noise(n, xb, gens, noise_plans)
            if cudagraphs:
                torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast(
                device.type, dtype=first.amp_dtype or torch.float32, enabled=first.amp_dtype is not None
            ):
                logits = batched(self._params, self._buffers, noise, x)
            logits = (logits if occupied is None else logits[occupied]).float()
            if all_losses is not None:
                losses = all_losses(logits, y)
            else:
                losses = torch.stack([t.run.loss_fn(logits[i], y[i]) for i, t in enumerate(trials)])
            torch._foreach_zero_(grads)
            losses.sum().backward()  # one backward pass for every trial: each loss reaches only its slot
            if l2_grads:  # every trial's Keras L2 gradient (2 l2 w on its l2 parameters) at once
                torch._foreach_addcmul_(l2_grads, l2_params, l2_coefs)
            for t in trials:  # each trial's .grad views its slot of the stacked gradients
                _optimizer_step(t.run, t.state, l2=False)
            loss_sums += losses.detach().double() * n
            corrects += (logits.detach().argmax(2) == y).sum(1)
        return {slot: (loss_sums[i], corrects[i]) for i, slot in enumerate(slots)}

    def _l2_terms(self, trials: dict[int, _Trial]) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """The stacked gradients, weights and per-slot factors (``2 l2`` where the slot's trial penalizes that
        weight, else 0; shaped to broadcast over a slot) of every weight some trial penalizes, for
        ``grad += factor * w`` on all trials at once (what ``add_l2_grad_`` adds per trial)."""
        factors: dict[str, list[float]] = {}
        for slot, t in trials.items():
            if not t.run.l2_params:
                continue
            penalized = {id(p) for p in t.run.l2_params}
            for name, p in t.state.model.named_parameters():
                if id(p) in penalized:
                    factors.setdefault(name, [0.0] * self.capacity)[slot] = 2.0 * t.run.cfg.l2
        grads, weights, coefs = [], [], []
        for name, per_slot in factors.items():
            stacked = self._params[name]
            assert stacked.grad is not None
            grads.append(stacked.grad)
            weights.append(stacked.detach())
            shape = (self.capacity,) + (1,) * (stacked.dim() - 1)
            coefs.append(torch.tensor(per_slot, dtype=stacked.dtype, device=stacked.device).view(shape))
        return grads, weights, coefs

    @staticmethod
    def _augment(xb: torch.Tensor, n: int, augments: list[tuple[Augment, torch.Generator]]) -> torch.Tensor:
        """The trials' batches ``xb`` (``n`` images of each, in slot order) augmented: each trial's draws from its
        own generator, exactly as ``train()`` draws them, then one ``transform`` for all the trials whose
        augmentations have the same settings (each image depends only on its own draws)."""
        groups: dict[tuple, list[int]] = {}
        for i, (augment, _) in enumerate(augments):
            if not augment.is_identity:
                groups.setdefault(augment.settings, []).append(i)
        if not groups:
            return xb
        if len(groups) == 1 and len(next(iter(groups.values()))) == len(augments):
            augment = augments[0][0]
            return augment.transform(xb, torch.cat([augment.draws(n, xb.device, g) for _, g in augments]))
        out = xb.clone()
        for members in groups.values():
            augment = augments[members[0]][0]
            rows = torch.cat([torch.arange(i * n, (i + 1) * n, device=xb.device) for i in members])
            u = torch.cat([augment.draws(n, xb.device, augments[i][1]) for i in members])
            out[rows] = augment.transform(xb[rows], u)
        return out

    def _batched_train(self, compile: bool, device: torch.device) -> tuple[Callable, bool]:
        """The training forward of every slot at once (``vmap`` over ``_forward_train``), compiled when the
        pack's trials say ``compile=true`` (see the module doc); whether it runs as CUDA graphs. Built once per
        template (a trial with new dropout layers makes a new one)."""
        if self._step is None:
            step: Callable = torch.vmap(self._forward_train, in_dims=(0, 0, 0, 0))
            cudagraphs = compile and device.type == "cuda"
            if compile:
                if cudagraphs:  # the same storage all along (_alias makes the trials' tensors views of it)
                    for t in (*self._params.values(), *self._buffers.values()):
                        torch._dynamo.mark_static_address(t)
                step = torch.compile(step, mode="reduce-overhead" if cudagraphs else None, dynamic=False)
            self._step = (step, cudagraphs)
        return self._step

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

    def _noise(
        self, n: int, example: torch.Tensor, gens: dict[int, torch.Generator], plans: dict[int, tuple]
    ) -> dict[str, torch.Tensor]:
        """Each dropout layer's masks for a batch of ``n``, stacked over slots: per trial, in the model's call
        order, ``Bernoulli(1 - p) / (1 - p)`` drawn as ``F.dropout`` draws it on CPU (ones where its rate is 0
        and in free slots). Each trial's draw goes straight into its slot; the scaling is one operation per
        layer. ``plans`` caches, per batch size, what stays the same for a whole pass (rates, factors)."""
        if n not in plans:
            plans[n] = self._noise_plan(n, example)
        calls, rates, factors = plans[n]
        stacked = [
            torch.empty_strided((self.capacity, *c.shape), (span, *c.stride), dtype=c.dtype, device=example.device)
            for c, span in calls
        ]
        for slot, per_call in rates.items():
            for i, p in enumerate(per_call):
                if p > 0:
                    stacked[i][slot].bernoulli_(1 - p, generator=gens[slot])
        out = {}
        for (c, _), mask, (keep, kept) in zip(calls, stacked, factors, strict=True):
            if keep is None:
                mask.fill_(1.0)
            else:
                mask.div_(keep)  # computed in float32, rounded to the mask's dtype, as F.dropout's div_(1 - p)
                if kept is not None:
                    mask.masked_fill_(kept, 1.0)
            out[f"{c.path}.noise"] = mask
        return out

    def _noise_plan(self, n: int, example: torch.Tensor) -> tuple:
        """For ``_noise``: the dropout calls with each slot's storage span, every slot's rate per call, and per
        call the divisor ``1 - p`` per slot and the slots to fill with ones (None when there is nothing to do)."""
        calls = [
            (c, 1 + sum((size - 1) * stride for size, stride in zip(c.shape, c.stride, strict=True)))
            for c in self._dropout_calls(n, example)
        ]
        rates = {
            slot: [self.trials[slot].dropout.get(c.path, 0.0) if slot in self.trials else 0.0 for c, _ in calls]
            for slot in range(self.capacity)
        }
        factors: list[tuple[torch.Tensor | None, torch.Tensor | None]] = []
        for i, (c, _) in enumerate(calls):
            per_slot = [rates[slot][i] for slot in range(self.capacity)]
            if not any(p > 0 for p in per_slot):
                factors.append((None, None))
                continue
            shape = (self.capacity,) + (1,) * len(c.shape)
            keep = torch.tensor([1 - p if p > 0 else 1.0 for p in per_slot], device=example.device).view(shape)
            zero = [p == 0 for p in per_slot]
            kept = torch.tensor(zero, device=example.device).view(shape) if any(zero) else None
            factors.append((keep, kept))
        return calls, rates, factors

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
            stacked = torch.zeros((k, *p.shape), dtype=p.dtype, device=device, requires_grad=True)
            stacked.grad = torch.zeros_like(stacked)  # backward adds into it in place; each trial views its slot
            self._params[name] = stacked
        for name, b in model.named_buffers():
            self._buffers[name] = torch.zeros((k, *b.shape), dtype=b.dtype, device=device)

    def _alias(self, model: nn.Module, slot: int) -> None:
        """Copy ``model``'s weights and buffers into ``slot`` and make them views of it (same objects, so its
        optimizer keeps working on them); its parameters' ``.grad`` are views of the slot's stacked gradients."""
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
                grads = self._params[name].grad
                assert grads is not None  # made with the stacked tensor (_allocate)
                p.grad = grads[slot]
            for name, b in buffers.items():
                self._buffers[name][slot].copy_(b)
                b.data = self._buffers[name][slot]

    def _leave(self, slot: int, status: str, message: str) -> TrainResult:
        """End the trial in ``slot``: its model gets weights of its own, the slot is zeroed and freed, and its
        temp checkpoint folder (``report`` without ``run_dir``) is removed, as ``train()`` removes it."""
        trial = self.trials.pop(slot)
        model = trial.state.model
        with torch.no_grad():
            for p in model.parameters():
                p.data = p.data.clone()
                p.grad = None
            for b in model.buffers():
                b.data = b.data.clone()
            model.to(memory_format=torch.channels_last)
            for t in self._params.values():
                t.detach()[slot].zero_()
            for name, t in self._buffers.items():
                t[slot].fill_(1 if name.endswith("running_var") else 0)
        trial.bar.close()  # type: ignore[attr-defined]
        _drop_temp_checkpoints(trial.run)
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
        self._step = None


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
