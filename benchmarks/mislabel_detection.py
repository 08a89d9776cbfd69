"""How well the mislabel search finds the synthetic set's injected label noise (its ground truth is known).

    .venv/bin/python benchmarks/mislabel_detection.py                 # 4000 images, 30% noise, seed 0
    .venv/bin/python benchmarks/mislabel_detection.py --n 20000 --seeds 0,1

Per seed: wall time of ``find_mislabels`` (features + 5-fold out-of-fold logistic regression), the
accuracy of the out-of-fold argmax against the *true* labels (how well the quick model sees the faces),
the average precision of low self-confidence as a noise detector over all images, and precision /
recall of the flagged candidate set against the images whose given label is wrong. The default data
set's injected copies are left in (as an ingest sees them before deduplication).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_core.data.mislabels import find_mislabels  # noqa: E402
from fer_core.data.synth import SynthConfig, generate  # noqa: E402


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """AP of ranking by ``scores`` (highest first) for the ``positive`` mask."""
    order = np.argsort(-scores, kind="stable")
    hits = positive[order]
    if not hits.any():
        return float("nan")
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--noise", type=float, default=0.3, help="share of wrong labels in the synthetic set")
    ap.add_argument("--seeds", default="0", help="comma-separated data set seeds")
    args = ap.parse_args()
    print(
        f"{'seed':>4} {'images':>7} {'noisy':>6} {'time':>7} {'oof acc (true)':>15} {'AP':>6} "
        f"{'flagged':>8} {'precision':>9} {'recall':>7}"
    )
    for seed in (int(s) for s in args.seeds.split(",")):
        s = generate(SynthConfig(n=args.n, label_noise=args.noise, seed=seed))
        noisy = s.labels != s.true_labels
        t0 = time.perf_counter()
        rep = find_mislabels(s.images[..., None], s.labels, len(s.classes), seed=0)
        wall = time.perf_counter() - t0
        flagged = np.zeros(len(s.labels), bool)
        flagged[rep.candidates] = True
        precision = noisy[flagged].mean() if flagged.any() else float("nan")
        recall = flagged[noisy].mean() if noisy.any() else float("nan")
        ap = average_precision(-rep.self_confidence, noisy)
        print(
            f"{seed:>4} {len(s.labels):>7} {int(noisy.sum()):>6} {wall:>6.1f}s "
            f"{np.mean(rep.suggested == s.true_labels):>15.3f} {ap:>6.3f} "
            f"{int(flagged.sum()):>8} {precision:>9.3f} {recall:>7.3f}"
        )


if __name__ == "__main__":
    main()
