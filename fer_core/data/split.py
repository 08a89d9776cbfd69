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


def carve_val(
    labels: np.ndarray, splits: np.ndarray, val_share: float, seed: int, *, groups: np.ndarray | None = None
) -> np.ndarray:
    """For sources with train/test only (RAF-DB, CK+): move a stratified share of train to val
    (whole groups, when ``groups`` gives one per image)."""
    out = splits.copy()
    train = np.flatnonzero(out == "train")
    if len(train) == 0:
        return out
    ratios = (1 - val_share, val_share, 0.0)
    if groups is None:
        sub = stratified_split(labels[train], ratios, seed)
    else:
        sub = stratified_group_split(labels[train], np.asarray(groups)[train], ratios, seed)
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


def stratified_group_split(
    labels: np.ndarray, groups: np.ndarray, ratios: tuple[float, float, float], seed: int
) -> np.ndarray:
    """Like :func:`stratified_split`, but the images of one group (one subject, or the survivors of
    one duplicate group) all land in the same split.

    Each class's target counts per split are what :func:`stratified_split` would give. Groups of
    two or more images are placed first, largest first (equal sizes in a seeded random order), each
    into the split where it least increases the squared distance from the targets (weighted by the
    split's size, and leaving each split its share of the single images); then groups are moved
    between splits while a move lowers that distance. Last, the single images of each class fill what
    every split still needs, in a seeded random order. With no group of two or more this is exactly
    :func:`stratified_split`.
    """
    labels = np.asarray(labels)
    _, group_of = np.unique(np.asarray(groups), return_inverse=True)
    group_of = group_of.reshape(-1)
    classes = np.unique(labels)
    col = np.searchsorted(classes, labels)
    target = np.array([_allocate(int(np.sum(labels == c)), ratios) for c in classes]).T.astype(float)  # (split, class)
    sizes = np.bincount(group_of)
    single = sizes[group_of] == 1
    multi = np.flatnonzero(sizes > 1)
    out = np.empty(len(labels), dtype=object)
    need = target.copy()
    if len(multi):
        place = _place_groups(group_of, col, sizes, multi, target, single, ratios, seed)
        for g, s in place.items():
            out[group_of == g] = SPLITS[s]
        for s in range(len(SPLITS)):
            need[s] -= np.bincount(col[(out == SPLITS[s])], minlength=len(classes))
    rng = np.random.default_rng(seed)  # the stream stratified_split uses, so no groups -> same split
    for k, c in enumerate(classes):
        idx = np.flatnonzero((labels == c) & single)
        rng.shuffle(idx)
        counts = _fill(len(idx), need[:, k], ratios)
        bounds = np.cumsum([0] + counts)
        for split, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:], strict=True):
            out[idx[lo:hi]] = split
    return out


def _place_groups(
    group_of: np.ndarray,
    col: np.ndarray,
    sizes: np.ndarray,
    multi: np.ndarray,
    target: np.ndarray,
    single: np.ndarray,
    ratios: tuple[float, ...],
    seed: int,
) -> dict[int, int]:
    """Split index of every group in ``multi``: greedy placement, then moves while they help."""
    n_classes = target.shape[1]
    counts = np.zeros((len(sizes), n_classes))
    np.add.at(counts, (group_of, col), 1)
    singles = np.bincount(col[single], minlength=n_classes)
    # What the groups should fill: each split's targets less its share of the single images.
    aim = target - np.outer(ratios, singles)
    weight = 1.0 / np.maximum(target.sum(axis=1), 1.0)[:, None]
    dev = -aim  # (split, class): placed counts minus aim

    def delta(v: np.ndarray, s: int, sign: int) -> float:
        return float((((dev[s] + sign * v) ** 2 - dev[s] ** 2) * weight[s]).sum())

    rng = np.random.default_rng([seed, 1])
    order = multi[rng.permutation(len(multi))]
    order = order[np.argsort(-sizes[order], kind="stable")]
    where: dict[int, int] = {}
    for g in order:
        v = counts[g]
        s = int(np.argmin([delta(v, s, +1) for s in range(len(target))]))
        where[int(g)] = s
        dev[s] += v
    for _ in range(50):  # local search: move one group at a time while that lowers the distance
        moved = False
        for g in order:
            v, a = counts[g], where[int(g)]
            gains = [delta(v, a, -1) + delta(v, b, +1) if b != a else 0.0 for b in range(len(target))]
            b = int(np.argmin(gains))
            if gains[b] < -1e-12:
                dev[a] -= v
                dev[b] += v
                where[int(g)] = b
                moved = True
        if not moved:
            break
    return where


def _fill(n: int, need: np.ndarray, ratios: tuple[float, ...]) -> list[int]:
    """Share ``n`` single images among the splits: what each still needs, any rest by ``ratios``."""
    want = np.maximum(need, 0)
    if want.sum() <= 0:
        return _allocate(n, ratios)
    if want.sum() >= n:
        return _allocate(n, tuple(want / want.sum()))
    rest = _allocate(n - int(want.sum()), ratios)
    return [int(w) + r for w, r in zip(want, rest, strict=True)]
