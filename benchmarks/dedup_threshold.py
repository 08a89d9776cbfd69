"""Choose the near-duplicate threshold: pHash distance vs precision/recall on injected copies.

    .venv/bin/python benchmarks/dedup_threshold.py --n 4000

Uses the synthetic set's ground truth (which image is a copy of which). For each Hamming
threshold it reports the pairs found (exact copies found by pixel hash are always counted),
precision (found pairs that are true copy pairs), recall (true copy pairs found) and how many
distinct faces would be removed by mistake (images with no true copy that land in a group).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max", type=int, default=16, help="largest threshold to try")
    args = ap.parse_args()

    from fer_core.data.dedup import duplicate_groups
    from fer_core.data.hashing import exact_digests, hamming, phash_batch
    from fer_core.data.synth import SynthConfig, generate

    s = generate(SynthConfig(n=args.n, seed=args.seed))
    images = s.images[..., None]
    ph = phash_batch(images)
    dig = exact_digests(images)
    copies = np.flatnonzero(s.dup_of >= 0)
    d_true = hamming(ph[copies], ph[s.dup_of[copies]])
    print(f"{len(s)} images, {len(copies)} injected copies "
          f"({(s.dup_kind == 'exact').sum()} exact, {(s.dup_kind == 'near').sum()} near)")
    near = s.dup_kind[copies] == "near"
    print("pHash distance of near copies to their original:",
          dict(zip(*np.unique(d_true[near], return_counts=True))))
    # the family of each image: its original's index (copies of copies resolve to the root)
    root = np.arange(len(s))
    root[copies] = s.dup_of[copies]
    has_copy = np.zeros(len(s), bool)
    has_copy[copies] = True
    has_copy[s.dup_of[copies]] = True
    print(f"{'bits':>4} {'groups':>7} {'recall':>7} {'precision':>9} {'distinct faces wrongly grouped':>31}")
    for t in range(0, args.max + 1, 2):
        group, _ = duplicate_groups(dig, ph, t)
        found = group[copies] == group[s.dup_of[copies]]
        sizes = np.bincount(group)
        in_group = sizes[group] > 1
        wrong = in_group & ~has_copy
        # precision over grouped images: grouped images that belong with a true family member
        fam_ok = np.array([len(set(root[group == g])) == 1 for g in np.flatnonzero(sizes > 1)])
        print(f"{t:>4} {int((sizes > 1).sum()):>7} {found.mean():>7.3f} {fam_ok.mean() if len(fam_ok) else 1:>9.3f} "
              f"{int(wrong.sum()):>31}")


if __name__ == "__main__":
    main()
