"""Image hashes and exact near-duplicate search over 64-bit perceptual hashes.

* :func:`exact_digests` -- a 16-byte digest per image; two digests are equal iff the pixels are.
* :func:`phash_batch` -- ``imagehash.phash`` for a whole stack of images, bit for bit, as uint64.
* :func:`hamming` -- elementwise Hamming distance between 64-bit codes.
* :func:`near_duplicate_pairs` -- every pair of codes within a Hamming distance, found exactly by
  multi-index hashing (or by blocked brute force when that is estimated to be cheaper).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator

import numpy as np
import scipy.fftpack
from PIL import Image

from ..progress import bar

__all__ = ["exact_digests", "phash_batch", "hamming", "near_duplicate_pairs"]

# Pairs generated (or compared) per vectorized step; keeps peak working memory to tens of MB.
_PAIR_BUDGET = 1 << 21
# Images resized per PIL call in phash_batch.
_PHASH_CHUNK = 2048
# One MIH candidate pair costs about as much as this many brute-force comparisons (4.6-6.5 ns
# vs 2.9-3.1 ns at 100k codes, measured with benchmarks/near_duplicates.py); "auto" picks MIH
# when candidates * ratio < all pairs.
_MIH_COST_RATIO = 2.0
_LANCZOS = Image.Resampling.LANCZOS


# --------------------------------------------------------------------------- argument checks


def _check_int(name: str, value, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer in [low, high]; otherwise raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return int(value)


def _check_images(images) -> np.ndarray:
    """Return ``images`` as a contiguous uint8 array (N, H, W) or (N, H, W, C), C in {1, 3}."""
    if not isinstance(images, np.ndarray):
        raise ValueError(f"images must be a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise ValueError(f"images must have dtype uint8, got {images.dtype}")
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3)):
        raise ValueError(
            f"images must have shape (N, H, W) or (N, H, W, C) with C = 1 or 3, got {images.shape}"
        )
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(f"images must have non-empty height and width, got {images.shape}")
    return np.ascontiguousarray(images)


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


# --------------------------------------------------------------------------- digests and phash


def exact_digests(images: np.ndarray) -> np.ndarray:
    """Return one 16-byte BLAKE2b digest per image, as an (N,) ``S16`` array.

    The digest covers the image's shape, dtype and raw pixel bytes, so two digests are equal
    exactly when the two images have identical pixels (up to a 2**-128 chance of collision).
    Note that numpy drops trailing zero bytes when one ``S16`` element is read out as ``bytes``;
    comparisons, ``np.unique`` and ``digests.tobytes()`` use all 16 bytes.
    """
    images = _check_images(images)
    prefix = f"{images.dtype.str}{images.shape[1:]}".encode()
    digests = []
    for img in images:
        h = hashlib.blake2b(prefix, digest_size=16)
        h.update(img.data)
        digests.append(h.digest())
    return np.frombuffer(b"".join(digests), dtype="S16").copy()


def _horizontal_pass(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize the width of every image in an (n, H, W) stack to ``size`` with one PIL call.

    A horizontal LANCZOS pass maps each pixel row on its own, so running it on one tall image
    made of the stacked images gives each image exactly what PIL gives it alone.
    """
    n, h, w = gray.shape
    if w == size:
        return gray
    tall = Image.fromarray(gray.reshape(n * h, w))
    return np.asarray(tall.resize((size, n * h), _LANCZOS)).reshape(n, h, size)


