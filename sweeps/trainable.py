"""The ``fer_core`` trainer as a Ray Tune function trainable.

One call of ``fer_trainable`` is one trial: it builds the trial's ``TrainConfig`` (sweep base <
space's fixed keys < the sampled values), resumes from Tune's checkpoint when there is one, runs
``fer_core.train.train`` and turns each epoch's metrics into a Tune result with:

- ``score``: the stability-aware objective, the mean validation accuracy of the last ``score_window``
  epochs (what you keep, not the peak you passed);
- ``peak``, ``peak_epoch``, ``final``: best and last validation accuracy so far;
- ``collapsed``, ``collapse_epoch`` and ``collapse_reason``: whether the collapse rule
  (``sweeps.collapse``) has fired by this epoch, at which epoch and why, as ``CollapseState`` finds
  it over the trial's whole history (the same rule ``CollapseStopper`` applies), so the reason is
  recorded in the trial's own results (and in W&B as an event);
- ``trial_status``: running, completed (its last epoch), early_stopped (the trainer's own early
  stopping) or diverged (one extra result after the last good epoch, with NaN metrics and a message).

A trial given a fraction of a GPU (``--gpus-per-trial 0.25``) trains with ``gpu_memory_fraction`` set to it
(the driver's base config): its CUDA memory is capped at that share, and a config that does not fit ends
as a one-line error in its own trial instead of an out-of-memory error in a neighbour's.

The data set arrives through ``tune.with_parameters``: it was read once by the driver, put in the
object store, and every trial on a node maps the same shared memory (zero-copy numpy arrays); no
trial decodes an image. ``train`` checks the data version against the sweep's ``data_version``.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fer_core.train import TrainConfig, TrainData, load_checkpoint, train

from .collapse import collapse_state
from .space import trial_config

__all__ = [
    "fer_trainable",
    "score_of",
    "annotate",
    "ran_to_the_end",
    "resume_history",
    "diverged_result",
    "trial_start",
]


def score_of(values: list[float], window: int) -> float:
    """Mean of the last ``window`` values (fewer at the start); NaN when any of them is not finite."""
    recent = values[-window:]
    if not recent or not all(math.isfinite(v) for v in recent):
        return float("nan")
    return sum(recent) / len(recent)


def annotate(metrics: dict, history: list[float], epochs_total: int, rules: dict) -> dict:
    """Add score, peak/final and the collapse flag to one epoch's ``metrics`` (``history`` includes it)."""
    out = dict(metrics)
    out["score"] = score_of(history, rules["score_window"])
    finite = [(v, i + 1) for i, v in enumerate(history) if math.isfinite(v)]
    peak, peak_epoch = max(finite, key=lambda t: (t[0], -t[1])) if finite else (float("nan"), 0)
    out.update(peak=peak, peak_epoch=peak_epoch, final=history[-1])
    collapse = rules.get("collapse")
    state = collapse_state(history, metric="val_acc", **collapse) if collapse else None
    fired = state if state is not None and state.stopped else None
    out["collapsed"] = fired is not None  # from the epoch the rule fired on (sticky)
    out["collapse_epoch"] = fired.stop_time if fired is not None else 0
    out["collapse_reason"] = fired.epoch_reason() if fired is not None else ""
    out["trial_status"] = metrics.get("status") or ("completed" if metrics.get("epoch") == epochs_total else "running")
    if "val_confusion" in out:  # a JSON string: loggers (CSV, W&B) keep it whole
        out["val_confusion"] = json.dumps(out["val_confusion"])
    return out


def ran_to_the_end(result: dict) -> bool:
    """Whether a trial's last result ends it by itself (for ``PruningOptunaSearch(is_complete=...)``)."""
    return result.get("trial_status") in ("completed", "early_stopped")


def resume_history(checkpoint_dir: str) -> list[float]:
    """The val accuracies of the epochs a Tune checkpoint folder (``checkpoint.pt``) already holds.

    Read with ``fer_core.train.load_checkpoint`` (tensors and plain data only): a checkpoint that
    could run code, or a corrupt one, is a ``FerError`` and the trial errors instead of loading it.
    """
    return [h["val_acc"] for h in load_checkpoint(checkpoint_dir)["history"]]


@contextmanager
def trial_start(params: dict, base: dict, fixed: dict) -> Iterator[tuple[TrainConfig, str | None, list[float]]]:
    """A trial's config (sweep base < space fixed < its sampled ``params``), the folder of the Tune checkpoint it
    continues from (None for a new trial) and the val accuracies of the epochs that checkpoint holds.

    The folder is to read while the block runs: the checkpoint's own on a node's file system, or a download
    of it (``s3://`` storage) that is deleted when the block ends, so a retried or restored trial leaves no
    copy of its checkpoint in the node's temp folder (``Checkpoint.to_directory()`` would, one per resume).
    """
    from ray import tune

    cfg = trial_config(base, fixed, params, where="trial config")
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        yield cfg, None, []
        return
    with checkpoint.as_directory() as folder:
        yield cfg, folder, resume_history(folder)


def fer_trainable(params: dict, *, data: TrainData, base: dict, fixed: dict, rules: dict) -> None:
    """Tune function trainable: train one sampled configuration and report every epoch."""
    from ray import tune

    with trial_start(params, base, fixed) as (cfg, resume_dir, history):

        def report(metrics: dict, checkpoint_dir: str | None) -> None:
            history.append(metrics["val_acc"])
            result = annotate(metrics, history, cfg.epochs, rules)
            ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
            tune.report(result, checkpoint=ckpt)

        with tempfile.TemporaryDirectory(prefix="fer-trial-") as tmp:
            result = train(cfg, data, report=report, run_dir=Path(tmp) / "run", resume=resume_dir, progress=False)
    if result.status == "diverged":
        tune.report(diverged_result(result.final, len(result.history), result.message))


def diverged_result(final: dict, epochs: int, message: str) -> dict:
    """The extra result of a diverged trial: its last good epoch's values (``final``, after ``epochs`` good
    epochs) with NaN metrics, ``trial_status`` diverged and the trainer's ``message``."""
    nan = float("nan")
    last = dict(final) if epochs else {}
    last.pop("val_confusion", None)
    return {
        **last,
        "epoch": epochs + 1,
        "train_loss": nan,
        "val_acc": nan,
        "score": nan,
        "peak": last.get("best_val_acc", nan),
        "final": nan,
        "collapsed": False,
        "collapse_reason": "",
        "trial_status": "diverged",
        "message": message,
    }
