"""Choose the near-duplicate threshold: pHash distance vs recall of copies and wrongly grouped faces.

Two modes.

Synthetic ground truth (the default): generates the embedded default set (``fer data synth``) and
uses its record of which image is an injected copy of which::

    .venv/bin/python benchmarks/dedup_threshold.py --n 4000 --seed 0

For each Hamming threshold it reports the groups found (exact copies found by pixel hash always
count), recall (injected copies grouped with their original), precision (share of multi-image
groups that hold one family only) and the distinct faces wrongly grouped (images with no injected
copy that land in a group: a re-split ingest would remove all but one of each group). It also
prints the nearest-neighbour pHash distance between distinct originals and the distance of each
kind of near copy to its original.

Any folder of real face images (how the default is confirmed on real data)::

    .venv/bin/python benchmarks/dedup_threshold.py --images /data/fer2013 --n 4000 --copies 300

Takes up to ``--n`` images found anywhere under the folder (any layout: class folders, split
folders, flat; decoded to 48x48 grayscale as ``fer data ingest`` does; pixel-identical files are
dropped so the originals are distinct), makes one transformed copy of ``--copies`` of them per
kind of re-upload (``fer_core.data.synth.NEAR_COPY_KINDS``: 1-px shift, brightness, contrast,
noise, JPEG 80-95, 1-px rescale; plus ``jpeg75``, a PIL JPEG re-encode at quality 75, and ``mixed``,
one or two kinds at random as the synthetic set injects them) and reports per threshold the recall
of those copies (pHash distance to their original within the threshold), the false pairs among
the originals and the originals wrongly grouped (in a group of two or more). The last line names
the largest threshold that keeps wrongly grouped originals under ``--budget`` (0.5 %). A real
data set has real duplicates of its own, so the false pairs are an upper bound: ``--pairs
pairs.csv`` writes them (both paths and the distance) for a look. In a ``fer data synth`` folder
the injected copies listed in its ``truth.csv`` are left out of the originals.

pHash sets exactly 32 of its 64 bits (those above the median of the 64 DCT coefficients), so
distances are even and odd thresholds behave like the even one below; the tables step by 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EXTRA_KINDS = ("jpeg75", "mixed")


def _hist(values: np.ndarray) -> str:
    u, c = np.unique(np.asarray(values, dtype=np.int64), return_counts=True)
    return ", ".join(f"{int(a)}: {int(b)}" for a, b in zip(u, c, strict=True))


def nearest_distances(ph: np.ndarray) -> np.ndarray:
    """Distance from each code to its nearest other code (brute force, blocked; fine for 10^4-10^5)."""
    bits = np.unpackbits(ph.astype(np.uint64).view(np.uint8).reshape(-1, 8), axis=1).astype(np.float32)
    signed = 2.0 * bits - 1.0
    out = np.empty(len(ph), dtype=np.int64)
    for lo in range(0, len(ph), 2048):
        d = np.rint((64.0 - signed[lo : lo + 2048] @ signed.T) / 2.0)
        d[np.arange(len(d)), np.arange(lo, lo + len(d))] = 99
        out[lo : lo + len(d)] = d.min(axis=1)
    return out


def make_copy(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One transformed copy of a (H, W) uint8 image: a NEAR_COPY_KINDS kind, jpeg75 or mixed."""
    from PIL import Image

    from fer_core.data.synth import near_copy

    if kind == "mixed":
        return near_copy(img, rng)
    if kind == "jpeg75":
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=75)
        return np.asarray(Image.open(buf).convert("L"), dtype=np.uint8)
    return near_copy(img, rng, (kind,))


