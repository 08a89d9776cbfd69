"""Choose the near-duplicate threshold: pHash distance vs recall of copies and wrongly grouped faces.

Three sources of faces.

Synthetic ground truth (the default): generates the embedded default set (``fer data synth``) and
uses its record of which image is an injected copy of which::

    .venv/bin/python benchmarks/dedup_threshold.py --n 4000 --seed 0

For each Hamming threshold it reports the groups found (exact copies found by pixel hash always
count), recall (injected copies grouped with their original), precision (share of multi-image
groups that hold one family only) and the distinct faces wrongly grouped (images with no injected
copy that land in a group: a re-split ingest would remove all but one of each group), by the
project's grouping and by single linkage. Then the copy table below, over the set's originals.

Real faces: scikit-image's 100 face crops from Labeled Faces in the Wild (``--lfw``:
``skimage.data.lfw_subset()[:100]``, 25x25 gray, decoded to 48x48 as ``fer data ingest`` decodes a
file) or any folder of face images (``--images``)::

    .venv/bin/python benchmarks/dedup_threshold.py --lfw --pairs-png lfw_pairs.png
    .venv/bin/python benchmarks/dedup_threshold.py --images /data/fer2013 --n 4000 --copies 300 \\
        --pairs pairs.csv --pairs-png pairs.png

``--images`` takes up to ``--n`` images found anywhere under the folder (any layout: class folders,
split folders, flat; decoded to 48x48 grayscale as ``fer data ingest`` does; pixel-identical files
are dropped so the originals are distinct; in a ``fer data synth`` folder the injected copies
listed in its ``truth.csv`` are left out).

The copy table (real faces, and the synthetic originals): ``--copies`` of the originals get one
transformed copy per kind of re-upload (``COPY_KINDS``: ``fer_core.data.synth.NEAR_COPY_KINDS``,
i.e. 1-px shift, brightness 2-6 levels, contrast 4-10 %, noise, JPEG 80-95, 1-px rescale; plus
``crop``, a 1-2 px border (2-4 %) cut from each edge and resized back, ``jpeg75``, a PIL JPEG
re-encode at quality 75, and ``mixed``, one or two NEAR_COPY_KINDS at random as the synthetic set
injects them). Originals and copies go into one pool that is grouped at each threshold by
``fer_core.data.dedup.duplicate_groups``, as ingest groups. Per threshold: the recall of each kind
(the copy is in its original's group), the false pairs (originals within the threshold of each
other), the originals wrongly grouped (in a group with another original) by that grouping and by
single linkage (connected components of "within the threshold": a chain A~B~C puts A and C in
one group however far apart they are), and the largest group (originals in it). Then the pHash
distance of each kind of copy to its original, the closest pairs, and the largest threshold that
keeps wrongly grouped originals (project grouping) under ``--budget``.

A real data set has real duplicates of its own, so its false pairs are an upper bound: look at
them. ``--pairs pairs.csv`` writes every pair of originals within ``--max`` bits (distance, both
names, the smallest threshold at which each grouping puts them together); ``--pairs-png`` draws
a contact sheet: one row per distance with up to ``--per-row`` pairs at exactly that distance, and
a last row of pairs that single linkage puts in one group at ``--chain`` bits although they are
further apart.

pHash sets exactly 32 of its 64 bits (those above the median of the 64 DCT coefficients), so
distances are even and odd thresholds behave like the even one below; the tables step by 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EXTRA_KINDS = ("crop", "jpeg75", "mixed")
LFW_FACES = 100  # skimage.data.lfw_subset(): 100 face crops, then 100 non-faces


def copy_kinds() -> tuple[str, ...]:
    from fer_core.data.synth import NEAR_COPY_KINDS

    return NEAR_COPY_KINDS + EXTRA_KINDS


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
    """One transformed copy of a (H, W) uint8 image: a NEAR_COPY_KINDS kind, crop, jpeg75 or mixed."""
    from PIL import Image

    from fer_core.data.synth import near_copy

    if kind == "mixed":
        return near_copy(img, rng)
    if kind == "jpeg75":
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=75)
        return np.asarray(Image.open(buf).convert("L"), dtype=np.uint8)
    if kind == "crop":  # a re-upload cut a little tighter, resized back as ingest resizes (LANCZOS)
        h, w = img.shape
        top, bottom, left, right = rng.integers(1, max(1, round(0.05 * min(h, w))) + 1, size=4)
        cut = Image.fromarray(img[top : h - bottom, left : w - right])
        out = np.asarray(cut.resize((w, h), Image.Resampling.LANCZOS), dtype=np.uint8).copy()
        if np.array_equal(out, img):
            out[0, 0] = out[0, 0] + 1 if out[0, 0] < 255 else 254
        return out
    return near_copy(img, rng, (kind,))


def lfw_faces(size: int) -> np.ndarray:
    """scikit-image's 100 LFW face crops as (100, size, size) uint8, decoded as ingest decodes a file
    (a float image in 0..1 scaled to 8 bits, then resized with LANCZOS: fer_core.data.images.from_pil)."""
    from PIL import Image
    from skimage.data import lfw_subset

    from fer_core.data.images import from_pil

    faces = lfw_subset()[:LFW_FACES].astype(np.float32)
    return np.stack([from_pil(Image.fromarray(f, mode="F"), size, "grayscale")[..., 0] for f in faces])


def single_linkage(digests: np.ndarray, pairs: tuple[np.ndarray, ...], max_distance: int) -> np.ndarray:
    """Connected components of "pixel-identical or within max_distance" (``pairs`` from
    near_duplicate_pairs at a distance >= max_distance): the grouping that chains."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(digests)
    _, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
    exact_j = first[inverse]
    keep = exact_j != np.arange(n)
    pi, pj, pd = pairs
    m = pd <= max_distance
    rows = np.concatenate([np.arange(n)[keep], pi[m]])
    cols = np.concatenate([exact_j[keep], pj[m]])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _wrongly_grouped(group: np.ndarray, n: int) -> tuple[int, int]:
    """Originals (the first ``n`` entries) in a group with another original; the most in one group."""
    count = np.bincount(group[:n], minlength=int(group.max()) + 1)
    return int((count[group[:n]] > 1).sum()), int(count.max())


