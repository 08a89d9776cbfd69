"""One PyTorch trainer for every model and loss: ``train(config, data, report)``.

    >>> from fer_core.train import load_config, train
    >>> result = train(load_config(overrides=["model=fer_cnn_a", "epochs=5"]), run_dir="runs/a")
    >>> result.status, result.best_val_acc, result.best_epoch

After every epoch ``report(metrics, checkpoint_dir)`` is called with a flat dict of plain Python
numbers (see ``EPOCH_METRICS``) and the folder holding that epoch's checkpoint (or None). It is the
hook Ray Tune uses; the trainer knows nothing of Ray. An exception raised by ``report`` (a pruner's
``TrialPruned``, a stop request) ends training and propagates to the caller.

How an epoch runs: the whole split sits on the training device as uint8 when it fits (else in pinned
host memory); each batch is one ``index_select`` of a seeded permutation, converted to float in
[0, 1], augmented as a batch on the device (``augment.py``), and fed to the model in channels_last
layout (faster on CPU too: a small CNN's epoch took 1.4x as long in NCHW) with bf16 autocast on
CUDA and on CPUs with native bf16 (``precision: auto``, see ``precision.py``). Loss and accuracy
accumulate on the device and are read once per epoch, so the loop never waits on the host. On CUDA
the optimizer is torch's fused one (one kernel per step); ``compile=true`` runs the model through
``torch.compile`` (on CUDA as CUDA graphs, see ``_compiled``). On CPU neither changes anything: a
seeded CPU run is byte-identical with ``compile=false``.

Divergence ends a run with status ``diverged`` (see ``divergence_reason``): at once when the training
loss is not finite, or when it explodes - above ``diverge_factor`` x ln(K) (K classes; ln(K) is the loss
of a uniform guess), or above ln(K) and ``diverge_factor`` x its best epoch so far - for
``diverge_patience`` epochs in a row. The epoch that ends the run is not validated, reported or kept.

Reproducibility: the permutation, the augmentation and dropout are seeded from ``(seed, epoch)``, so
an epoch computes the same thing whether it follows the previous one in-process or a resume from
that epoch's checkpoint (``resume=``): on CPU a resumed run matches an uninterrupted one exactly.

Structure: ``train`` is a short procedure over two objects - ``_Run`` (what is set up once: config, data,
device, splits, losses) and ``TrainState`` (what changes: model, optimizer, schedule, epoch, history,
best-so-far and early stopping; what a checkpoint keeps) - and one function per step: ``_setup``,
``_resume``, ``_prepare_run_dir``, then per epoch ``_train_epoch``, ``_divergence``, ``_validate``,
``_record_epoch``, ``_early_stop``, ``_save_and_report``, and ``_finish``.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, cast

import numpy as np
import torch

from .. import progress as progress_mod
from ..atomic import write_text
from ..errors import FerError
from ..jsonio import dumps
from ..storage import redact
from .augment import Augment, create_augment
from .checkpoint import BEST_FILE, CHECKPOINT_FILE, CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint, save_weights
from .config import RUNTIME_KEYS, TrainConfig, dump_config
from .data import DeviceSplit, TrainData, load_train_data
from .metrics import ConfusionAccumulator, classification_metrics
from .optim import LRSchedule, create_optimizer, match_state_layout
from .precision import autocast_dtype

if TYPE_CHECKING:
    from ..models import FerModelMixin

__all__ = [
    "train",
    "TrainResult",
    "TrainState",
    "build_model",
    "build_loss",
    "resolve_device",
    "EPOCH_METRICS",
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT",
    "load_checkpoint",
    "add_l2_grad_",
    "l2_penalty",
    "divergence_reason",
    "out_of_memory_message",
]

Report = Callable[[dict, "str | None"], None]

#: Keys of every epoch's metrics (plus ``val_recall_<class>`` per class and ``val_confusion``);
#: ``status`` is running, completed (the last epoch) or early_stopped (the trainer's early stopping).
EPOCH_METRICS = (
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_macro_f1",
    "best_val_acc",
    "best_epoch",
    "drop_from_peak",
    "train_val_gap",
    "lr",
    "l2_penalty",
    "images_per_s",
    "epoch_time_s",
    "status",
)


@dataclass
class TrainResult:
    """What a run ended with. ``status``: completed | early_stopped | diverged."""

    status: str
    message: str
    history: list[dict] = field(default_factory=list)
    best_val_acc: float = float("nan")
    best_epoch: int = 0
    model: torch.nn.Module | None = None
    run_dir: Path | None = None

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}

    def summary(self) -> dict:
        final = self.final
        return {
            "status": self.status,
            "message": self.message,
            "epochs": len(self.history),
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "final_val_acc": final.get("val_acc"),
            "final_train_acc": final.get("train_acc"),
            "drop_from_peak": final.get("drop_from_peak"),
            "train_val_gap": final.get("train_val_gap"),
        }


# ----------------------------------------------------------------------------------------------
# Building blocks (shared with evaluation and the sweeps)
# ----------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FerError(f"device: {name!r} was asked for but CUDA is not available here; use device=cpu or auto")
    return device


def build_model(cfg: TrainConfig, num_classes: int, in_chans: int) -> torch.nn.Module:
    """The model of ``cfg`` from the registry (``weights_path`` / ``freeze_base`` only when set)."""
    from ..models import create_model

    kwargs = dict(cfg.model_args)
    if cfg.weights_path is not None:
        kwargs["weights_path"] = cfg.weights_path
    if cfg.freeze_base:
        kwargs["freeze_base"] = True
    try:
        return create_model(
            cfg.model, num_classes=num_classes, in_chans=in_chans, dropout_scale=cfg.dropout_scale, **kwargs
        )
    except FerError:
        raise
    except (TypeError, ValueError) as exc:
        raise FerError(f"model {cfg.model}: {exc}") from None


def build_loss(cfg: TrainConfig, num_classes: int, train_counts: list[int] | None) -> torch.nn.Module:
    """The loss of ``cfg``; class weights ("balanced") from the training split's class counts."""
    from ..losses import class_weights_from_counts, create_loss

    weight = None
    if cfg.class_weight == "balanced" and train_counts is not None and cfg.sampler != "weighted":
        try:
            weight = class_weights_from_counts(train_counts)
        except ValueError as exc:
            raise FerError(f"class_weight=balanced: {exc}") from None
    kwargs = dict(num_classes=num_classes, label_smoothing=cfg.label_smoothing, class_weight=weight)
    if cfg.loss == "focal":
        kwargs.update(gamma=cfg.focal_gamma, alpha=cfg.focal_alpha)
    try:
        return create_loss(cfg.loss, **kwargs)
    except ValueError as exc:
        raise FerError(f"loss {cfg.loss}: {exc}") from None


