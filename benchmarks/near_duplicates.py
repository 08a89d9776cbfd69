"""Benchmark near-duplicate search (multi-index hashing vs blocked brute force) and phash_batch.

    python benchmarks/near_duplicates.py                 # 100k codes, thresholds 4 6 8 10
    python benchmarks/near_duplicates.py --n 300000 --thresholds 6 8 --skip-brute

The codes are phashes of synthetic aligned "faces": one shared smooth template blended with
per-image smooth noise, brightness and contrast, so their bits carry the biases and
correlations of real aligned face crops (the DC bit is always set). Clusters of near-duplicates
are then planted at known distances (0..12 bits flipped from a seed), and every search is
checked to find each planted pair within its threshold. Brute force and MIH must return the
same pairs; the script fails loudly otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import imagehash  # noqa: E402
import PIL  # noqa: E402
import scipy  # noqa: E402
from PIL import Image  # noqa: E402

from fer_core.data import near_pairs  # noqa: E402
from fer_core.data.near_pairs import near_duplicate_pairs  # noqa: E402
from fer_core.data.phash import phash_batch  # noqa: E402

SIDE = 48


def upsample_matrix(grid: int, side: int = SIDE) -> np.ndarray:
    """(side, grid) matrix that linearly interpolates a grid-point signal to side pixels."""
    positions = np.linspace(0, grid - 1, side)
    columns = [np.interp(positions, np.arange(grid), np.eye(grid)[j]) for j in range(grid)]
    return np.stack(columns, axis=1)


def face_template() -> np.ndarray:
    """A smooth face-like layout in [0, 1]: bright oval, dark eyes and mouth."""
    y, x = np.mgrid[0:SIDE, 0:SIDE] / (SIDE - 1)
    face = np.exp(-((((x - 0.5) / 0.32) ** 2 + ((y - 0.5) / 0.42) ** 2) ** 2))
    eyes_and_mouth = [(0.35, 0.4, 0.07, 0.04), (0.65, 0.4, 0.07, 0.04), (0.5, 0.72, 0.14, 0.04)]
    for cx, cy, sx, sy in eyes_and_mouth:
        face -= 0.6 * np.exp(-(((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))
    return (face - face.min()) / np.ptp(face)


def synthetic_faces(rng: np.random.Generator, n: int, chunk: int = 2000) -> np.ndarray:
    """n uint8 48x48 images: template * a + smooth noise * (1 - a), random brightness/contrast."""
    template = face_template()
    out = np.empty((n, SIDE, SIDE), dtype=np.uint8)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        grid = int(rng.integers(4, 13))
        up = upsample_matrix(grid)
        noise = up @ rng.random((m, grid, grid)) @ up.T
        mix = rng.uniform(0.1, 0.5, (m, 1, 1))
        img = mix * template + (1 - mix) * noise
        img = img * rng.uniform(120, 255, (m, 1, 1)) + rng.uniform(-30, 60, (m, 1, 1))
        out[start : start + m] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def plant_clusters(rng: np.random.Generator, codes: np.ndarray, n_clusters: int, max_flips=12):
    """Overwrite codes with near-copies of seed codes; return the planted (seed, copy, distance)."""
    n = len(codes)
    sizes = rng.integers(1, 5, n_clusters)  # copies per seed
    slots = rng.permutation(n)[: n_clusters + sizes.sum()]
    seeds, copies = slots[:n_clusters], slots[n_clusters:]
    seed_of_copy = np.repeat(seeds, sizes)
    flips = rng.integers(0, max_flips + 1, len(copies))
    codes[copies] = codes[seed_of_copy]
    for copy, n_flips in zip(copies, flips, strict=True):
        for bit in rng.choice(64, n_flips, replace=False):
            codes[copy] ^= np.uint64(1) << np.uint64(bit)
    return np.minimum(seed_of_copy, copies), np.maximum(seed_of_copy, copies), flips


def timed(fn, *args, **kwargs):
    """(result, seconds) of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def bench_search(codes: np.ndarray, planted, thresholds: list[int], skip_brute: bool) -> None:
    print(f"\n== near_duplicate_pairs on {len(codes):,} codes ({len(np.unique(codes)):,} distinct) ==")
    print(
        f"{'t':>3} {'pairs':>10} {'auto(s)':>8} {'mih(s)':>8} {'brute(s)':>9} "
        f"{'brute/mih':>9}  auto chose  planted found"
    )
    p_i, p_j, p_d = planted
    for t in thresholds:
        (ai, aj, ad), auto_s = timed(near_duplicate_pairs, codes, t)
        mih, mih_s = timed(near_duplicate_pairs, codes, t, method="mih")
        assert all(np.array_equal(x, y) for x, y in zip((ai, aj, ad), mih, strict=True)), "auto != mih"
        chose = near_pairs._choose_method(np.unique(codes), t)  # what "auto" ran
        brute_s = float("nan")
        if not skip_brute:
            brute, brute_s = timed(near_duplicate_pairs, codes, t, method="brute")
            assert all(np.array_equal(x, y) for x, y in zip(mih, brute, strict=True)), "brute != mih"
        found = set(zip(ai.tolist(), aj.tolist(), strict=True))
        want = [(i, j) for i, j, d in zip(p_i.tolist(), p_j.tolist(), p_d.tolist(), strict=True) if d <= t]
        missing = sum((i, j) not in found for i, j in want)
        assert missing == 0, f"{missing} planted pairs missed at t={t}"
        print(
            f"{t:>3} {len(ai):>10,} {auto_s:>8.2f} {mih_s:>8.2f} {brute_s:>9.2f} "
            f"{brute_s / mih_s:>9.1f}  {chose:>10}  {len(want):,}/{len(want):,}"
        )