def _chained_pairs(group: np.ndarray, ph: np.ndarray, max_distance: int, rng: np.random.Generator):
    """Pairs of originals (indices into ``ph``) in one group although more than max_distance apart."""
    from fer_core.data.near_pairs import hamming

    out = []
    for g in np.flatnonzero(np.bincount(group) > 1):
        idx = np.flatnonzero(group == g)
        if len(idx) > 300:  # a giant component: a sample of its members is enough to show it
            idx = np.sort(rng.choice(idx, 300, replace=False))
        d = hamming(ph[idx][:, None], ph[idx][None, :])
        a, b = np.nonzero(np.triu(d > max_distance, 1))
        out += [(int(d[i, j]), int(idx[i]), int(idx[j])) for i, j in zip(a, b, strict=True)]
    return out


class CopyStudy(NamedTuple):  # not a dataclass: the tests load this file without registering it
    thresholds: list[int]
    dist: dict[str, np.ndarray]  # pHash distance of each copy to its original, by kind
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray]  # originals within --max: (i, j, distance)
    grouped_from: dict[str, np.ndarray]  # per pair, the smallest threshold grouping it (-1: none)
    chained: list[tuple[int, int, int]]  # (distance, i, j) single-linkage pairs at --chain bits
    recall: dict[int, dict[str, float]]  # per threshold: kind (and "all") -> share grouped with the original
    wrong: dict[int, int]  # originals wrongly grouped by duplicate_groups, per threshold


