"""Classification metrics for the trainer: confusion matrix, per-class scores, report, plot.

Everything is computed from the (K, K) confusion matrix (rows = true class, columns = predicted
class), so the eval loop only has to accumulate counts:

- ``confusion_matrix(y_true, y_pred, K)``: one shot, on the host (numpy or torch labels).
- ``ConfusionAccumulator(K, device)``: streaming, on the training device, no host sync per batch.
- ``classification_metrics(cm, classes)``: accuracy, macro F1 and per-class precision, recall, F1
  and support; a zero division gives 0.0 (as sklearn's ``zero_division=0``). Plain Python floats,
  so the dict goes straight into JSON, a Ray Tune result or a W&B log.
- ``format_report(metrics, classes)``: a text table like sklearn's ``classification_report``.
- ``save_confusion(cm, classes, out_dir)``: ``confusion.json`` and ``confusion.png``, atomically.

Example::

    acc = ConfusionAccumulator(len(classes), device=device)
    for x, y in val_loader:
        acc.update(y.to(device), model(x.to(device)).argmax(1))
    cm = acc.compute()                       # one device -> host copy
    m = classification_metrics(cm, classes)  # m["macro_f1"], m["recall"]["sad"], ...
    print(format_report(m, classes))
    save_confusion(cm, classes, run_dir, title="val, epoch 12")

Pitfall: macro F1 averages over all K classes, including a class absent from both the labels and
the predictions (its F1 is 0.0), as sklearn does when given ``labels=range(K)``.
"""

from __future__ import annotations

import io
import json
import operator
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .. import atomic
from ..numbers import pct

__all__ = ["confusion_matrix", "classification_metrics", "format_report", "save_confusion", "ConfusionAccumulator"]


def _check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool):
        raise TypeError(f"num_classes must be an int, got {num_classes!r}")
    try:
        k = operator.index(num_classes)
    except TypeError:
        raise TypeError(f"num_classes must be an int, got {num_classes!r}") from None
    if k < 1:
        raise ValueError(f"num_classes must be >= 1, got {k}")
    return k


def _as_labels(x, name: str) -> np.ndarray:
    """Integer class indices (numpy, torch or a list) as a 1-D int64 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "biu":
        raise TypeError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_range(arr: np.ndarray, name: str, k: int) -> None:
    if arr.size and (arr.min() < 0 or arr.max() >= k):
        bad = arr[(arr < 0) | (arr >= k)][0]
        raise ValueError(f"{name} holds class index {bad}, outside 0..{k - 1} (num_classes={k})")


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """The (K, K) int64 confusion matrix: ``cm[i, j]`` counts samples of true class i predicted j.

    Args:
        y_true, y_pred: 1-D integer class indices of equal length (numpy, torch on any device, or
            lists), each in ``0..num_classes - 1``.
        num_classes: K; classes that never occur still get their row and column.

    Same as ``sklearn.metrics.confusion_matrix(y_true, y_pred, labels=range(K))``, by one
    ``np.bincount``.
    """
    k = _check_num_classes(num_classes)
    t = _as_labels(y_true, "y_true")
    p = _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    _check_range(t, "y_true", k)
    _check_range(p, "y_pred", k)
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64, copy=False)


def _check_cm(cm, classes: Sequence[str] | None = None) -> np.ndarray:
    if isinstance(cm, torch.Tensor):
        cm = cm.detach().cpu().numpy()
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"confusion matrix must be square (K, K) with K >= 1, got shape {cm.shape}")
    if cm.dtype.kind not in "biu":
        raise TypeError(f"confusion matrix must hold integer counts, got dtype {cm.dtype}")
    if cm.min() < 0:
        raise ValueError(f"confusion matrix holds a negative count ({cm.min()})")
    if classes is not None and len(classes) != cm.shape[0]:
        raise ValueError(f"{len(classes)} class names for a {cm.shape[0]}x{cm.shape[0]} confusion matrix")
    return cm.astype(np.int64, copy=False)


def _class_names(classes) -> list[str]:
    names = [str(c) for c in classes]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"class names must be unique, got duplicates {dup}")
    return names


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, 0.0 where den == 0 (sklearn's zero_division=0)."""
    num = num.astype(np.float64)
    den = den.astype(np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def classification_metrics(cm, classes: Sequence[str]) -> dict:
    """Accuracy, macro F1 and per-class precision / recall / F1 / support from a confusion matrix.

    Returns::

        {"accuracy": float, "macro_f1": float, "macro_precision": float, "macro_recall": float,
         "per_class": {cls: {"precision", "recall", "f1", "support"}},
         "recall": {cls: recall}}

    ``precision = tp / predicted``, ``recall = tp / support``, ``f1 = 2 tp / (support + predicted)``
    (the harmonic mean of the two); each is 0.0 when its denominator is 0, and accuracy is 0.0 for
    an empty matrix. Macro averages are unweighted means over all K classes (``macro_recall`` is
    the balanced accuracy). Floats are plain Python floats; support is an int.
    """
    names = _class_names(classes)
    cm = _check_cm(cm, names)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, support + predicted)
    total = int(cm.sum())
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    }
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1.mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "per_class": per_class,
        "recall": {name: float(recall[i]) for i, name in enumerate(names)},
    }