def synth_mode(args) -> None:
    from fer_core.data.dedup import duplicate_groups
    from fer_core.data.near_pairs import hamming
    from fer_core.data.phash import exact_digests, phash_batch
    from fer_core.data.synth import NEAR_COPY_KINDS, SynthConfig, generate

    s = generate(SynthConfig(n=args.n, seed=args.seed))
    images = s.images[..., None]
    ph = phash_batch(images)
    dig = exact_digests(images)
    copies = np.flatnonzero(s.dup_of >= 0)
    d_true = hamming(ph[copies], ph[s.dup_of[copies]])
    print(
        f"{len(s)} images (seed {args.seed}), {len(copies)} injected copies "
        f"({(s.dup_kind == 'exact').sum()} exact, {(s.dup_kind == 'near').sum()} near)"
    )
    near = s.dup_kind[copies] == "near"
    print(f"pHash distance of injected near copies to their original: {{{_hist(d_true[near])}}}")
    originals = np.flatnonzero(s.dup_of < 0)
    nn = nearest_distances(ph[originals])
    print(
        f"nearest-neighbour distance between the {len(originals)} distinct originals: {{{_hist(nn)}}}; "
        f"1/5/50 % quantiles {np.percentile(nn, 1):g}/{np.percentile(nn, 5):g}/{np.percentile(nn, 50):g}"
    )
    rng = np.random.default_rng([args.seed, 7])
    sample = rng.choice(originals, min(args.copies, len(originals)), replace=False)
    print(f"distance of one fresh copy of each of {len(sample)} originals, by kind:")
    for kind in NEAR_COPY_KINDS + EXTRA_KINDS:
        made = np.stack([make_copy(s.images[i], kind, rng) for i in sample])
        d = hamming(phash_batch(made[..., None]), ph[sample])
        print(f"  {kind:>10}: mean {d.mean():4.1f}  {{{_hist(d)}}}")
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
        # precision over groups: multi-image groups whose members all belong to one family
        fam_ok = np.array([len(set(root[group == g])) == 1 for g in np.flatnonzero(sizes > 1)])
        print(
            f"{t:>4} {int((sizes > 1).sum()):>7} {found.mean():>7.3f} {fam_ok.mean() if len(fam_ok) else 1:>9.3f} "
            f"{int(wrong.sum()):>23} ({100 * wrong.mean():.1f} %)"
        )