def copy_study(images: np.ndarray, args, rng: np.random.Generator) -> CopyStudy:
    """Copy ``args.copies`` of the (n, H, W) originals once per kind, group originals and copies at
    each threshold, print the table (module docstring) and return what the pair outputs need."""
    from fer_core.data.dedup import duplicate_groups
    from fer_core.data.near_pairs import hamming, near_duplicate_pairs
    from fer_core.data.phash import exact_digests, phash_batch

    n = len(images)
    kinds = copy_kinds()
    sample = np.sort(rng.choice(n, min(args.copies, n), replace=False))
    copies = [np.stack([make_copy(images[i], kind, rng) for i in sample]) for kind in kinds]
    pool = np.concatenate([images, *copies])[..., None]
    owner = np.concatenate([np.arange(n), np.tile(sample, len(kinds))])
    kind_of = np.concatenate([np.full(n, -1), np.repeat(np.arange(len(kinds)), len(sample))])
    ph, dig = phash_batch(pool), exact_digests(pool)
    dist = {k: hamming(ph[kind_of == c], ph[owner[kind_of == c]]) for c, k in enumerate(kinds)}
    print(f"{len(sample)} originals copied once per kind: {len(pool) - n} copies; pHash distance to the original:")
    for k in kinds:
        print(f"  {k:>10}: mean {dist[k].mean():4.1f}  {{{_hist(dist[k])}}}")

    thresholds = list(range(0, args.max + 1, 2))
    pool_pairs = near_duplicate_pairs(ph, max(args.max, args.chain))
    orig = pool_pairs[1] < n  # pairs are i < j and the originals come first
    pi, pj, pd = (a[orig] for a in pool_pairs)
    grouped_from = {"project": np.full(len(pi), -1), "single_linkage": np.full(len(pi), -1)}
    names = {"brightness": "bright", "contrast": "contr"}
    head = " ".join(f"{names.get(k, k):>7}" for k in kinds)
    print(
        "\nrecall: copy in its original's group (fer_core.data.dedup.duplicate_groups, as ingest groups);\n"
        "wrongly grouped: originals in a group with another original; largest: most originals in one group"
    )
    print(
        f"{'bits':>4} {head} {'all':>6} {'pairs':>6}  {'wrongly grouped':>14} {'largest':>7}"
        f"  {'single linkage':>14} {'largest':>7}"
    )
    chained: list[tuple[int, int, int]] = []
    recall_by_t: dict[int, dict[str, float]] = {}
    wrong: dict[int, int] = {}
    for t in thresholds + ([args.chain] if args.chain not in thresholds else []):
        groups = {"project": duplicate_groups(dig, ph, t)[0], "single_linkage": single_linkage(dig, pool_pairs, t)}
        if t == args.chain:
            chained = _chained_pairs(groups["single_linkage"][:n], ph[:n], t, rng)
        if t not in thresholds:
            continue
        for name, group in groups.items():
            new = (grouped_from[name] < 0) & (group[pi] == group[pj])
            grouped_from[name][new] = t
        found = groups["project"][n:] == groups["project"][owner[n:]]
        recall = [found[kind_of[n:] == c].mean() for c in range(len(kinds))]
        (wp, lp), (ws, ls) = (_wrongly_grouped(groups[k], n) for k in ("project", "single_linkage"))
        recall_by_t[t] = {"all": float(found.mean()), **dict(zip(kinds, map(float, recall), strict=True))}
        wrong[t] = wp
        print(
            f"{t:>4} " + " ".join(f"{r:>7.3f}" for r in recall) + f" {found.mean():>6.3f} {int((pd <= t).sum()):>6}"
            f"  {wp:>7} {100 * wp / n:>5.1f}% {lp:>7}  {ws:>7} {100 * ws / n:>5.1f}% {ls:>7}"
        )
    return CopyStudy(thresholds, dist, (pi, pj, pd), grouped_from, chained, recall_by_t, wrong)


def report_pairs(study: CopyStudy, names: list[str], images: np.ndarray, args, rng: np.random.Generator) -> None:
    """The closest pairs among the originals; --pairs CSV, --pairs-png contact sheet; the budget line."""
    from fer_core.atomic import write_bytes, write_text

    pi, pj, pd = study.pairs
    within = pd <= args.max
    order = np.flatnonzero(within)[np.lexsort((pj[within], pi[within], pd[within]))]
    if len(order):
        print("\nclosest pairs among the originals (duplicates in the source, or faces pHash cannot tell apart):")
        for k in order[:10]:
            print(f"  {int(pd[k]):>2} bits  {names[pi[k]]}  {names[pj[k]]}")
    far = [c for c in study.chained if c[0] > args.chain]
    print(
        f"single linkage at {args.chain} bits puts {len(far)} pairs of originals more than {args.chain} bits apart "
        f"in one group (farthest {max((c[0] for c in far), default=0)} bits)"
    )
    if args.pairs:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["distance", "a", "b", "grouped_from_bits", "single_linkage_from_bits"])
        for k in order:
            fp, fs = (int(study.grouped_from[g][k]) for g in ("project", "single_linkage"))
            w.writerow([int(pd[k]), names[pi[k]], names[pj[k]], fp if fp >= 0 else "", fs if fs >= 0 else ""])
        write_text(args.pairs, buf.getvalue())
        print(f"wrote {len(order)} pairs within {args.max} bits to {args.pairs}")
    if args.pairs_png:
        rows = []
        for t in study.thresholds:
            at = np.flatnonzero(pd == t)
            pick = np.sort(rng.choice(at, min(args.per_row, len(at)), replace=False))
            rows.append((f"{t} bits ({len(at)})", [(int(pi[k]), int(pj[k])) for k in pick]))
        pick = rng.permutation(len(far))[: args.per_row]
        chained = sorted((far[k] for k in pick), reverse=True)
        rows.append((f"chained {args.chain} ({len(far)})", [(i, j) for _, i, j in chained]))
        write_bytes(args.pairs_png, contact_sheet(rows, names, images))
        print(f"wrote a contact sheet of pairs by distance to {args.pairs_png}")
    n = len(images)
    chosen = None
    for t in study.thresholds:  # the thresholds from 0 up, while each stays within the budget
        if study.wrong[t] > args.budget * n:
            break
        chosen = t
    if chosen is None:
        print(
            f"\nno threshold keeps wrongly grouped originals under {100 * args.budget:g} % of {n} "
            "(are there duplicates in the source? see the closest pairs, --pairs)"
        )
        return
    print(
        f"\nlargest threshold with wrongly grouped originals <= {100 * args.budget:g} % of {n}: "
        f"{chosen} bits (recall of all copies {study.recall[chosen]['all']:.3f}, "
        f"mixed re-uploads {study.recall[chosen]['mixed']:.3f})"
    )


