"""Exact near-duplicate search over 64-bit codes (perceptual hashes).

* :func:`hamming` -- elementwise Hamming distance between 64-bit codes.
* :func:`near_duplicate_pairs` -- every pair of codes within a Hamming distance, found exactly by
  multi-index hashing (or by blocked brute force when that is estimated to be cheaper).

The codes are what :func:`fer_core.data.phash.phash_batch` computes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..progress import bar
from .phash import check_int

__all__ = ["hamming", "near_duplicate_pairs"]

# Pairs generated (or compared) per vectorized step; keeps peak working memory to tens of MB.
_PAIR_BUDGET = 1 << 21
# One MIH candidate pair costs about as much as this many brute-force comparisons (4.6-6.5 ns
# vs 2.9-3.1 ns at 100k codes, measured with benchmarks/near_duplicates.py); "auto" picks MIH
# when candidates * ratio < all pairs.
_MIH_COST_RATIO = 2.0


def _as_uint64(values, name: str) -> np.ndarray:
    """Return ``values`` as uint64 codes: unsigned ints widened, int64 reinterpreted bit for bit,
    other signed ints accepted when non-negative; anything else raises ValueError."""
    arr = np.asarray(values)
    if arr.size == 0:
        return arr.astype(np.uint64)
    if arr.dtype.kind == "u":
        return arr.astype(np.uint64, copy=False)
    if arr.dtype == np.int64:
        return arr.view(np.uint64)
    if arr.dtype.kind == "i":
        if arr.min() < 0:
            raise ValueError(f"{name} of dtype {arr.dtype} must be non-negative, got {arr.min()}")
        return arr.astype(np.uint64)
    raise ValueError(f"{name} must hold 64-bit integer codes (uint64), got dtype {arr.dtype}")


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the number of differing bits between ``a`` and ``b``, elementwise (broadcasting).

    Both are 64-bit codes (uint64, or int64 read bit for bit); the result is an int64 array.
    """
    return np.bitwise_count(_as_uint64(a, "a") ^ _as_uint64(b, "b")).astype(np.int64)


# --------------------------------------------------------------------------- near duplicates


def _band_layout(n_bands: int) -> list[tuple[int, int]]:
    """Split the 64 bits into ``n_bands`` contiguous (shift, width) bands of near-equal width.

    The wider bands go to the most significant bits, where phash keeps its always-set DC bit.
    """
    base, extra = divmod(64, n_bands)
    widths = [base] * (n_bands - extra) + [base + 1] * extra
    shifts = np.cumsum([0] + widths[:-1]).tolist()
    return list(zip(shifts, widths, strict=True))


def _band_keys(codes: np.ndarray, shift: int, width: int) -> np.ndarray:
    """Return the ``width`` bits of each code from bit ``shift`` up (bit 0 = least significant)."""
    return (codes >> np.uint64(shift)) & np.uint64((1 << width) - 1)


def _band_mask(shift: int, width: int) -> np.uint64:
    """Return the uint64 mask selecting one band."""
    return np.uint64(((1 << width) - 1) << shift)