def images_mode(args) -> None:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from fer_core.data.images import IMAGE_SUFFIXES, decode_files
    from fer_core.data.near_pairs import hamming, near_duplicate_pairs
    from fer_core.data.phash import exact_digests, phash_batch
    from fer_core.data.synth import NEAR_COPY_KINDS

    root = Path(args.images)
    if not root.is_dir():
        sys.exit(f"--images: {root} is not a folder")
    paths = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not paths:
        sys.exit(f"--images: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    truth = root / "truth.csv"
    if truth.is_file():  # a `fer data synth` folder: leave its injected copies out
        with open(truth, newline="") as fh:
            injected = {root / r["file"] for r in csv.DictReader(fh) if r.get("dup_of")}
        paths = [p for p in paths if p not in injected]
        print(f"{truth}: left out {len(injected)} injected copies")
    rng = np.random.default_rng(args.seed)
    if len(paths) > args.n:
        paths = [paths[i] for i in np.sort(rng.choice(len(paths), args.n, replace=False))]
    dec = decode_files([str(p) for p in paths], args.size, "grayscale", progress=False)
    paths = [paths[i] for i in dec.ok]
    images = dec.images
    _, first = np.unique(exact_digests(images), return_index=True)
    first = np.sort(first)
    n_exact = len(images) - len(first)
    images, paths = images[first], [paths[i] for i in first]
    n = len(images)
    if n < 2:
        sys.exit(f"--images: need at least 2 distinct readable images under {root}, found {n}")
    print(
        f"{root}: {n} distinct images at {args.size}x{args.size} grayscale "
        f"({len(dec.failures)} unreadable, {n_exact} pixel-identical copies dropped)"
    )
    ph = phash_batch(images)
    nn = nearest_distances(ph)
    print(
        f"nearest-neighbour pHash distance between the originals: {{{_hist(nn)}}}; "
        f"1/5/50 % quantiles {np.percentile(nn, 1):g}/{np.percentile(nn, 5):g}/{np.percentile(nn, 50):g}"
    )

    kinds = NEAR_COPY_KINDS + EXTRA_KINDS
    sample = rng.choice(n, min(args.copies, n), replace=False)
    dist = {}
    for kind in kinds:
        made = np.stack([make_copy(images[i, :, :, 0], kind, rng) for i in sample])
        dist[kind] = hamming(phash_batch(made[..., None]), ph[sample])
    every = np.concatenate(list(dist.values()))
    print(f"{len(sample)} originals copied once per kind ({', '.join(kinds)}): {len(every)} copies")

    pi, pj, pd = near_duplicate_pairs(ph, args.max)
    thresholds = list(range(0, args.max + 1, 2))
    print(f"\n{'bits':>4} {'recall':>7} {'mixed':>6} {'false pairs':>11} {'originals wrongly grouped':>26}")
    chosen = None
    for t in thresholds:
        m = pd <= t
        graph = coo_matrix((np.ones(int(m.sum()), np.int8), (pi[m], pj[m])), shape=(n, n))
        _, group = connected_components(graph, directed=False)
        wrong = int((np.bincount(group)[group] > 1).sum())
        if wrong <= args.budget * n:
            chosen = t
        print(
            f"{t:>4} {np.mean(every <= t):>7.3f} {np.mean(dist['mixed'] <= t):>6.3f} {int(m.sum()):>11} "
            f"{wrong:>17} ({100 * wrong / n:.1f} %)"
        )
    print("\nrecall by kind of copy (rows) and threshold (columns); mean distance")
    print(f"{'':>10} " + " ".join(f"{t:>5}" for t in thresholds) + "   mean")
    for kind in kinds:
        print(
            f"{kind:>10} "
            + " ".join(f"{np.mean(dist[kind] <= t):>5.2f}" for t in thresholds)
            + f"  {dist[kind].mean():5.1f}"
        )
    order = np.lexsort((pj, pi, pd))
    if len(order):
        print("\nclosest pairs among the originals (duplicates in the source, or faces pHash cannot tell apart):")
        for k in order[:10]:
            print(f"  {int(pd[k]):>2} bits  {paths[pi[k]].relative_to(root)}  {paths[pj[k]].relative_to(root)}")
    if args.pairs:
        with open(args.pairs, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["distance", "a", "b"])
            for k in order:
                w.writerow([int(pd[k]), paths[pi[k]], paths[pj[k]]])
        print(f"wrote {len(order)} pairs within {args.max} bits to {args.pairs}")
    if chosen is None:
        print(
            f"\nno threshold keeps wrongly grouped originals under {100 * args.budget:g} % of {n} "
            "(are there duplicates in the source? see the closest pairs, --pairs)"
        )
    else:
        print(
            f"\nlargest threshold with wrongly grouped originals <= {100 * args.budget:g} % of {n}: "
            f"{chosen} bits (recall of all copies {np.mean(every <= chosen):.3f}, "
            f"mixed re-uploads {np.mean(dist['mixed'] <= chosen):.3f})"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--images", metavar="PATH", help="a folder of real face images (any layout); default: the synthetic set"
    )
    ap.add_argument("--n", type=int, default=4000, help="images to generate, or to sample from --images")
    ap.add_argument("--copies", type=int, default=300, help="originals to copy (once per kind of copy)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=48, help="--images: side the images are decoded to")
    ap.add_argument("--max", type=int, default=16, help="largest threshold to try")
    ap.add_argument(
        "--budget",
        type=float,
        default=0.005,
        help="--images: share of originals that may be wrongly grouped (default 0.005)",
    )
    ap.add_argument("--pairs", metavar="CSV", help="--images: write the pairs among originals within --max")
    args = ap.parse_args(argv)
    if args.images:
        images_mode(args)
    else:
        synth_mode(args)


if __name__ == "__main__":
    main()