def contact_sheet(rows: list[tuple[str, list[tuple[int, int]]]], names: list[str], images: np.ndarray) -> bytes:
    """A PNG: one labelled row per entry of ``rows``, each pair of images side by side, enlarged 2x,
    with the two images' short names (class folder, or the name) above them."""
    from PIL import Image, ImageDraw

    side = 2 * images.shape[1]
    label_w, pair_w, gap, cap = 130, 2 * side + 2, 10, 12
    width = label_w + max(1, max(len(r) for _, r in rows)) * (pair_w + gap)
    height = len(rows) * (cap + side + gap)
    sheet = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(sheet)

    def short(name: str) -> str:
        p = Path(name)
        return (p.parent.name or p.stem)[:14]

    for r, (label, pairs) in enumerate(rows):
        y = r * (cap + side + gap)
        draw.text((4, y + cap + side // 2 - 6), label, fill=0)
        for c, (i, j) in enumerate(pairs):
            x = label_w + c * (pair_w + gap)
            draw.text((x, y), f"{short(names[i])}|{short(names[j])}", fill=0)
            for k, idx in enumerate((i, j)):
                img = Image.fromarray(images[idx]).resize((side, side), Image.Resampling.NEAREST)
                sheet.paste(img, (x + k * (side + 2), y + cap))
    out = io.BytesIO()
    sheet.save(out, format="PNG")
    return out.getvalue()


def synth_mode(args) -> None:
    from fer_core.data.dedup import duplicate_groups
    from fer_core.data.near_pairs import hamming, near_duplicate_pairs
    from fer_core.data.phash import exact_digests, phash_batch
    from fer_core.data.synth import SynthConfig, generate

    # Every face a different person (subject_size=0): later frames and same-session shots of one
    # subject are near duplicates by design, not distinct faces to keep apart.
    s = generate(SynthConfig(n=args.n, seed=args.seed, subject_size=0))
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
    # the family of each image: its original's index (copies of copies resolve to the root)
    root = np.arange(len(s))
    root[copies] = s.dup_of[copies]
    has_copy = np.zeros(len(s), bool)
    has_copy[copies] = True
    has_copy[s.dup_of[copies]] = True
    pairs = near_duplicate_pairs(ph, args.max)
    print(
        f"{'bits':>4} {'groups':>7} {'recall':>7} {'precision':>9} {'distinct faces wrongly grouped':>31}"
        f" {'single linkage':>17}"
    )
    for t in range(0, args.max + 1, 2):
        group, _ = duplicate_groups(dig, ph, t)
        found = group[copies] == group[s.dup_of[copies]]
        sizes = np.bincount(group)
        wrong = (sizes[group] > 1) & ~has_copy
        linked = single_linkage(dig, pairs, t)
        wrong_sl = (np.bincount(linked)[linked] > 1) & ~has_copy
        # precision over groups: multi-image groups whose members all belong to one family
        fam_ok = np.array([len(set(root[group == g])) == 1 for g in np.flatnonzero(sizes > 1)])
        print(
            f"{t:>4} {int((sizes > 1).sum()):>7} {found.mean():>7.3f} {fam_ok.mean() if len(fam_ok) else 1:>9.3f} "
            f"{int(wrong.sum()):>23} ({100 * wrong.mean():.1f} %)"
            f" {int(wrong_sl.sum()):>9} ({100 * wrong_sl.mean():.1f} %)"
        )
    print(f"\nthe {len(originals)} originals (injected copies left out), copied once per kind:")
    rng = np.random.default_rng([args.seed, 7])
    study = copy_study(s.images[originals], args, rng)
    if args.pairs or args.pairs_png:
        report_pairs(study, [f"synth[{i}]" for i in originals], s.images[originals], args, rng)


def folder_images(args, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Up to --n distinct images (n, size, size) from the folder --images, and their relative paths."""
    from fer_core.data.images import IMAGE_SUFFIXES, decode_files
    from fer_core.data.phash import exact_digests

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
    if truth.is_file():  # a `fer data synth` folder: leave its injected copies and later frames out
        with open(truth, newline="") as fh:
            injected = {root / r["file"] for r in csv.DictReader(fh) if r.get("dup_of") or r.get("frame_of")}
        paths = [p for p in paths if p not in injected]
        print(f"{truth}: left out {len(injected)} injected copies and later frames")
    if len(paths) > args.n:
        paths = [paths[i] for i in np.sort(rng.choice(len(paths), args.n, replace=False))]
    dec = decode_files([str(p) for p in paths], args.size, "grayscale", progress=False)
    paths = [paths[i] for i in dec.ok]
    _, first = np.unique(exact_digests(dec.images), return_index=True)
    first = np.sort(first)
    if len(first) < 2:
        sys.exit(f"--images: need at least 2 distinct readable images under {root}, found {len(first)}")
    print(
        f"{root}: {len(first)} distinct images at {args.size}x{args.size} grayscale "
        f"({len(dec.failures)} unreadable, {len(dec.images) - len(first)} pixel-identical copies dropped)"
    )
    return dec.images[first, :, :, 0], [str(paths[i].relative_to(root)) for i in first]


def real_mode(args) -> None:
    from fer_core.data.phash import phash_batch

    rng = np.random.default_rng(args.seed)
    if args.lfw:
        images = lfw_faces(args.size)
        names = [f"lfw[{i}]" for i in range(len(images))]
        print(f"skimage.data.lfw_subset(): {len(images)} real face crops, 25x25 decoded to {args.size}x{args.size}")
    else:
        images, names = folder_images(args, rng)
    nn = nearest_distances(phash_batch(images[..., None]))
    print(
        f"nearest-neighbour pHash distance between the originals: {{{_hist(nn)}}}; "
        f"1/5/50 % quantiles {np.percentile(nn, 1):g}/{np.percentile(nn, 5):g}/{np.percentile(nn, 50):g}"
    )
    study = copy_study(images, args, rng)
    report_pairs(study, names, images, args, rng)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument(
        "--images", metavar="PATH", help="a folder of real face images (any layout); default: the synthetic set"
    )
    src.add_argument("--lfw", action="store_true", help="scikit-image's 100 LFW face crops as the originals")
    ap.add_argument("--n", type=int, default=4000, help="images to generate, or to sample from --images")
    ap.add_argument("--copies", type=int, default=300, help="originals to copy (once per kind of copy)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=48, help="real faces: side the images are decoded to")
    ap.add_argument("--max", type=int, default=16, help="largest threshold to try")
    ap.add_argument(
        "--budget",
        type=float,
        default=0.005,
        help="real faces: share of originals that may be wrongly grouped (default 0.005)",
    )
    ap.add_argument("--pairs", metavar="CSV", help="write the pairs among the originals within --max")
    ap.add_argument("--pairs-png", metavar="PNG", help="write a contact sheet of those pairs, a row per distance")
    ap.add_argument("--per-row", type=int, default=10, help="--pairs-png: pairs shown per distance (default 10)")
    ap.add_argument(
        "--chain", type=int, default=6, help="threshold at which single-linkage chains are shown (default 6)"
    )
    args = ap.parse_args(argv)
    for name in ("n", "copies", "per_row"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("max", "chain"):
        if not 0 <= getattr(args, name) <= 64:
            ap.error(f"--{name} must be a pHash distance 0..64, got {getattr(args, name)}")
    if args.images or args.lfw:
        real_mode(args)
    else:
        synth_mode(args)


if __name__ == "__main__":
    main()