def add_l2_grad_(params: list[torch.Tensor], l2: float) -> None:
    """Add the gradient of the Keras kernel penalty ``l2 * sum(w**2)`` (``2 * l2 * w``) to ``params``' grads.

    Same update as adding the penalty to the loss, without building it into the autograd graph.
    """
    with_grad = [p for p in params if p.grad is not None]
    if with_grad:
        grads = cast("list[torch.Tensor]", [p.grad for p in with_grad])  # not None: filtered just above
        torch._foreach_add_(grads, [p.detach() for p in with_grad], alpha=2.0 * l2)


def l2_penalty(params: list[torch.Tensor], l2: float) -> float:
    """The value of ``l2 * sum(w**2)`` (reported per epoch as ``l2_penalty``)."""
    if not params or l2 == 0:
        return 0.0
    with torch.no_grad():
        return l2 * float(sum(p.detach().double().pow(2).sum() for p in params))


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + stream) % (2**63 - 1)


def _monitor_mode(name: str) -> float:
    """+1 when larger is better (accuracy, F1), -1 for losses."""
    return -1.0 if "loss" in name else 1.0


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainState:
    """What changes while a run trains: what a checkpoint keeps for an exact resume.

    ``epoch`` counts the epochs done (so the next one to train is ``epoch``, 0-based) and ``history`` holds
    their metrics; ``best_val_acc`` / ``best_epoch`` are the best val accuracy so far; ``es_best``,
    ``es_wait`` and ``es_state`` are the early stopping's best monitored value (sign-adjusted: larger is
    better), its epochs without improvement and the weights (on CPU) at that best. No RNG state is kept:
    every epoch seeds its own generators from ``(seed, epoch)``.

    The checkpoint's payload is ``checkpoint.py``'s: ``state_dict()`` gives ``save_checkpoint`` its share
    of it and ``load_state_dict`` reads it back from ``load_checkpoint``'s dict.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_val_acc: float = -math.inf
    best_epoch: int = 0
    es_best: float | None = None
    es_wait: int = 0
    es_state: dict | None = None

    def state_dict(self) -> dict:
        """This state as ``save_checkpoint``'s keyword arguments (the model, optimizer and schedule as
        objects: ``save_checkpoint`` takes their state dicts as it writes)."""
        return {
            "epoch": self.epoch,
            "model": self.model,
            "optimizer": self.optimizer,
            "schedule": self.schedule,
            "history": self.history,
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "es_best": self.es_best,
            "es_wait": self.es_wait,
            "es_state": self.es_state,
        }

    def load_state_dict(self, payload: dict) -> None:
        """Continue from a checkpoint's payload (``load_checkpoint``'s dict)."""
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        match_state_layout(self.optimizer)  # a packed trial's checkpoint: contiguous moments, channels_last params
        self.schedule.load_state_dict(payload["schedule"])
        self.history = list(payload["history"])
        self.best_val_acc, self.best_epoch = payload["best_val_acc"], payload["best_epoch"]
        self.es_best, self.es_wait, self.es_state = payload["es_best"], payload["es_wait"], payload["es_state"]
        self.epoch = payload["epoch"]


def _check_resume(state: dict, cfg: TrainConfig, data: TrainData, path) -> None:
    if state["data_version"] != data.version:
        raise FerError(
            f"{path}: checkpoint was trained on data version {state['data_version']}, "
            f"but {data.uri} is {data.version}; resume on the same data or start a new run"
        )
    # A key the checkpoint's config lacks was added to TrainConfig later: the old run used its default.
    # Both as recorded (a checkpoint keeps the data URI without its secrets; older ones kept it whole).
    old = TrainConfig().recorded() | state["config"]
    if isinstance(old.get("data"), str):
        old["data"] = redact(old["data"])
    new = cfg.recorded()
    differ = sorted(k for k, v in new.items() if k not in RUNTIME_KEYS and old.get(k) != v)
    if differ:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in differ)
        raise FerError(
            f"{path}: the config differs from the checkpoint's ({shown}); exact resume needs the "
            "same config - start a new run to change it"
        )
    if cfg.epochs < state["epoch"]:
        raise FerError(f"{path}: checkpoint is at epoch {state['epoch']}, beyond epochs={cfg.epochs}")


def divergence_reason(losses: list[float], num_classes: int, factor: float, patience: int) -> str | None:
    """Why the training losses ``losses`` (one per epoch from epoch 1, the current epoch last) mean the run
    has diverged, or None.

    With K classes, ``ln(K)`` is the cross-entropy of a uniform guess (about where an untrained model
    starts). An epoch's loss *explodes* when it is

    - above ``factor x ln(K)``: far worse than guessing (e.g. Adam at lr=1e5: loss 1e11), or
    - above ``ln(K)`` and above ``factor x`` the lowest loss of the epochs before it: the run had
      learned and blew up to worse than guessing.

    The run has diverged when the last ``patience`` epochs all exploded; the message names the rule
    that the current epoch broke, with the numbers. ``factor`` 0 turns this off. A non-finite loss is
    the trainer's own, immediate check (not this function's).
    """
    if factor <= 0 or num_classes < 2 or len(losses) < patience:
        return None
    uniform = math.log(num_classes)
    for i in range(len(losses) - patience, len(losses)):
        best = min(losses[:i], default=math.inf)
        if not (losses[i] > factor * uniform or (losses[i] > uniform and losses[i] > factor * best)):
            return None
    loss, epoch = losses[-1], len(losses)
    run = f"for {patience} epochs in a row" if patience > 1 else "for 1 epoch"
    if loss > factor * uniform:
        return (
            f"training loss {loss:.3g} in epoch {epoch} is above {factor:g} x ln({num_classes}) = "
            f"{factor * uniform:.3g} ({factor:g} times a uniform guess's loss) {run}"
        )
    best = min(losses[:-1])
    best_epoch = losses.index(best) + 1
    return (
        f"training loss {loss:.3g} in epoch {epoch} is above ln({num_classes}) = {uniform:.3g} (a uniform "
        f"guess's loss) and {factor:g} x its best {best:.3g} (epoch {best_epoch}) = {factor * best:.3g} {run}"
    )


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


def _evaluate_split(
    model, split: DeviceSplit, loss_fn, num_classes: int, batch_size: int, amp_dtype, device, forward=None
) -> tuple[float, np.ndarray]:
    """Mean loss and the confusion matrix (K, K) of ``model`` on ``split``, in eval mode (through ``forward``,
    the compiled model, when given)."""
    model.eval()
    forward = forward if forward is not None else model
    conf = ConfusionAccumulator(num_classes, device=device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    order = torch.arange(split.n, device=split.index_device)
    with torch.inference_mode():
        for start in range(0, split.n, batch_size):
            xb, yb = split.batch(order[start : start + batch_size])
            xb = xb.to(torch.float32, memory_format=torch.channels_last).div_(255.0)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = forward(xb)
            logits = logits.float()
            loss_sum += loss_fn(logits, yb).double() * len(yb)
            conf.update(yb, logits.argmax(1))
    return float(loss_sum) / max(split.n, 1), conf.compute()


@dataclass
class _Run:
    """What a run sets up once and reads every epoch; ``run_path`` / ``ckpt_dir``: where it writes (None:
    nothing kept / no checkpoints)."""

    cfg: TrainConfig
    data: TrainData
    device: torch.device
    amp_dtype: torch.dtype | None
    loss_fn: torch.nn.Module
    eval_loss_fn: torch.nn.Module
    augment: Augment
    train_split: DeviceSplit
    val_split: DeviceSplit
    n_used: int  # training images per epoch (see _setup)
    l2_params: list[torch.Tensor]
    sample_weights: torch.Tensor | None
    forward: Callable  # the model, or its torch.compile'd self (``compile``)
    cudagraphs: bool = False  # the compiled model runs as CUDA graphs: mark each training step
    run_path: Path | None = None
    ckpt_dir: Path | None = None
    ckpt_temp: bool = False  # ckpt_dir is a temp folder of this run: removed when train() returns

    @property
    def num_classes(self) -> int:
        return self.data.num_classes


class _EpochTrain(NamedTuple):
    """An epoch's training pass: mean loss and accuracy, its start (``time.perf_counter()``) and duration."""

    loss: float
    acc: float
    started: float
    seconds: float