def _vertical_pass(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize the height of every image in an (n, H, W) stack to ``size``, images side by side."""
    n, h, w = gray.shape
    if h == size:
        return gray
    wide = Image.fromarray(np.ascontiguousarray(gray.transpose(1, 0, 2)).reshape(h, n * w))
    out = np.asarray(wide.resize((n * w, size), _LANCZOS)).reshape(size, n, w)
    return out.transpose(1, 0, 2)


def _resize_in_order(gray: np.ndarray, size: int, order: str) -> np.ndarray:
    """Run both passes over a stack; ``order`` is "hv" (rows first) or "vh" (columns first)."""
    for axis in order:
        gray = _horizontal_pass(gray, size) if axis == "h" else _vertical_pass(gray, size)
    return gray


@functools.lru_cache(maxsize=64)
def _pass_order(h: int, w: int, size: int) -> str | None:
    """Which pass PIL runs first when it resizes (h, w) to (size, size) with LANCZOS.

    PIL resizes in two separable passes with 8-bit rounding in between, so the order matters
    for the result; which one it takes depends on the geometry and the Pillow version. Found
    once per geometry by resizing random probe images both ways and comparing with PIL itself;
    None when neither reproduces PIL (the caller then resizes image by image).
    """
    probe = np.random.default_rng(0).integers(0, 256, (2, h, w), dtype=np.uint8)
    direct = np.stack(
        [np.asarray(Image.fromarray(img).resize((size, size), _LANCZOS)) for img in probe]
    )
    for order in ("hv", "vh"):
        if np.array_equal(_resize_in_order(probe, size, order), direct):
            return order
    return None


def _resize_stack(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize each (H, W) uint8 image of a stack to (size, size) exactly as PIL's LANCZOS does.

    Both passes run on the whole stack at once (two PIL calls instead of one per image), in
    the order PIL itself uses for this geometry.
    """
    _, h, w = gray.shape
    order = _pass_order(h, w, size)
    if order is None:
        return np.stack(
            [np.asarray(Image.fromarray(img).resize((size, size), _LANCZOS)) for img in gray]
        )
    return _resize_in_order(gray, size, order)


def _to_gray(chunk: np.ndarray) -> np.ndarray:
    """Convert an (n, H, W[, C]) uint8 stack to (n, H, W) luminance exactly as convert('L')."""
    if chunk.ndim == 3:
        return chunk
    if chunk.shape[3] == 1:
        return chunk[..., 0]
    n, h, w, _ = chunk.shape
    rgb = Image.fromarray(chunk.reshape(n * h, w, 3))
    return np.asarray(rgb.convert("L")).reshape(n, h, w)


def phash_batch(
    images: np.ndarray, hash_size: int = 8, highfreq_factor: int = 4, progress: bool | None = False
) -> np.ndarray:
    """Return ``imagehash.phash`` of every image as an (N,) uint64 array, bit for bit.

    The rule (imagehash 4.3): convert to grayscale, resize to S x S with S = hash_size *
    highfreq_factor (PIL LANCZOS), take the 2-D DCT-II (``scipy.fftpack.dct`` along columns,
    then along rows), keep the top-left hash_size x hash_size coefficients and set a bit
    where a coefficient is strictly greater than their median. Bits are read row by row and
    the first one is the most significant, so ``out[k] == int(str(imagehash.phash(img)), 16)``.

    ``images`` is uint8 of shape (N, H, W), (N, H, W, 1) or (N, H, W, 3); hash_size is 2..8
    so that the hash fits 64 bits. The grayscale conversion and resize are PIL's own, run on
    whole chunks of images at once; the DCT, median and threshold are batched numpy/scipy.
    ``progress`` shows a bar (None: only when stderr is a terminal, see fer_core.progress).
    """
    images = _check_images(images)
    hash_size = _check_int("hash_size", hash_size, 2, 8)
    highfreq_factor = _check_int("highfreq_factor", highfreq_factor, 1)
    size = hash_size * highfreq_factor
    nbits = hash_size * hash_size
    out = np.empty(len(images), dtype=np.uint64)
    starts = range(0, len(images), _PHASH_CHUNK)
    for start in bar(starts, desc="phash", unit="chunk", progress=progress):
        chunk = images[start : start + _PHASH_CHUNK]
        pixels = _resize_stack(_to_gray(chunk), size).astype(np.float64)
        # Rows of the column-DCT are independent under the row-DCT, so only the rows kept
        # for the hash go through the second transform.
        dct = scipy.fftpack.dct(pixels, axis=1)[:, :hash_size, :]
        low = scipy.fftpack.dct(dct, axis=2)[:, :, :hash_size].reshape(len(chunk), nbits)
        bits = low > np.median(low, axis=1, keepdims=True)
        padded = np.zeros((len(chunk), 64), dtype=bool)
        padded[:, 64 - nbits :] = bits
        out[start : start + len(chunk)] = np.packbits(padded, axis=1).view(">u8")[:, 0]
    return out


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
    return list(zip(shifts, widths))


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
    for lo, hi in zip(bounds[:-1], bounds[1:]):
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
        xor = np.bitwise_xor(
            codes[start:stop, None], codes[None, start:], out=xor_buf[:size].reshape(shape)
        )
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
    a: np.ndarray, b: np.ndarray, dist: np.ndarray, members: np.ndarray, start: np.ndarray,
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
    max_distance = _check_int("max_distance", max_distance, 0, 64)
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
