"""Seeded stratified splits (80/10/10 by default) and the merge of a second source up to a cap."""

from __future__ import annotations

import math

import numpy as np

from ..errors import DataError
from .readers.base import SPLITS


def parse_ratios(spec: str) -> tuple[float, float, float]:
    """'80/10/10' or '0.8/0.1/0.1' -> (0.8, 0.1, 0.1). The ratios must sum to 100 or to 1."""
    parts = spec.split("/")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) != 3 or not all(math.isfinite(v) and v >= 0 for v in vals) or vals[0] == 0:
        raise DataError(f"--split: expected 'keep' or train/val/test ratios like 80/10/10, got {spec!r}")
    total = sum(vals)
    # Percentages or fractions only: scaling something like 50/50/50 to thirds would silently
    # give a split nobody asked for (a typo for 50/25/25 or 80/10/10).
    if not (math.isclose(total, 100, abs_tol=1e-6) or math.isclose(total, 1, abs_tol=1e-9)):
        raise DataError(
            f"--split: ratios {spec!r} sum to {total:g}; they must sum to 100 (like 80/10/10) "
            "or to 1 (like 0.8/0.1/0.1)"
        )
    return tuple(v / total for v in vals)  # type: ignore[return-value]


def _allocate(n: int, ratios: tuple[float, ...]) -> list[int]:
    """Split n items into len(ratios) counts by largest remainder, so the counts sum to n."""
    raw = np.array(ratios) * n
    counts = np.floor(raw).astype(int)
    for k in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[k] += 1
    return counts.tolist()


def stratified_split(labels: np.ndarray, ratios: tuple[float, float, float], seed: int) -> np.ndarray:
    """Assign each item to train/val/test so every class is split in the given ratios.

    Returns an array of split names. Same labels, ratios and seed -> same assignment.
    """
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=object)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        counts = _allocate(len(idx), ratios)
        bounds = np.cumsum([0] + counts)
        for split, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:], strict=True):
            out[idx[lo:hi]] = split
    return out


def carve_val(labels: np.ndarray, splits: np.ndarray, val_share: float, seed: int) -> np.ndarray:
    """For sources with train/test only (RAF-DB, CK+): move a stratified share of train to val."""
    out = splits.copy()
    train = np.flatnonzero(out == "train")
    if len(train) == 0:
        return out
    sub = stratified_split(labels[train], (1 - val_share, val_share, 0.0), seed)
    out[train[sub == "val"]] = "val"
    return out


def merge_caps(primary_counts: dict[int, int], cap: int | str) -> dict[int, int]:
    """How many merged images each class may take: up to ``cap`` images per class in total.

    ``cap`` is a count, or 'median' / 'max' of the primary source's class counts (the notebook
    topped its smallest class up to roughly the others' size, i.e. 'median').
    """
    if isinstance(cap, str):
        if cap not in ("median", "max"):
            raise DataError(f"--merge-cap: expected a count, 'median' or 'max', got {cap!r}")
        vals = list(primary_counts.values()) or [0]
        cap = int(np.median(vals)) if cap == "median" else int(max(vals))
    return {c: max(0, cap - n) for c, n in primary_counts.items()}


def class_weights(labels: np.ndarray, num_classes: int) -> list[float]:
    """'Balanced' weights n / (K * n_c), as sklearn's compute_class_weight; 0 for an absent class."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    with np.errstate(divide="ignore"):
        w = np.where(counts > 0, len(labels) / (num_classes * counts), 0.0)
    return [round(float(x), 6) for x in w]