def train(
    config: TrainConfig,
    data: TrainData | None = None,
    report: Report | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train ``config`` on ``data`` (loaded from ``config.data`` when None) and report every epoch.

    Args:
        config: a validated ``TrainConfig`` (``load_config`` / ``resolve_config``).
        data: the data set's train and val splits; loaded from ``config.data`` (version-checked
            against ``config.data_version``) when None.
        report: called after every epoch as ``report(metrics, checkpoint_dir)``.
        run_dir: where ``config.yaml``, ``metrics.jsonl``, ``checkpoint/``, ``best.pt`` and
            ``result.json`` go; None keeps nothing on disk: checkpoints (when ``report`` wants them) go
            to a temp folder that is removed when ``train`` returns or raises, so ``report`` copies what
            it keeps.
        resume: a checkpoint (file or folder) to continue from; the config must match it (runtime
            keys such as ``device`` excepted) and so must the data version.
        progress: show a progress bar (None: when stderr is a terminal).

    With ``gpu_memory_fraction`` set (a sweep's ``--gpus-per-trial 0.25``), the process's CUDA memory is capped
    at that share of the GPU before anything is allocated. Running out of CUDA memory ends the run with a
    one-line ``FerError`` (``out_of_memory_message``) naming the share, the model and the batch size.
    """
    try:
        return _train(config, data, report, run_dir=run_dir, resume=resume, progress=progress)
    except torch.cuda.OutOfMemoryError:
        raise FerError(out_of_memory_message(config)) from None


def out_of_memory_message(cfg: TrainConfig) -> str:
    """The one line a run that ran out of CUDA memory ends with: its share of the GPU, model, batch size, and
    what to change."""
    what = f"CUDA out of memory training {cfg.model} at batch_size={cfg.batch_size}"
    total = ""
    if torch.cuda.is_available():
        device = torch.device(cfg.device) if cfg.device.startswith("cuda") else torch.device("cuda")
        gib = torch.cuda.get_device_properties(device).total_memory / 2**30
        total = f" ({(cfg.gpu_memory_fraction or 1.0) * gib:.1f} of the GPU's {gib:.1f} GiB)"
    if cfg.gpu_memory_fraction is not None:
        return (
            f"{what} within its gpu_memory_fraction={cfg.gpu_memory_fraction:g} of the GPU{total}; "
            "raise --gpus-per-trial (fewer trials per GPU) or lower batch_size"
        )
    return f"{what}{total}; lower batch_size, or run fewer processes on the GPU"


def _train(config, data, report, *, run_dir, resume, progress) -> TrainResult:
    run, state = _setup(config, data)
    _resume(run, state, resume)
    _prepare_run_dir(run, state, run_dir, report)
    cfg = run.cfg
    status, message = "completed", f"trained {cfg.epochs} epochs"
    bar = progress_mod.bar(total=cfg.epochs, desc=f"train {cfg.model}", unit="epoch", progress=progress)
    bar.update(state.epoch)
    try:
        for epoch in range(state.epoch, cfg.epochs):
            trained = _train_epoch(run, state, epoch)
            reason = _divergence(run, state, epoch, trained.loss)
            if reason is not None:
                status, message = "diverged", reason
                break
            metrics = _record_epoch(run, state, epoch, trained, _validate(run, state, epoch))
            stop_early = _early_stop(run, state, metrics)
            _save_and_report(run, state, metrics, stop_early, report, bar)
            if stop_early:
                status, message = "early_stopped", _restore_best(run, state)
                break
    finally:
        bar.close()
        _drop_temp_checkpoints(run)
    return _finish(run, state, status, message)


# --- setup ------------------------------------------------------------------------------------


def _load_data(cfg: TrainConfig, data: TrainData | None) -> TrainData:
    """``data`` (or ``cfg.data`` loaded), of the config's data version, with train and val splits."""
    if data is None:
        data = load_train_data(cfg.data, expected_version=cfg.data_version, splits=("train", "val"))
    elif cfg.data_version is not None and data.version != cfg.data_version:
        raise FerError(f"data set {data.uri} is version {data.version}, config asks for {cfg.data_version}")
    data.require("train")
    data.require("val")
    return data


def _setup(
    config: TrainConfig, data: TrainData | None, splits: tuple[DeviceSplit, DeviceSplit] | None = None
) -> tuple[_Run, TrainState]:
    """Check the config, load the data, build the model (seeded), losses, splits (``splits``: the train and val
    splits of ``data`` already on the config's device, shared with other runs), optimizer and schedule."""
    cfg = config.check()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    data = _load_data(cfg, data)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and cfg.gpu_memory_fraction is not None:
        # Before anything is allocated: the caching allocator refuses to grow past the share, so a config
        # that does not fit fails here, in its own process, instead of starving a neighbour on the GPU.
        index = device.index if device.index is not None else torch.cuda.current_device()  # "cuda": no index
        torch.cuda.set_per_process_memory_fraction(float(cfg.gpu_memory_fraction), index)
    amp_dtype = autocast_dtype(cfg.precision, device)
    num_classes = data.num_classes
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, num_classes, data.image_shape[2]).to(device)
    model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg, num_classes, data.counts("train")).to(device)
    eval_loss_fn = build_loss(cfg.replace(class_weight="none"), num_classes, None).to(device)
    augment = create_augment(cfg.augment)
    if splits is not None:
        train_split, val_split = splits
    else:
        train_split = DeviceSplit(data.x("train"), data.y("train"), device)
        val_split = DeviceSplit(data.x("val"), data.y("val"), device)
    # A last batch of one image cannot be batch-normalized in training mode: it is left out (the
    # permutation changes every epoch, so no image is left out for good).
    n_used = train_split.n - 1 if train_split.n % cfg.batch_size == 1 and train_split.n > 1 else train_split.n
    optimizer, schedule = _build_optimizer(
        cfg, model, steps_per_epoch=math.ceil(n_used / cfg.batch_size), fused=device.type == "cuda"
    )
    # Every registered model is a FerModelMixin (the registry's contract), which nn.Module's type does not say.
    l2_params = cast("FerModelMixin", model).l2_parameters(cfg.l2_scope) if cfg.l2 > 0 else []
    sample_weights = None
    if cfg.sampler == "weighted":
        from ..losses import weighted_sampler_weights

        sample_weights = weighted_sampler_weights(data.y("train"), num_classes).to(train_split.index_device)
    run = _Run(
        cfg,
        data,
        device,
        amp_dtype,
        loss_fn,
        eval_loss_fn,
        augment,
        train_split,
        val_split,
        n_used,
        l2_params,
        sample_weights,
        *_compiled(cfg, model, device),
    )
    return run, TrainState(model, optimizer, schedule)