def _count_run_pairs(sorted_keys: np.ndarray) -> int:
    """Number of position pairs sharing a value in a sorted array: sum of L*(L-1)/2 over runs."""
    if len(sorted_keys) < 2:
        return 0
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    lengths = np.diff(np.r_[starts, len(sorted_keys)]).astype(np.int64)
    return int((lengths * (lengths - 1) // 2).sum())


def _iter_run_pairs(run_end: np.ndarray, budget: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield every pair of positions p < q in the same run, about ``budget`` pairs at a time.

    ``run_end[p]`` is the exclusive end of the run holding position p, so position p pairs
    with the ``run_end[p] - p - 1`` positions after it. The pairs are laid out with
    np.repeat (p once per partner) and a running offset (q = p + 1, p + 2, ...).
    """
    n = len(run_end)
    per_pos = run_end - np.arange(n) - 1
    cum = np.cumsum(per_pos)
    total = int(cum[-1]) if n else 0
    cuts = np.searchsorted(cum, np.arange(budget, total, budget), side="left")
    bounds = np.unique(np.clip(np.r_[0, cuts + 1, n], 0, n))
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        counts = per_pos[lo:hi]
        k = int(counts.sum())
        if k == 0:
            continue
        first = np.repeat(np.arange(lo, hi), counts)
        seg_start = np.repeat(np.cumsum(counts) - counts, counts)
        second = first + (np.arange(k) - seg_start) + 1
        yield first, second


def _runs_longest_first(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order positions so equal keys sit together and longer runs come first.

    Returns ``order`` (positions, run by run) and ``in_longer[o]`` = how many of the first
    positions belong to runs longer than o, so the runs of length > o form the prefix
    ``order[:in_longer[o]]``.
    """
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    lengths = np.diff(np.r_[starts, len(keys)])
    by_length = np.argsort(-np.repeat(lengths, lengths), kind="stable")
    longest = np.sort(lengths)[::-1]
    runs_longer = np.searchsorted(-longest, -np.arange(longest[0]), side="left")  # runs with L > o
    in_longer = np.r_[0, np.cumsum(longest)][runs_longer]
    return order[by_length], in_longer


def _mih_pairs(codes: np.ndarray, max_distance: int, progress: bool | None):
    """All pairs (a < b) of distinct codes within ``max_distance``, by multi-index hashing.

    Pigeonhole rule: cut the 64 bits into max_distance + 1 bands; two codes that differ in at
    most max_distance bits agree exactly on at least one band. So every pair inside a run of
    equal band values is a candidate, kept when its full Hamming distance is within the limit,
    and reported only by the first band it agrees on (so never twice).

    The candidates of a band are compared by offset: with the codes laid out run by run
    (longest runs first), the pairs (p, p + o) for one offset o are two contiguous slices,
    compared in one vectorized step; only runs longer than o take part.
    """
    layout = _band_layout(max_distance + 1)
    masks = [_band_mask(s, w) for s, w in layout]
    found_a, found_b, found_d = [], [], []
    bands = enumerate(layout)
    for band, (shift, width) in bar(bands, total=len(layout), desc="near dups", progress=progress):
        keys = _band_keys(codes, shift, width)
        order, in_longer = _runs_longest_first(keys)
        sorted_codes, sorted_keys = codes[order], keys[order]
        for offset in range(1, len(in_longer)):
            end = in_longer[offset]
            x = sorted_codes[: end - offset] ^ sorted_codes[offset:end]
            p = np.flatnonzero(np.bitwise_count(x) <= max_distance)
            p = p[sorted_keys[p] == sorted_keys[p + offset]]  # both in one run
            x = x[p]
            for mask in masks[:band]:  # drop pairs an earlier band already reported
                new = (x & mask) != 0
                p, x = p[new], x[new]
            a, b = order[p], order[p + offset]
            found_a.append(np.minimum(a, b))
            found_b.append(np.maximum(a, b))
            found_d.append(np.bitwise_count(x))
    return _concat(found_a), _concat(found_b), _concat(found_d)


def _brute_pairs(codes: np.ndarray, max_distance: int, progress: bool | None):
    """All pairs (a < b) of codes within ``max_distance``, comparing every pair block by block.

    Rows [s, s + B) are compared with columns [s, K) in one step of about _PAIR_BUDGET
    distances, at least one row (XOR, popcount, threshold, all into reused buffers); only
    pairs with column > row are kept.
    """
    k = len(codes)
    room = max(_PAIR_BUDGET, k)  # a block holds at least one full row
    xor_buf = np.empty(room, dtype=np.uint64)
    count_buf = np.empty(room, dtype=np.uint8)
    hit_buf = np.empty(room, dtype=bool)
    blocks, start = [], 0
    while start < k - 1:
        stop = min(k - 1, start + max(1, _PAIR_BUDGET // (k - start)))
        blocks.append((start, stop))
        start = stop
    found_a, found_b, found_d = [], [], []
    for start, stop in bar(blocks, desc="near dups", unit="block", progress=progress):
        shape = (stop - start, k - start)
        size = shape[0] * shape[1]
        xor = np.bitwise_xor(codes[start:stop, None], codes[None, start:], out=xor_buf[:size].reshape(shape))
        dist = np.bitwise_count(xor, out=count_buf[:size].reshape(shape))
        hits = np.less_equal(dist, max_distance, out=hit_buf[:size].reshape(shape))
        flat = np.flatnonzero(hits)
        flat = flat[flat % shape[1] > flat // shape[1]]  # column > row: each pair once
        found_a.append(flat // shape[1] + start)
        found_b.append(flat % shape[1] + start)
        found_d.append(dist.reshape(-1)[flat])
    return _concat(found_a), _concat(found_b), _concat(found_d)


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate index/distance chunks into one int64 array (empty when there are none)."""
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)


def _estimate_mih_candidates(codes: np.ndarray, max_distance: int) -> int:
    """Candidate pairs MIH would compare: pairs sharing a band value, summed over bands."""
    layout = _band_layout(max_distance + 1)
    return sum(_count_run_pairs(np.sort(_band_keys(codes, s, w))) for s, w in layout)


def _choose_method(codes: np.ndarray, max_distance: int) -> str:
    """Pick "mih" or "brute" by comparing estimated candidate work with all-pairs work."""
    k = len(codes)
    all_pairs = k * (k - 1) // 2
    if max_distance >= 32 or all_pairs == 0:  # bands of <= 1 bit filter nothing
        return "brute"
    candidates = _estimate_mih_candidates(codes, max_distance)
    return "mih" if candidates * _MIH_COST_RATIO < all_pairs else "brute"


def _expand_groups(
    a: np.ndarray,
    b: np.ndarray,
    dist: np.ndarray,
    members: np.ndarray,
    start: np.ndarray,
    count: np.ndarray,
):
    """Turn pairs of distinct codes into pairs of images holding them.

    Distinct code g is held by images members[start[g] : start[g] + count[g]]. A code pair
    (a, b) yields every (image of a, image of b) pair, laid out with np.repeat: pair t
    repeats count[a]*count[b] times and local index r picks member r // count[b] of a and
    r % count[b] of b.
    """
    sizes = count[a] * count[b]
    total = int(sizes.sum())
    t = np.repeat(np.arange(len(a)), sizes)
    r = np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    i = members[start[a[t]] + r // count[b[t]]]
    j = members[start[b[t]] + r % count[b[t]]]
    return np.minimum(i, j), np.maximum(i, j), dist[t]


def near_duplicate_pairs(
    hashes: np.ndarray, max_distance: int, *, method: str = "auto", progress: bool | None = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return every pair of hashes within ``max_distance`` bits of each other.

    The rule: report each pair i < j with ``hamming(hashes[i], hashes[j]) <= max_distance``
    exactly once, as int64 arrays ``(i, j, distance)`` sorted by (i, j). The search is exact
    (no pair missed, none spurious).

    Identical hashes are grouped first, so a hash shared by many images costs one search.
    Pairs of distinct hashes are found by multi-index hashing (``method="mih"``), by blocked
    brute-force popcount over all pairs (``method="brute"``), or by whichever the estimated
    candidate count says is cheaper (``method="auto"``, the default). ``progress`` shows a
    bar (None: only when stderr is a terminal, see fer_core.progress).
    """
    codes = _as_uint64(hashes, "hashes")
    if codes.ndim != 1:
        raise ValueError(f"hashes must be a 1-D array, got shape {codes.shape}")
    max_distance = check_int("max_distance", max_distance, 0, 64)
    if method not in ("auto", "mih", "brute"):
        raise ValueError(f"method must be 'auto', 'mih' or 'brute', got {method!r}")

    distinct, inverse, count = np.unique(codes, return_inverse=True, return_counts=True)
    members = np.argsort(inverse, kind="stable")  # image indices grouped by distinct code
    start = np.cumsum(count) - count

    # Images sharing one hash: all pairs inside each group, at distance 0.
    parts_i, parts_j, parts_d = [], [], []
    for p, q in _iter_run_pairs(np.repeat(start + count, count), _PAIR_BUDGET):
        parts_i.append(members[p])
        parts_j.append(members[q])
        parts_d.append(np.zeros(len(p), dtype=np.int64))

    if max_distance > 0 and len(distinct) > 1:
        if method == "auto":
            method = _choose_method(distinct, max_distance)
        search = _mih_pairs if method == "mih" else _brute_pairs
        a, b, dist = search(distinct, max_distance, progress)
        i, j, d = _expand_groups(a, b, dist, members, start, count)
        parts_i.append(i)
        parts_j.append(j)
        parts_d.append(d)

    i, j, d = _concat(parts_i), _concat(parts_j), _concat(parts_d)
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]
