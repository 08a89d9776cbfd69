"""Flag likely mislabeled images with confident learning (Northcutt et al., 2021, "Confident Learning").

Two steps:

1. Out-of-fold probabilities. Every image gets class probabilities from a model that never saw
   it: the data are split into stratified folds (seeded) and each fold is predicted by a model
   trained on the others. The model is deliberately quick: a fixed, label-free feature extractor
   (a small dictionary of 5x5 patch filters learned by k-means on whitened patches, applied as a
   convolution with a two-sided soft threshold and average-pooled over a 6x6 grid, the image and its
   mirror image averaged; Coates & Ng 2011), reduced by PCA, then multinomial logistic regression
   per fold. Only the logistic regression sees labels, and only those of the training folds, so
   fitting the dictionary and the PCA once on all images leaks nothing into the out-of-fold
   predictions.
2. The confident joint. Class j's threshold t_j is the average probability of j over the images
   labeled j. An image labeled y is flagged when, among the classes whose probability reaches their
   threshold, the most probable one is a class other than y. Flagged images are ranked by
   self-confidence, the probability of the given label, lowest first.

``write_review`` writes the ranked candidates as ``mislabels.csv`` (fill in ``new_label`` with a
class name or ``drop`` and pass the file back to the ingest with ``--relabels``) and a contact
sheet ``mislabels.png``.

Why this model. Measured on the synthetic faces (``fer_core.data.synth``, 4000 images, 30% label
noise; single-thread CPU seconds for the whole out-of-fold search; accuracy of the out-of-fold
argmax against the *true* labels; AP of low self-confidence as a noise detector; precision/recall
of the flagged set). The comparison was made on the first version of the synthetic faces, before
they gained class-independent nuisance factors:

    downsampled pixels, PCA, logistic regression       3.7 s  acc 0.50  AP 0.58  P 0.41 R 0.75
    HOG (6 px cells), logistic regression              10 s   acc 0.58  AP 0.67  P 0.47 R 0.73
    tiny CNN (16-32-64, 24 px, 8 epochs per fold)      63 s   acc 0.53  AP 0.70  P 0.42 R 0.73
    patch dictionary, PCA, logistic regression         11 s   acc 0.68  AP 0.77  P 0.58 R 0.72

On the current faces the chosen model measures about the same (``benchmarks/mislabel_detection.py``,
2 cores): 4000 images, seeds 0/1: 5.3 s, acc 0.69/0.68, AP 0.78/0.76, P 0.55/0.56, R 0.73/0.73;
20000 images: 17.5 s, acc 0.75, AP 0.84, P 0.65, R 0.73. Features cost about 1 ms per image, so
100k images take a few minutes.

Why self-confidence. Ranking by the normalized margin instead gave the same precision at the top
of the list within a point (e.g. 0.99 vs 1.00 among the first 100 of 20000), so the simpler
number, which the review file shows, decides.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from sklearn.cluster import MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from .. import atomic, progress as prog

RANK_BY = ("self_confidence", "normalized_margin")
CSV_COLUMNS = ("rank", "id", "label", "suggested", "self_confidence", "suggested_confidence", "new_label")

# Feature extractor and classifier settings, chosen by measurement on the synthetic faces (see the
# module docstring). Larger dictionaries, finer grids, more PCA components at small N, other C,
# or an MLP instead of the logistic regression did not help.
SIDE = 48  # images are resized to SIDE x SIDE (grayscale) before feature extraction
PATCH = 5  # dictionary filter size in pixels
FILTERS = 64  # dictionary size (k-means centroids); features = 2 * FILTERS * GRID**2
GRID = 6  # responses are average-pooled over a GRID x GRID grid of image regions
ALPHA = 0.25  # soft threshold of the two-sided encoding max(0, z - a), max(0, -z - a)
PATCHES = 20_000  # random patches used to learn the dictionary
KM_INIT = 1  # k-means restarts (more did not help)
PCA_FIT = 8192  # at most this many images (a seeded random subset) fit the dictionary and PCA
C_REG = 0.01  # inverse L2 strength of the logistic regression
CHUNK = 16  # images encoded per torch call (small: the responses stay in cache)
BLOCK = 2048  # images encoded, then projected, per step after the PCA fit


@dataclass
class MislabelReport:
    """Out-of-fold predictions and the ranked mislabel candidates.

    Attributes:
        probs: (N, K) out-of-fold predicted probabilities (rows sum to 1).
        given: (N,) the given labels.
        suggested: (N,) argmax of ``probs``.
        self_confidence: (N,) probability of the given label, ``probs[i, given[i]]``.
        thresholds: (K,) per-class thresholds: mean probability of class j over images labeled j.
        candidates: indices of likely mislabels, most likely first.
        oof_accuracy: share of images whose out-of-fold argmax equals the given label.
        confident: (N,) the class the confident-joint rule assigns (the most probable class among
            those reaching their threshold), or -1 where no class reaches its threshold. For a
            candidate this is the class the review suggests; it can differ from ``suggested``.
    """

    probs: np.ndarray
    given: np.ndarray
    suggested: np.ndarray
    self_confidence: np.ndarray
    thresholds: np.ndarray
    candidates: np.ndarray
    oof_accuracy: float
    confident: np.ndarray


# ----------------------------------------------------------------------------------------------
# The confident joint (pure functions on probabilities)


def confident_thresholds(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class thresholds: t_j is the mean predicted probability of class j over the images labeled j.

    A class nobody is labeled with gets threshold +inf (no image can be confidently moved into it).
    """
    sums = np.bincount(labels, weights=probs[np.arange(len(labels)), labels], minlength=num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def confident_labels(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each image, the most probable class among those whose probability reaches its threshold.

    -1 where no class reaches its threshold. A slack of 1e-6 lets a probability equal to the mean
    (up to float rounding) count as reaching it.
    """
    passing = probs >= np.asarray(thresholds)[None, :] - 1e-6
    best = np.where(passing, probs, -1.0).argmax(axis=1)
    return np.where(passing.any(axis=1), best, -1)


def rank_candidates(
    probs: np.ndarray, labels: np.ndarray, *, max_fraction: float | None = None, rank_by: str = "self_confidence"
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of likely mislabels, most likely first, and the per-class thresholds.

    The rule (off-diagonal of the confident joint): an image labeled y is flagged when, among the
    classes whose probability reaches their own threshold (probs[i, j] >= t_j), the most probable
    one is some j != y. An image for which no class reaches its threshold is not flagged.

    Ranking: ``self_confidence`` (default) puts the lowest probs[i, y] first; ``normalized_margin``
    puts the most negative probs[i, y] - max_{j != y} probs[i, j] first. Ties keep index order.
    ``max_fraction`` keeps at most floor(max_fraction * N) of the top-ranked candidates.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probs must be (N, K) with N == len(labels); got {probs.shape} and {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1]})")
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {RANK_BY}, got {rank_by!r}")
    if max_fraction is not None and not 0.0 <= max_fraction <= 1.0:
        raise ValueError(f"max_fraction must lie in [0, 1], got {max_fraction}")

    thresholds = confident_thresholds(probs, labels, probs.shape[1])
    confident = confident_labels(probs, thresholds)
    candidates = np.flatnonzero((confident >= 0) & (confident != labels))

    own = probs[candidates, labels[candidates]]
    if rank_by == "self_confidence":
        score = own
    else:
        others = probs[candidates].copy()
        others[np.arange(len(candidates)), labels[candidates]] = -np.inf
        score = own - others.max(axis=1)
    candidates = candidates[np.argsort(score, kind="stable")]
    if max_fraction is not None:
        candidates = candidates[: int(np.floor(max_fraction * len(labels)))]
    return candidates, thresholds


# ----------------------------------------------------------------------------------------------
# Features: a k-means patch dictionary (label-free)


def _grayscale(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, SIDE, SIDE) float32 luma, each image shifted to zero mean and scaled
    by 1 / (std + 8), so a flat image stays flat."""
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (N, H, W, 1) or (N, H, W, 3), got {images.shape}")
    out = np.empty((len(images), SIDE, SIDE), dtype=np.float32)
    luma = torch.tensor([0.299, 0.587, 0.114])
    for s in range(0, len(images), BLOCK):
        x = torch.from_numpy(np.ascontiguousarray(images[s : s + BLOCK])).float()
        x = x[..., 0] if x.shape[-1] == 1 else x @ luma
        if x.shape[1:] != (SIDE, SIDE):
            x = F.interpolate(x[:, None], size=(SIDE, SIDE), mode="bilinear", antialias=True, align_corners=False)[:, 0]
        x = x - x.mean(dim=(1, 2), keepdim=True)
        out[s : s + len(x)] = (x / (x.std(dim=(1, 2), keepdim=True) + 8.0)).numpy()
    return out


@dataclass
class _Dictionary:
    weight: np.ndarray  # (FILTERS, PATCH*PATCH) filters acting on raw (mean-removed) patches
    bias: np.ndarray  # (FILTERS,)


def _learn_dictionary(x: np.ndarray, seed: int) -> _Dictionary:
    """k-means centroids of contrast-normalized, ZCA-whitened random patches, as linear filters.

    The encoding of a patch is c_k . W (p - mean(p)) / sd(p) - c_k . W mu, with W the whitening
    matrix and mu the mean patch; weight holds c_k W and bias -c_k W mu.
    """
    rng = np.random.default_rng([seed, 1])
    n, h, w = x.shape
    m = PATCHES
    i, r, c = rng.integers(0, n, m), rng.integers(0, h - PATCH + 1, m), rng.integers(0, w - PATCH + 1, m)
    patches = np.stack([x[i, r + a, c + b] for a in range(PATCH) for b in range(PATCH)], axis=1)
    patches = patches - patches.mean(axis=1, keepdims=True)
    patches /= np.sqrt(patches.var(axis=1, keepdims=True) + 0.1)
    mu = patches.mean(axis=0)
    evals, evecs = np.linalg.eigh(np.cov(patches - mu, rowvar=False))
    zca = (evecs / np.sqrt(evals + 0.1)) @ evecs.T
    km = MiniBatchKMeans(FILTERS, random_state=seed, n_init=KM_INIT, batch_size=2048).fit((patches - mu) @ zca)
    centers = km.cluster_centers_ / (np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True) + 1e-8)
    weight = centers @ zca
    return _Dictionary(weight=weight.astype(np.float32), bias=(-weight @ mu).astype(np.float32))


def _encode(x: np.ndarray, d: _Dictionary) -> np.ndarray:
    """(n, SIDE, SIDE) -> (n, 2 * FILTERS * GRID**2) pooled soft-threshold responses, mirror-averaged."""
    weight = torch.from_numpy(d.weight).view(FILTERS, 1, PATCH, PATCH)
    wsum = torch.from_numpy(d.weight.sum(axis=1)).view(1, -1, 1, 1)
    bias = torch.from_numpy(d.bias).view(1, -1, 1, 1)
    xb = torch.from_numpy(x)[:, None]
    feats = torch.zeros(())
    for img in (xb, xb.flip(-1)):
        resp = F.conv2d(img, weight)
        mean = F.avg_pool2d(img, PATCH, 1)
        inv_sd = torch.rsqrt((F.avg_pool2d(img * img, PATCH, 1) - mean * mean).clamp_min(0) + 0.1)
        z = resp.sub_(wsum * mean).mul_(inv_sd).add_(bias - ALPHA)  # z - a
        pos = F.adaptive_avg_pool2d(F.relu(z), GRID)
        neg = F.adaptive_avg_pool2d(F.relu_(z.add_(2 * ALPHA).neg_()), GRID)  # -z - a
        feats = feats + torch.cat([pos, neg], dim=1).flatten(1)
    return (feats / 2).numpy()


def _encode_all(x: np.ndarray, d: _Dictionary, pool: ThreadPoolExecutor) -> np.ndarray:
    """Encode ``x`` in small chunks (they stay in cache) spread over the pool's threads."""
    starts = range(0, len(x), CHUNK)
    return np.concatenate(list(pool.map(lambda s: _encode(x[s : s + CHUNK], d), starts)))


def _cpus() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def components(n: int) -> int:
    """PCA size for n images: about n / 32, between 64 and 256 (more data supports more features)."""
    return int(min(256, max(64, n // 32)))


def features(
    images: np.ndarray, *, seed: int = 0, progress: bool | None = False, workers: int | None = None
) -> np.ndarray:
    """Label-free (N, components(N)) features: dictionary encoding, standardized, PCA, whitened.

    A seeded random subset of at most PCA_FIT images provides the dictionary's patches and fits
    the standardization and the PCA; the other images are then encoded block by block and
    projected, so memory stays at O(N * components + PCA_FIT * features). Encoding runs on
    ``workers`` threads (default: all cores), each torch op single-threaded; the result does not
    depend on ``workers``.
    """
    n = len(images)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with (
            torch.no_grad(),
            ThreadPoolExecutor(workers or _cpus()) as pool,
            prog.bar(total=n, desc="mislabels: features", unit="img", progress=progress) as bar,
        ):
            order = np.random.default_rng([seed, 2]).permutation(n)
            first = order[:PCA_FIT]
            x = _grayscale(images[first])
            d = _learn_dictionary(x, seed)
            fit = _encode_all(x, d, pool)
            bar.update(len(first))
            mean, std = fit.mean(axis=0), fit.std(axis=0) + 1e-6
            k = min(components(n), len(first) - 1, fit.shape[1])
            pca = PCA(k, whiten=True, svd_solver="randomized", random_state=seed).fit((fit - mean) / std)
            out = np.empty((n, k), dtype=np.float32)
            out[first] = pca.transform((fit - mean) / std)
            del fit, x
            for s in range(PCA_FIT, n, BLOCK):
                idx = order[s : s + BLOCK]
                out[idx] = pca.transform((_encode_all(_grayscale(images[idx]), d, pool) - mean) / std)
                bar.update(len(idx))
    finally:
        torch.set_num_threads(threads)
    return out


# ----------------------------------------------------------------------------------------------
# Out-of-fold probabilities and the report


def out_of_fold_probs(
    feats: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    folds: int = 5,
    seed: int = 0,
    progress: bool | None = False,
) -> np.ndarray:
    """(N, K) probabilities; each row from a logistic regression trained on the other folds only.

    Folds are stratified by the given label and shuffled with ``seed``. A class missing from a
    training fold gets probability 0 for that fold's images.
    """
    probs = np.zeros((len(labels), num_classes))
    with warnings.catch_warnings():  # a class smaller than `folds` is fine: it just misses some folds
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(feats, labels))
    for train, test in prog.bar(splits, desc="mislabels: folds", unit="fold", progress=progress):
        seen = np.unique(labels[train])
        if len(seen) == 1:
            probs[test, seen[0]] = 1.0
            continue
        model = LogisticRegression(C=C_REG, max_iter=1000).fit(feats[train], labels[train])
        probs[test[:, None], model.classes_[None, :]] = model.predict_proba(feats[test])
    return probs / probs.sum(axis=1, keepdims=True)  # exact row sums (the model computes in float32)


def find_mislabels(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    folds: int = 5,
    seed: int = 0,
    max_fraction: float | None = None,
    progress: bool | None = False,
) -> MislabelReport:
    """Out-of-fold probabilities for every image, then the confident-joint candidates, ranked.

    ``images`` is (N, H, W, C) uint8 (C = 1 or 3; color is reduced to luma), ``labels`` (N,) ints in
    [0, num_classes). Deterministic for a given ``seed``. ``max_fraction`` caps the number of
    candidates at floor(max_fraction * N), keeping the most likely ones.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    largest = np.bincount(labels, minlength=num_classes).max(initial=0)
    if largest < folds:
        raise ValueError(f"too few images for {folds} folds: the largest class has {largest}")

    feats = features(images, seed=seed, progress=progress)
    probs = out_of_fold_probs(feats, labels, num_classes, folds=folds, seed=seed, progress=progress)
    candidates, thresholds = rank_candidates(probs, labels, max_fraction=max_fraction)
    suggested = probs.argmax(axis=1)
    return MislabelReport(
        probs=probs,
        given=labels,
        suggested=suggested,
        self_confidence=probs[np.arange(len(labels)), labels],
        thresholds=thresholds,
        candidates=candidates,
        oof_accuracy=float(np.mean(suggested == labels)) if len(labels) else 0.0,
        confident=confident_labels(probs, thresholds),
    )


# ----------------------------------------------------------------------------------------------
# Review files


def _review_rows(report: MislabelReport, ids: Sequence[str], classes: Sequence[str]) -> list[list]:
    rows = []
    for rank, i in enumerate(report.candidates, start=1):
        j = int(report.confident[i]) if report.confident[i] >= 0 else int(report.suggested[i])
        rows.append(
            [
                rank,
                ids[i],
                classes[report.given[i]],
                classes[j],
                f"{report.self_confidence[i]:.4f}",
                f"{report.probs[i, j]:.4f}",
                "",
            ]
        )
    return rows


def _contact_sheet(
    report: MislabelReport, images: np.ndarray, classes: Sequence[str], top: int, cols: int = 8, cell: int = 112
) -> Image.Image:
    """Thumbnails of the top candidates; under each: rank, given -> suggested, both probabilities."""
    shown = report.candidates[:top]
    pad, text_h = 4, 26
    rows = max(1, -(-len(shown) // cols))
    width = min(cols, max(1, len(shown))) * (cell + pad) + pad
    sheet = Image.new("RGB", (max(width, 200), rows * (cell + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    if not len(shown):
        draw.text((pad, pad), "no likely mislabels found", fill="black")
    for k, i in enumerate(shown):
        img = np.asarray(images[i])
        img = img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img
        thumb = Image.fromarray(img).convert("RGB").resize((cell, cell), Image.Resampling.BILINEAR)
        x0, y0 = pad + (k % cols) * (cell + pad), pad + (k // cols) * (cell + text_h + pad)
        sheet.paste(thumb, (x0, y0))
        j = int(report.confident[i]) if report.confident[i] >= 0 else int(report.suggested[i])
        draw.text((x0, y0 + cell + 1), f"{k + 1}. {classes[report.given[i]][:8]}>{classes[j][:8]}", fill="black")
        draw.text(
            (x0, y0 + cell + 13), f"{report.self_confidence[i]:.2f} -> {report.probs[i, j]:.2f}", fill="firebrick"
        )
    return sheet


def write_review(
    report: MislabelReport,
    ids: Sequence[str],
    classes: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    images: np.ndarray,
    top: int = 64,
) -> dict[str, Path]:
    """Write ``mislabels.csv`` (every candidate, ranked) and ``mislabels.png`` (the ``top`` first).

    CSV columns: rank, id, label (given class name), suggested (class name the confident-joint rule
    moves the image to), self_confidence (probability of the given label), suggested_confidence
    (probability of the suggested one), new_label (empty: fill in a class name or ``drop``; the
    edited file is a valid relabels.csv). Each file is written to a temp name and renamed into
    place. Returns {"csv": path, "png": path}.
    """
    if len(ids) != len(report.given) or len(images) != len(report.given):
        raise ValueError(f"report has {len(report.given)} images but {len(ids)} ids and {len(images)} images")
    out = Path(out_dir)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    writer.writerows(_review_rows(report, ids, classes))
    csv_path = atomic.write_text(out / "mislabels.csv", buf.getvalue())
    png = io.BytesIO()
    _contact_sheet(report, images, classes, top).save(png, format="PNG")
    png_path = atomic.write_bytes(out / "mislabels.png", png.getvalue())
    return {"csv": csv_path, "png": png_path}