def _compiled(cfg: TrainConfig, model: torch.nn.Module, device: torch.device) -> tuple[Callable, bool]:
    """What the loop calls for the model's forward pass, and whether that runs as CUDA graphs.

    ``compile=false``: the model itself. ``compile=true``: ``torch.compile(model, dynamic=False)``; on CUDA
    in mode ``reduce-overhead`` (CUDA graphs: the step is launch-bound, and the shapes are static - every
    training batch but an epoch's last has ``batch_size`` images, so that last one and the evaluation
    batches compile graphs of their own, once), elsewhere in the default mode. The module itself stays
    what checkpoints, L2 and early stopping see (compiling shares its parameters).
    """
    if not cfg.compile:
        return model, False
    cudagraphs = device.type == "cuda"
    return torch.compile(model, mode="reduce-overhead" if cudagraphs else None, dynamic=False), cudagraphs


def _build_optimizer(
    cfg: TrainConfig, model: torch.nn.Module, *, steps_per_epoch: int, fused: bool = False
) -> tuple[torch.optim.Optimizer, LRSchedule]:
    """The run's optimizer (``fused``: one kernel per step on CUDA) and its learning-rate schedule."""
    try:
        optimizer = create_optimizer(
            model,
            name=cfg.optimizer,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            momentum=cfg.momentum,
            nesterov=cfg.momentum > 0,
            fused=fused or None,
        )
        schedule = LRSchedule(
            optimizer,
            name=cfg.lr_schedule,
            epochs=cfg.epochs,
            steps_per_epoch=steps_per_epoch,
            warmup_epochs=cfg.warmup_epochs,
            cosine_alpha=cfg.cosine_alpha,
            step_size=cfg.step_size,
            step_gamma=cfg.step_gamma,
            plateau_factor=cfg.plateau_factor,
            plateau_patience=cfg.plateau_patience,
            plateau_min_lr=cfg.plateau_min_lr,
            plateau_monitor=cfg.plateau_monitor,
        )
    except ValueError as exc:
        raise FerError(f"optimizer/lr_schedule: {exc}") from None
    return optimizer, schedule