def format_report(metrics: dict, classes: Sequence[str] | None = None, *, digits: int = 2) -> str:
    """A text table in the layout of sklearn's ``classification_report``.

    One row per class (precision, recall, f1-score, support), then ``accuracy`` and ``macro avg``.
    ``classes`` gives the row order (default: the order of ``metrics["per_class"]``).
    """
    per_class = metrics["per_class"]
    names = list(per_class) if classes is None else [str(c) for c in classes]
    missing = [n for n in names if n not in per_class]
    if missing:
        raise KeyError(f"no metrics for class(es) {missing}; metrics have {list(per_class)}")
    rows = [per_class[n] for n in names]
    total = sum(r["support"] for r in rows)
    n = max(len(rows), 1)
    macro = [sum(r[key] for r in rows) / n for key in ("precision", "recall", "f1")]

    width = max([len(name) for name in names] + [len("macro avg"), digits])
    head = f"{'':>{width}} " + "".join(f" {h:>9}" for h in ("precision", "recall", "f1-score", "support"))
    lines = [head, ""]

    def row(label: str, values: Sequence[float | None], support: int) -> str:
        cells = "".join(f" {'':>9}" if v is None else f" {v:>9.{digits}f}" for v in values)
        return f"{label:>{width}} {cells} {support:>9}"

    for name, r in zip(names, rows, strict=True):
        lines.append(row(name, (r["precision"], r["recall"], r["f1"]), r["support"]))
    lines.append("")
    lines.append(row("accuracy", (None, None, metrics["accuracy"]), total))
    lines.append(row("macro avg", macro, total))
    return "\n".join(lines) + "\n"


def _row_normalized(cm: np.ndarray) -> np.ndarray:
    return _safe_div(cm, cm.sum(axis=1, keepdims=True).repeat(cm.shape[1], axis=1))


def save_confusion(
    cm, classes: Sequence[str], out_dir: str | os.PathLike, *, title: str = "", normalize: bool = True
) -> tuple[Path, Path]:
    """Write ``confusion.json`` and ``confusion.png`` into ``out_dir``, each atomically.

    ``confusion.json`` is ``{"classes": [...], "matrix": counts (K x K ints), "normalized": the
    rows divided by their support (K x K floats, an empty row stays 0.0)}``. The PNG shows each
    cell's count and row percentage, class names on both axes (true down, predicted across), and
    ``title`` with the accuracy and sample count. ``normalize=True`` shades cells by row fraction,
    so small classes stay readable on imbalanced data; ``False`` shades by raw count.

    Returns:
        ``(json_path, png_path)``.
    """
    names = _class_names(classes)
    cm = _check_cm(cm, names)
    norm = _row_normalized(cm)
    out_dir = Path(out_dir)
    json_path = atomic.write_text(
        out_dir / "confusion.json",
        json.dumps({"classes": names, "matrix": cm.tolist(), "normalized": norm.tolist()}, indent=2, ensure_ascii=False)
        + "\n",
    )
    png_path = atomic.write_bytes(
        out_dir / "confusion.png", _confusion_png(cm, norm, names, title=title, normalize=normalize)
    )
    return json_path, png_path


