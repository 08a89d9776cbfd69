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
2. Flagging (``flag_by="cleanlab"``, the default): cleanlab's
   ``find_label_issues(filter_by="prune_by_noise_rate")`` on those probabilities. It estimates the
   confident joint (how many images labeled i belong to class j), and for every off-diagonal cell
   flags that many images labeled i, those with the largest margin p_j - p_i. Flagged images are
   ranked by self-confidence, the probability of the given label, lowest first; the review
   suggests the most probable other class. The expected number of label errors is cleanlab's
   ``count.num_label_issues`` with ``estimation_method="off_diagonal"``: the images counted off
   the diagonal of the confident joint, less those whose given label is (nearly) the most probable.
   ``flag_by="confident_joint"`` is the earlier hand-written rule, kept for comparison: an image
   labeled y is flagged when, among the classes whose probability reaches their threshold (the
   mean probability of the class over the images labeled with it), the most probable one is not y.

``write_review`` writes the top ``top`` ranked candidates as ``mislabels.csv`` (fill in
``new_label`` with a class name or ``drop`` and pass the file back to the ingest with
``--relabels``, or review them in the page ``fer data review`` writes) and a contact sheet
``mislabels.png``.

Why this model. Measured on the synthetic faces (``fer_core.data.synth``, 4000 images, 30% label
noise; single-thread CPU seconds for the whole out-of-fold search; accuracy of the out-of-fold
argmax against the *true* labels; AP of low self-confidence as a noise detector; precision/recall
of the flagged set, confident-joint rule). The comparison was made on the first version of the
synthetic faces, before they gained class-independent nuisance factors:

    downsampled pixels, PCA, logistic regression       3.7 s  acc 0.50  AP 0.58  P 0.41 R 0.75
    HOG (6 px cells), logistic regression              10 s   acc 0.58  AP 0.67  P 0.47 R 0.73
    tiny CNN (16-32-64, 24 px, 8 epochs per fold)      63 s   acc 0.53  AP 0.70  P 0.42 R 0.73
    patch dictionary, PCA, logistic regression         11 s   acc 0.68  AP 0.77  P 0.58 R 0.72

Why cleanlab for the flags. ``benchmarks/mislabel_detection.py`` gives both rules the same
out-of-fold probabilities (synthetic faces, 30% noise; "wrong": images whose given label is
wrong; "expected": the estimate above; P, R: precision and recall of the flagged set against the
wrong labels; P@500: precision among the first 500):

    images  seed  wrong  expected  rule             flagged  P      R      P@500
    4000    0     1215   1582      cleanlab         1548     0.594  0.757  0.902
                                   confident joint  1612     0.553  0.733  0.892
    4000    1     1226   1567      cleanlab         1544     0.593  0.747  0.886
                                   confident joint  1587     0.562  0.728  0.870
    20000   0     6151   6827      cleanlab         7161     0.678  0.789  0.988
                                   confident joint  6907     0.653  0.734  0.990