def _resume(run: _Run, state: TrainState, resume: str | os.PathLike | None) -> None:
    """Continue ``state`` from the checkpoint ``resume`` (when given) once it is checked to fit the run."""
    if resume is not None:
        payload = load_checkpoint(resume)
        _check_resume(payload, run.cfg, run.data, resume)
        try:
            state.load_state_dict(payload)
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:  # a damaged or doctored file
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            raise FerError(
                f"{resume}: cannot resume from this checkpoint ({type(exc).__name__}: {first}); it is damaged or "
                "was not written by 'fer train' for this config: start a new run"
            ) from None


def _prepare_run_dir(run: _Run, state: TrainState, run_dir: str | os.PathLike | None, report: Report | None) -> None:
    """Create the run folder with its ``config.yaml`` and ``metrics.jsonl`` (a line per epoch ``state`` already
    holds: none for a new run, the checkpoint's history for a resumed one) and pick the checkpoint folder: the
    run's ``checkpoint/``, a temp folder when only ``report`` wants them, or none.

    The log is rewritten from the checkpoint, not continued: a run that stopped after logging an epoch its last
    checkpoint lacks (``checkpoint_every`` > 1), or that was killed between a checkpoint and its log line, would
    otherwise log an epoch twice or never."""
    if run_dir is not None:
        run.run_path = Path(run_dir)
        run.run_path.mkdir(parents=True, exist_ok=True)
        write_text(run.run_path / "config.yaml", dump_config(run.cfg))
        run.ckpt_dir = run.run_path / "checkpoint"
        write_text(run.run_path / "metrics.jsonl", "".join(dumps(m) + "\n" for m in state.history))
    elif report is not None and run.cfg.checkpoint_every:
        import tempfile

        run.ckpt_dir, run.ckpt_temp = Path(tempfile.mkdtemp(prefix="fer-ckpt-")), True