def _confusion_png(cm: np.ndarray, norm: np.ndarray, names: list[str], *, title: str, normalize: bool) -> bytes:
    # A bare Figure on the Agg canvas: no pyplot state, no global backend switch, thread-safe.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = cm.shape[0]
    side = max(4.0, 0.85 * k + 2.2)
    fig = Figure(figsize=(side + 1.0, side), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    values = norm if normalize else cm.astype(np.float64)
    vmax = 1.0 if normalize else max(float(cm.max()), 1.0)
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax)
    cbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("fraction of the true class" if normalize else "count")

    fontsize = 9.0 if k <= 8 else max(5.0, 9.0 - 0.35 * (k - 8))
    support = cm.sum(axis=1)
    for i in range(k):
        for j in range(k):
            share = pct(norm[i, j] if support[i] else None, 0)
            color = "white" if values[i, j] > 0.55 * vmax else "black"
            ax.text(
                j, i, f"{cm[i, j]}\n{share}", ha="center", va="center", fontsize=fontsize, color=color, parse_math=False
            )

    ticks = np.arange(k)
    ax.set_xticks(ticks, labels=names, rotation=45, ha="right", rotation_mode="anchor", parse_math=False)
    ax.set_yticks(ticks, labels=names, parse_math=False)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = int(cm.sum())
    accuracy = float(np.trace(cm) / total) if total else 0.0
    summary = f"accuracy {accuracy:.1%} (n={total})"
    ax.set_title(f"{title}\n{summary}" if title else summary, parse_math=False)

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


class ConfusionAccumulator:
    """Streaming confusion matrix on the training device; the host sees it only in ``compute()``.

    Each ``update`` adds one count per (true, predicted) pair at flat index ``true * K + pred``
    into a fixed (K*K + 1,) int64 buffer with ``index_add_``. Unlike ``torch.bincount`` (whose CUDA
    kernel reads the input's min and max back to the host to size its output), this never waits
    on the device, so the eval loop stays asynchronous. Pairs with a label outside ``0..K-1`` go
    to the extra last bin instead of corrupting memory or raising inside a kernel; ``compute()``
    raises if any arrived.

    Example::

        acc = ConfusionAccumulator(7, device="cuda")
        for x, y in loader:
            acc.update(y.cuda(non_blocking=True), model(x.cuda()).argmax(1))
        cm = acc.compute()     # (7, 7) int64 numpy
        acc.reset()            # before the next epoch's eval

    Args:
        num_classes: K.
        device: where the counts live; put it where the predictions are. Inputs on another device
            are moved there (a CUDA -> CPU move is a sync).
    """

    def __init__(self, num_classes: int, device: str | torch.device = "cpu"):
        self.num_classes = _check_num_classes(num_classes)
        self.device = torch.device(device)
        self._counts = torch.zeros(self.num_classes**2 + 1, dtype=torch.int64, device=self.device)

    def _labels(self, x, name: str) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.dtype.is_floating_point or x.dtype.is_complex:
            raise TypeError(f"{name} must hold integer class indices, got dtype {x.dtype}")
        return x.reshape(-1).to(device=self.device, dtype=torch.int64)

    def update(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> None:
        """Count a batch: ``y_true`` and ``y_pred`` of the same shape (usually (N,)), integer."""
        if tuple(y_true.shape) != tuple(y_pred.shape):
            raise ValueError(f"y_true and y_pred differ in shape: {tuple(y_true.shape)} vs {tuple(y_pred.shape)}")
        k = self.num_classes
        t = self._labels(y_true, "y_true")
        p = self._labels(y_pred, "y_pred")
        valid = (t >= 0) & (t < k) & (p >= 0) & (p < k)
        idx = torch.where(valid, t * k + p, torch.full_like(t, k * k))
        self._counts.index_add_(0, idx, torch.ones_like(idx))

    def compute(self) -> np.ndarray:
        """The (K, K) int64 confusion matrix so far (one device -> host copy)."""
        k = self.num_classes
        counts = self._counts.cpu().numpy().copy()
        if counts[-1]:
            raise ValueError(
                f"{int(counts[-1])} (y_true, y_pred) pair(s) passed to update() had a class "
                f"index outside 0..{k - 1} (num_classes={k})"
            )
        return counts[:-1].reshape(k, k)

    def reset(self) -> None:
        """Zero the counts (in place, on the device)."""
        self._counts.zero_()
