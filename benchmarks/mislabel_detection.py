"""How well the mislabel search finds the synthetic set's injected label noise (its ground truth is known).

    .venv/bin/python benchmarks/mislabel_detection.py                 # 4000 images, 30% noise, seed 0
    .venv/bin/python benchmarks/mislabel_detection.py --n 20000 --seeds 0,1
    .venv/bin/python benchmarks/mislabel_detection.py --data DATA     # a data set written by fer data ingest

Per seed: wall time of the out-of-fold probabilities (features + 5-fold logistic regression), the
accuracy of the out-of-fold argmax against the *true* labels (how well the quick model sees the faces),
the average precision of low self-confidence as a noise detector over all images, the number of
wrong labels and the expected number of label errors (cleanlab's ``num_label_issues``, off-diagonal
and calibrated). Then, for both flagging rules given the *same* probabilities (``cleanlab``:
``find_label_issues(filter_by="prune_by_noise_rate")``, the default; ``confident_joint``: the earlier
hand-written rule): how many images are flagged, precision / recall of the flagged set against the
images whose given label is wrong, and precision among the first 500 (what the review file lists).
The default data set's injected copies are left in (as an ingest sees them before deduplication).

``--data`` runs the same search on every image of a written data set (all splits), whose true labels
are unknown: it prints the counts only (flagged by each rule, expected errors, overlap).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_core.data.mislabels import (  # noqa: E402
    FLAG_BY,
    expected_label_errors,
    features,
    flag,
    out_of_fold_probs,
)

TOP = 500


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """AP of ranking by ``scores`` (highest first) for the ``positive`` mask."""
    order = np.argsort(-scores, kind="stable")
    hits = positive[order]
    if not hits.any():
        return float("nan")
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].mean())


def oof(images: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    probs = out_of_fold_probs(features(images, seed=0), labels, num_classes, seed=0)
    return probs, time.perf_counter() - t0


def calibrated(probs: np.ndarray, labels: np.ndarray) -> int:
    from cleanlab.count import num_label_issues

    return int(num_label_issues(labels, probs, estimation_method="off_diagonal_calibrated"))


def synthetic(args) -> None:
    from fer_core.data.synth import SynthConfig, generate

    print(
        f"{'seed':>4} {'images':>7} {'noisy':>6} {'expected':>8} {'calib.':>7} {'time':>7} {'acc(true)':>9} "
        f"{'AP':>6}  {'rule':<16} {'flagged':>7} {'precision':>9} {'recall':>7} {f'P@{TOP}':>6}"
    )
    for seed in (int(s) for s in args.seeds.split(",")):
        s = generate(SynthConfig(n=args.n, label_noise=args.noise, seed=seed))
        noisy = s.labels != s.true_labels
        probs, wall = oof(s.images[..., None], s.labels, len(s.classes))
        own = probs[np.arange(len(s.labels)), s.labels]
        head = (
            f"{seed:>4} {len(s.labels):>7} {int(noisy.sum()):>6} {expected_label_errors(probs, s.labels):>8} "
            f"{calibrated(probs, s.labels):>7} {wall:>6.1f}s {np.mean(probs.argmax(1) == s.true_labels):>9.3f} "
            f"{average_precision(-own, noisy):>6.3f}"
        )
        for k, rule in enumerate(FLAG_BY):
            cand, _ = flag(probs, s.labels, rule)
            flagged = np.zeros(len(s.labels), bool)
            flagged[cand] = True
            precision = noisy[flagged].mean() if flagged.any() else float("nan")
            recall = flagged[noisy].mean() if noisy.any() else float("nan")
            top = noisy[cand[:TOP]].mean() if len(cand) else float("nan")
            print(
                f"{head if k == 0 else ' ' * len(head)}  {rule:<16} {len(cand):>7} {precision:>9.3f} "
                f"{recall:>7.3f} {top:>6.3f}"
            )


def real(args) -> None:
    from fer_core.data.loader import load_split
    from fer_core.data.readers.base import SPLITS

    parts = [load_split(args.data, split) for split in SPLITS]
    images = np.concatenate([p.images for p in parts])
    labels = np.concatenate([p.labels for p in parts])
    classes = parts[0].classes
    probs, wall = oof(images, labels, len(classes))
    n = len(labels)
    print(
        f"{args.data}: {n} images, classes {', '.join(classes)}; out-of-fold probabilities in {wall:.1f}s, "
        f"accuracy against the given labels {np.mean(probs.argmax(1) == labels):.3f}"
    )
    print(
        f"expected label errors: {expected_label_errors(probs, labels)} (off-diagonal), "
        f"{calibrated(probs, labels)} (calibrated)"
    )
    flagged = {rule: flag(probs, labels, rule)[0] for rule in FLAG_BY}
    for rule, cand in flagged.items():
        print(f"  {rule:<16} flags {len(cand):>6} ({len(cand) / n:.1%})")
    a, b = (set(c.tolist()) for c in flagged.values())
    top_a, top_b = (set(c[:TOP].tolist()) for c in flagged.values())
    print(f"  flagged by both: {len(a & b)}; of the first {TOP}, shared: {len(top_a & top_b)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--noise", type=float, default=0.3, help="share of wrong labels in the synthetic set")
    ap.add_argument("--seeds", default="0", help="comma-separated data set seeds")
    ap.add_argument("--data", default=None, help="a data set written by 'fer data ingest' instead (no ground truth)")
    args = ap.parse_args()
    real(args) if args.data else synthetic(args)


if __name__ == "__main__":
    main()