def _drop_temp_checkpoints(run: _Run) -> None:
    """Remove the run's temp checkpoint folder (``ckpt_temp``) once it has ended: the reports had it; nothing
    else reads it."""
    if run.ckpt_temp and run.ckpt_dir is not None:
        shutil.rmtree(run.ckpt_dir, ignore_errors=True)
        run.ckpt_dir, run.ckpt_temp = None, False


# --- one epoch --------------------------------------------------------------------------------


def _train_epoch(run: _Run, state: TrainState, epoch: int) -> _EpochTrain:
    """Train ``state.model`` for one epoch (0-based ``epoch``; dropout, order and augmentation seeded from it)."""
    started = time.perf_counter()
    loss_sum, correct = _train_steps(run, state, epoch)
    return _EpochTrain(float(loss_sum) / run.n_used, int(correct) / run.n_used, started, time.perf_counter() - started)


def _train_steps(run: _Run, state: TrainState, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The optimizer steps of epoch ``epoch``: the summed loss and the number of correct predictions, as
    tensors on the device (nothing in here waits for the device)."""
    model, device = state.model, run.device
    model.train()
    torch.manual_seed(_epoch_seed(run.cfg.seed, epoch, 1))  # dropout
    order, aug_gen = _epoch_streams(run, epoch)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for start in range(0, run.n_used, run.cfg.batch_size):
        xb, yb = _train_batch(run, order, start, aug_gen)
        if run.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, dtype=run.amp_dtype or torch.float32, enabled=run.amp_dtype is not None):
            logits = run.forward(xb)
        logits = logits.float()
        loss = run.loss_fn(logits, yb)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _optimizer_step(run, state)
        loss_sum += loss.detach().double() * len(yb)
        correct += (logits.detach().argmax(1) == yb).sum()
    return loss_sum, correct


def _epoch_streams(run: _Run, epoch: int) -> tuple[torch.Tensor, torch.Generator]:
    """Epoch ``epoch``'s sample order and augmentation generator, seeded from ``(seed, epoch)`` (the dropout's
    stream is the third: ``_epoch_seed(seed, epoch, 1)``)."""
    cfg, split = run.cfg, run.train_split
    gen = torch.Generator(device=split.index_device).manual_seed(_epoch_seed(cfg.seed, epoch, 2))
    aug_gen = torch.Generator(device=run.device).manual_seed(_epoch_seed(cfg.seed, epoch, 3))
    if run.sample_weights is not None:
        order = torch.multinomial(run.sample_weights, split.n, replacement=True, generator=gen)
    else:
        order = torch.randperm(split.n, generator=gen, device=split.index_device)
    return order, aug_gen


def _train_batch(
    run: _Run, order: torch.Tensor, start: int, aug_gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The augmented float batch (channels_last, in [0, 1]) and labels at ``order[start:start + batch_size]``."""
    xb, yb = run.train_split.batch(order[start : start + run.cfg.batch_size])
    xb = run.augment(xb.to(torch.float32, memory_format=torch.channels_last).div_(255.0), generator=aug_gen)
    return xb, yb