(out-of-fold accuracy against the true labels 0.69 / 0.68 / 0.75, AP 0.78 / 0.76 / 0.84; 4-6 s
for 4000 images, 19 s for 20000, on 2 shared cores). cleanlab is 2-4 points more precise and 2-6
points more sensitive; the number flagged stays about the same, so it is the review cap
(``--max-candidates`` of the ingest), not the rule, that makes the list reviewable. The expected
number of errors runs 10-30% above the true one here (the quick model's own mistakes count too;
cleanlab's calibrated estimate runs higher still, 1865 for seed 0 at 4000 images). On FER2013's
training images (happy, neutral, sad, surprise: 18,680 after deduplication, out-of-fold accuracy
0.64 against the given labels) cleanlab flags 4,784 (25.6%; the earlier rule 4,010) and expects
3,966 label errors. Features cost about 1 ms per image, so 100k images take a few minutes.

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
FLAG_BY = ("cleanlab", "confident_joint")
CSV_COLUMNS = ("rank", "id", "label", "suggested", "self_confidence", "suggested_confidence", "new_label")
# How the expected number of label errors is estimated (named in the manifest and the report).
EXPECTED_ERRORS_METHOD = "cleanlab.count.num_label_issues(estimation_method='off_diagonal')"

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
        candidates: indices of every flagged image, most likely mislabeled first.
        oof_accuracy: share of images whose out-of-fold argmax equals the given label.
        suggestion: (N,) the class the review suggests for each image: for ``cleanlab`` the most
            probable class other than the given one; for ``confident_joint`` the class the rule
            moves the image to (the most probable other class where the rule assigns none).
        expected_errors: estimated number of label errors in the whole set (``EXPECTED_ERRORS_METHOD``).
        flag_by: the flagging rule, one of ``FLAG_BY``.
    """

    probs: np.ndarray
    given: np.ndarray
    suggested: np.ndarray
    self_confidence: np.ndarray
    candidates: np.ndarray
    oof_accuracy: float
    suggestion: np.ndarray
    expected_errors: int
    flag_by: str = "cleanlab"


# ----------------------------------------------------------------------------------------------
# Flagging (pure functions on probabilities)


def _check_probs(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probs must be (N, K) with N == len(labels); got {probs.shape} and {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1]})")
    return probs, labels


def other_class(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each image, the most probable class other than its given label."""
    probs, labels = _check_probs(probs, labels)
    others = probs.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    return others.argmax(axis=1) if len(labels) else np.empty(0, np.int64)


def flag_label_issues(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Indices cleanlab flags (``filter_by="prune_by_noise_rate"``), lowest self-confidence first.

    Ties in self-confidence keep index order. Runs in this process (``n_jobs=1``: the classes are
    few, and no worker processes are forked from a process running torch threads).
    """
    probs, labels = _check_probs(probs, labels)
    if len(labels) == 0:
        return np.empty(0, np.int64)
    from cleanlab.filter import find_label_issues

    with warnings.catch_warnings():  # "May not flag all label issues in class k": a tiny class; fine
        warnings.filterwarnings("ignore", message="May not flag all label issues", category=UserWarning)
        mask = find_label_issues(labels, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    flagged = np.flatnonzero(mask)
    # cleanlab's own ranking (return_indices_ranked_by="self_confidence") is the same order, but not
    # stable among ties; sorting here keeps the list reproducible.
    return flagged[np.argsort(probs[flagged, labels[flagged]], kind="stable")]


def expected_label_errors(probs: np.ndarray, labels: np.ndarray) -> int:
    """Estimated number of label errors in the set: ``EXPECTED_ERRORS_METHOD``.

    It counts the quick model's own mistakes too, so it runs high where that model is weak: on the
    synthetic faces with 30% noise it estimates 1.1-1.3x the true number (see the module docstring).
    """
    probs, labels = _check_probs(probs, labels)
    if len(labels) == 0:
        return 0
    from cleanlab.count import num_label_issues

    return int(num_label_issues(labels, probs, estimation_method="off_diagonal"))


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
    """The earlier hand-written rule (``flag_by="confident_joint"``): indices of likely mislabels,
    most likely first, and the per-class thresholds.

    The rule (off-diagonal of the confident joint): an image labeled y is flagged when, among the
    classes whose probability reaches their own threshold (probs[i, j] >= t_j), the most probable
    one is some j != y. An image for which no class reaches its threshold is not flagged.

    Ranking: ``self_confidence`` (default) puts the lowest probs[i, y] first; ``normalized_margin``
    puts the most negative probs[i, y] - max_{j != y} probs[i, j] first. Ties keep index order.
    ``max_fraction`` keeps at most floor(max_fraction * N) of the top-ranked candidates.
    """
    probs, labels = _check_probs(probs, labels)
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


def flag(probs: np.ndarray, labels: np.ndarray, flag_by: str = "cleanlab") -> tuple[np.ndarray, np.ndarray]:
    """(candidates ranked, lowest self-confidence first; the suggested class of every image) by ``flag_by``."""
    if flag_by not in FLAG_BY:
        raise ValueError(f"flag_by must be one of {FLAG_BY}, got {flag_by!r}")
    probs, labels = _check_probs(probs, labels)
    other = other_class(probs, labels)
    if flag_by == "cleanlab":
        return flag_label_issues(probs, labels), other
    candidates, thresholds = rank_candidates(probs, labels)
    confident = confident_labels(probs, thresholds)
    return candidates, np.where((confident >= 0) & (confident != labels), confident, other)


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
    flag_by: str = "cleanlab",
    progress: bool | None = False,
) -> MislabelReport:
    """Out-of-fold probabilities for every image, then the flagged candidates, ranked (see ``flag``).

    ``images`` is (N, H, W, C) uint8 (C = 1 or 3; color is reduced to luma), ``labels`` (N,) ints in
    [0, num_classes). Deterministic for a given ``seed``. Every flagged image is a candidate; the
    review files show the first ones (``write_review``'s ``top``).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if flag_by not in FLAG_BY:
        raise ValueError(f"flag_by must be one of {FLAG_BY}, got {flag_by!r}")
    largest = np.bincount(labels, minlength=num_classes).max(initial=0)
    if largest < folds:
        raise ValueError(f"too few images for {folds} folds: the largest class has {largest}")

    feats = features(images, seed=seed, progress=progress)
    probs = out_of_fold_probs(feats, labels, num_classes, folds=folds, seed=seed, progress=progress)
    return report_from_probs(probs, labels, flag_by=flag_by)


def report_from_probs(probs: np.ndarray, labels: np.ndarray, *, flag_by: str = "cleanlab") -> MislabelReport:
    """The report for given out-of-fold probabilities: candidates, suggestions, expected errors."""
    probs, labels = _check_probs(probs, labels)
    candidates, suggestion = flag(probs, labels, flag_by)
    suggested = probs.argmax(axis=1)
    return MislabelReport(
        probs=probs,
        given=labels,
        suggested=suggested,
        self_confidence=probs[np.arange(len(labels)), labels],
        candidates=candidates,
        oof_accuracy=float(np.mean(suggested == labels)) if len(labels) else 0.0,
        suggestion=suggestion,
        expected_errors=expected_label_errors(probs, labels),
        flag_by=flag_by,
    )


# ----------------------------------------------------------------------------------------------
# Review files


def _review_rows(report: MislabelReport, ids: Sequence[str], classes: Sequence[str], top: int) -> list[list]:
    rows = []
    for rank, i in enumerate(report.candidates[:top], start=1):
        j = int(report.suggestion[i])
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
        j = int(report.suggestion[i])
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
    top: int = 500,
    sheet: int = 64,
) -> dict[str, Path]:
    """Write ``mislabels.csv`` (the ``top`` first candidates) and ``mislabels.png`` (the first
    ``min(top, sheet)``).

    CSV columns: rank, id, label (given class name), suggested (the class the review suggests),
    self_confidence (probability of the given label), suggested_confidence (probability of the
    suggested one), new_label (empty: fill in a class name or ``drop``; the edited file is a valid
    relabels.csv). Each file is written to a temp name and renamed into place. Returns
    {"csv": path, "png": path}.
    """
    if len(ids) != len(report.given) or len(images) != len(report.given):
        raise ValueError(f"report has {len(report.given)} images but {len(ids)} ids and {len(images)} images")
    if top < 0:
        raise ValueError(f"top must be at least 0, got {top}")
    out = Path(out_dir)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    writer.writerows(_review_rows(report, ids, classes, top))
    csv_path = atomic.write_text(out / "mislabels.csv", buf.getvalue())
    png = io.BytesIO()
    _contact_sheet(report, images, classes, min(top, sheet)).save(png, format="PNG")
    png_path = atomic.write_bytes(out / "mislabels.png", png.getvalue())
    return {"csv": csv_path, "png": png_path}
