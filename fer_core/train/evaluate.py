"""Evaluate a trained run on a split (the test split by default): ``fer evaluate RUN_DIR``.

Writes ``RUN_DIR/eval-<split>/``: ``metrics.json`` (accuracy, macro-F1, per-class precision/recall/F1
and support), ``report.txt`` (sklearn-style table), ``confusion.json`` and ``confusion.png``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..atomic import write_text
from ..errors import FerError
from ..jsonio import dumps
from ..storage import redact
from .checkpoint import BEST_FILE, CHECKPOINT_FILE, load_checkpoint, load_weights
from .config import resolve_config
from .data import DeviceSplit, TrainData, load_train_data
from .metrics import classification_metrics, format_report, save_confusion
from .precision import autocast_dtype
from .trainer import _evaluate_split, build_model, resolve_device

__all__ = ["evaluate_model", "evaluate_run", "load_run_model"]


def evaluate_model(
    model: torch.nn.Module,
    data: TrainData,
    split: str = "test",
    *,
    device: str = "auto",
    batch_size: int = 1024,
    precision: str = "auto",
) -> dict:
    """Accuracy, macro-F1, per-class metrics, loss (plain CE) and the confusion matrix of ``model``."""
    data.require(split)
    dev = resolve_device(device)
    model = model.to(dev)
    amp = autocast_dtype(precision, dev)
    loss_fn = torch.nn.CrossEntropyLoss()
    loss, cm = _evaluate_split(
        model, DeviceSplit(data.x(split), data.y(split), dev), loss_fn, data.num_classes, batch_size, amp, dev
    )
    out = classification_metrics(cm, data.classes)
    out.update(
        split=split,
        loss=loss,
        n=int(cm.sum()),
        confusion=cm.tolist(),
        classes=list(data.classes),
        data_version=data.version,
    )
    return out


def load_run_model(run_dir: str | os.PathLike, weights: str = "best") -> tuple[torch.nn.Module, dict]:
    """The model of a run folder with its ``best`` (``best.pt``) or ``final`` (last checkpoint) weights.

    Both files are read by ``fer_core.train.checkpoint`` (tensors and plain data only: a file that
    could run code, or a truncated one, is a ``FerError``).
    """
    run_dir = Path(run_dir)
    if weights == "best":
        path = run_dir / BEST_FILE
    elif weights == "final":
        path = run_dir / "checkpoint" / CHECKPOINT_FILE
    else:
        raise FerError(f"weights must be 'best' or 'final'; got {weights!r}")
    if not path.is_file():
        raise FerError(
            f"{path}: not found; is {run_dir} a run folder written by 'fer train' "
            "(with config.yaml, best.pt and checkpoint/)?"
        )
    state = load_weights(path) if weights == "best" else load_checkpoint(path)
    cfg = resolve_config(state["config"], where=str(path))
    classes = state["classes"]
    kernel = next((v for v in state["model"].values() if v.dim() == 4), None)
    if kernel is None:
        raise FerError(
            f"{path}: its weights have no convolution kernel to read the input channels from; "
            "is it a file written by 'fer train'?"
        )
    model = build_model(cfg, len(classes), kernel.shape[1])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise FerError(
            f"{path}: its weights do not fit model {cfg.model} with {len(classes)} classes "
            f"({str(exc).splitlines()[0]}); the file is damaged or was edited"
        ) from None
    return model, {
        "config": cfg,
        "classes": classes,
        "data_version": state["data_version"],
        "epoch": state["epoch"],
        "weights": weights,
        "path": str(path),
    }


def evaluate_run(
    run_dir: str | os.PathLike,
    *,
    split: str = "test",
    weights: str = "best",
    data: str | None = None,
    device: str = "auto",
) -> dict:
    """Evaluate a run folder on ``split`` of its data set (or ``data``), writing ``eval-<split>/``."""
    run_dir = Path(run_dir)
    model, info = load_run_model(run_dir, weights)
    cfg = info["config"]
    uri = data or cfg.data
    dataset = load_train_data(uri, expected_version=info["data_version"], splits=(split,))
    if dataset.classes != info["classes"]:
        raise FerError(f"{redact(uri)}: classes {dataset.classes} differ from the run's {info['classes']}")
    result = evaluate_model(
        model, dataset, split, device=device, batch_size=cfg.eval_batch_size, precision=cfg.precision
    )
    result.update(run_dir=str(run_dir), weights=weights, epoch=info["epoch"], model=cfg.model)
    out = run_dir / f"eval-{split}"
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "metrics.json", dumps(result, indent=2) + "\n")
    write_text(out / "report.txt", format_report(result, dataset.classes) + "\n")
    import numpy as np

    save_confusion(
        np.asarray(result["confusion"]),
        dataset.classes,
        out,
        title=f"{cfg.model} - {split} ({weights} weights, epoch {info['epoch']})",
    )
    result["out_dir"] = str(out)
    return result