def _optimizer_step(run: _Run, state: TrainState, *, l2: bool = True) -> None:
    """The Keras L2 gradient (when ``l2`` is set; ``l2=False``: the caller added it), the optimizer's step and
    the schedule's, once the loss's gradients are in the parameters' ``.grad``."""
    if l2 and run.l2_params:
        add_l2_grad_(run.l2_params, run.cfg.l2)
    state.optimizer.step()
    state.schedule.step_batch()


def _divergence(run: _Run, state: TrainState, epoch: int, train_loss: float) -> str | None:
    """The message ending the run when epoch ``epoch``'s training loss shows it diverged, else None."""
    if not math.isfinite(train_loss):
        return (
            f"training loss became {train_loss} in epoch {epoch + 1} (lr {state.schedule.lr:.3g}); "
            "lower lr, add warmup, or check the data"
        )
    reason = divergence_reason(
        [h["train_loss"] for h in state.history] + [train_loss],
        run.num_classes,
        run.cfg.diverge_factor,
        run.cfg.diverge_patience,
    )
    if reason is not None:
        return f"{reason} (lr {state.schedule.lr:.3g}); lower lr, add warmup, or check the data"
    return None


def _validate(
    run: _Run, state: TrainState, epoch: int, evaluated: tuple[float, np.ndarray] | None = None
) -> tuple[float, np.ndarray, dict]:
    """Val loss, confusion matrix and ``classification_metrics``; a new best val accuracy is kept (and
    written to ``best.pt`` when the run keeps files). ``evaluated``: the val loss and confusion matrix
    when they were computed elsewhere (packed trials evaluate together)."""
    if evaluated is None:
        evaluated = _evaluate_split(
            state.model,
            run.val_split,
            run.eval_loss_fn,
            run.num_classes,
            run.cfg.eval_batch_size,
            run.amp_dtype,
            run.device,
            run.forward,
        )
    val_loss, cm = evaluated
    cls_metrics = classification_metrics(cm, run.data.classes)
    val_acc = cls_metrics["accuracy"]
    if val_acc > state.best_val_acc:
        state.best_val_acc, state.best_epoch = val_acc, epoch + 1
        if run.run_path is not None:
            save_weights(
                run.run_path / BEST_FILE,
                state.model,
                epoch=epoch + 1,
                val_acc=val_acc,
                config=run.cfg.recorded(),
                data_version=run.data.version,
                classes=run.data.classes,
            )
    return val_loss, cm, cls_metrics