def bench_phash(rng: np.random.Generator, n: int) -> None:
    print(f"\n== phash_batch vs imagehash.phash loop, {n:,} random 48x48 images ==")
    for label, shape in [("gray", (n, SIDE, SIDE)), ("rgb", (n, SIDE, SIDE, 3))]:
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        batch, batch_s = timed(phash_batch, images)
        loop, loop_s = timed(
            lambda images=images: np.array(
                [int(str(imagehash.phash(Image.fromarray(im))), 16) for im in images], dtype=np.uint64
            )
        )
        assert np.array_equal(batch, loop), "phash_batch differs from imagehash.phash"
        print(
            f"{label:>5}: phash_batch {batch_s:6.2f} s   imagehash loop {loop_s:6.2f} s   "
            f"loop/batch {loop_s / batch_s:5.1f}x   (identical: yes)"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of codes (default 100000)")
    parser.add_argument("--thresholds", type=int, nargs="+", default=[4, 6, 8, 10])
    parser.add_argument("--clusters", type=int, default=None, help="planted seeds (default n/50)")
    parser.add_argument("--phash-n", type=int, default=20_000, help="images for the phash timing")
    parser.add_argument("--skip-brute", action="store_true", help="skip the brute-force baseline")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    print(
        f"numpy {np.__version__}, scipy {scipy.__version__}, pillow {PIL.__version__}, "
        f"imagehash {imagehash.__version__}, {os.cpu_count()} CPUs"
    )

    images, gen_s = timed(synthetic_faces, rng, args.n)
    codes, phash_s = timed(phash_batch, images)
    planted = plant_clusters(rng, codes, args.clusters or args.n // 50)
    bits = (codes[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    ones = bits.mean(axis=0)
    print(
        f"codes: {args.n:,} synthetic faces in {gen_s:.1f} s, phash_batch in {phash_s:.1f} s; "
        f"{len(planted[0]):,} planted pairs; "
        f"per-bit P(1) from {ones.min():.2f} to {ones.max():.2f}"
    )
    bench_search(codes, planted, args.thresholds, args.skip_brute)
    bench_phash(rng, args.phash_n)


if __name__ == "__main__":
    main()