def _record_epoch(
    run: _Run, state: TrainState, epoch: int, trained: _EpochTrain, val: tuple[float, np.ndarray, dict]
) -> dict:
    """The epoch's metrics (``status`` is set later), appended to the history; the epoch counts as done
    and the schedule takes its end-of-epoch step."""
    val_loss, cm, cls_metrics = val
    val_acc = cls_metrics["accuracy"]
    metrics = {
        "epoch": epoch + 1,
        "train_loss": trained.loss,
        "train_acc": trained.acc,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "val_macro_f1": cls_metrics["macro_f1"],
        "best_val_acc": state.best_val_acc,
        "best_epoch": state.best_epoch,
        "drop_from_peak": state.best_val_acc - val_acc,
        "train_val_gap": trained.acc - val_acc,
        "lr": state.schedule.lr,
        "l2_penalty": l2_penalty(run.l2_params, run.cfg.l2),
        "images_per_s": run.n_used / trained.seconds,
        "epoch_time_s": time.perf_counter() - trained.started,
        **{f"val_recall_{c}": r for c, r in cls_metrics["recall"].items()},
        "val_confusion": cm.tolist(),
    }
    state.history.append(metrics)
    state.epoch = epoch + 1
    try:
        state.schedule.step_epoch(metrics)
    except ValueError as exc:
        raise FerError(f"lr_schedule={run.cfg.lr_schedule}: {exc}") from None
    return metrics


def _early_stop(run: _Run, state: TrainState, metrics: dict) -> bool:
    """Keras EarlyStopping (with restore_best_weights): whether the monitored metric has not improved for
    ``early_stopping_patience`` epochs; keeps its best value and the weights at it."""
    cfg = run.cfg
    if cfg.early_stopping_monitor is None:
        return False
    if cfg.early_stopping_monitor not in metrics:
        raise FerError(
            f"early_stopping_monitor: no metric {cfg.early_stopping_monitor!r}; metrics: {', '.join(EPOCH_METRICS)}"
        )
    value = metrics[cfg.early_stopping_monitor] * _monitor_mode(cfg.early_stopping_monitor)
    if state.es_best is None or value > state.es_best:
        state.es_best, state.es_wait = value, 0
        state.es_state = {k: v.detach().to("cpu", copy=True) for k, v in state.model.state_dict().items()}
        return False
    state.es_wait += 1
    patience = cfg.early_stopping_patience
    assert patience is not None  # TrainConfig.check: set together with early_stopping_monitor
    return state.es_wait >= patience


def _save_and_report(run: _Run, state: TrainState, metrics: dict, stop_early: bool, report: Report | None, bar) -> None:
    """Set the epoch's ``status``; write the checkpoint (every ``checkpoint_every`` epochs and the last) and
    the ``metrics.jsonl`` line; advance the progress bar; call ``report``."""
    cfg = run.cfg
    last = stop_early or state.epoch == cfg.epochs
    metrics["status"] = "early_stopped" if stop_early else ("completed" if last else "running")
    ckpt_path = None
    if run.ckpt_dir is not None and cfg.checkpoint_every and (state.epoch % cfg.checkpoint_every == 0 or last):
        save_checkpoint(
            run.ckpt_dir,
            config=cfg.recorded(),
            data_version=run.data.version,
            classes=run.data.classes,
            **state.state_dict(),
        )
        ckpt_path = str(run.ckpt_dir)
    if run.run_path is not None:
        with open(run.run_path / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(dumps(metrics) + "\n")
    bar.update(1)
    bar.set_postfix(
        val_acc=f"{metrics['val_acc']:.3f}", best=f"{state.best_val_acc:.3f}@{state.best_epoch}", refresh=False
    )
    if report is not None:
        report(dict(metrics), ckpt_path)


def _restore_best(run: _Run, state: TrainState) -> str:
    """Load the early stopping's best weights back; the message of the early-stopped run."""
    cfg = run.cfg
    message = (
        f"{cfg.early_stopping_monitor} did not improve for {cfg.early_stopping_patience} "
        f"epochs; stopped after epoch {state.epoch}, best weights restored"
    )
    if state.es_state is not None:
        state.model.load_state_dict(state.es_state)
    return message


def _finish(run: _Run, state: TrainState, status: str, message: str) -> TrainResult:
    """The run's ``TrainResult``, also written to ``result.json`` when the run keeps files."""
    result = TrainResult(
        status=status,
        message=message,
        history=state.history,
        best_val_acc=state.best_val_acc if state.history else float("nan"),
        best_epoch=state.best_epoch,
        model=state.model,
        run_dir=run.run_path,
    )
    if run.run_path is not None:
        write_text(run.run_path / "result.json", dumps(result.summary(), indent=2) + "\n")
    return result
