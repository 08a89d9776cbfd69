"""Tests for fer_core.data.phash and fer_core.data.near_pairs: phash parity with imagehash, digests, near-duplicate search."""

from __future__ import annotations

import imagehash
import numpy as np
import pytest
from PIL import Image

from fer_core.data import near_pairs, phash
from fer_core.data.near_pairs import hamming, near_duplicate_pairs
from fer_core.data.phash import exact_digests, phash_batch

# --------------------------------------------------------------------------- helpers


def reference_phash(images: np.ndarray, hash_size: int = 8, highfreq_factor: int = 4) -> np.ndarray:
    """imagehash.phash image by image, packed as int(str(hash), 16)."""
    out = []
    for img in images:
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[..., 0]
        h = imagehash.phash(Image.fromarray(img), hash_size, highfreq_factor)
        out.append(int(str(h), 16))
    return np.array(out, dtype=np.uint64)


def reference_pairs(codes: np.ndarray, max_distance: int):
    """All pairs i < j within max_distance, from the full distance matrix."""
    dist = hamming(codes[:, None], codes[None, :])
    i, j = np.nonzero(np.triu(dist <= max_distance, k=1))
    return i, j, dist[i, j]


def structured_images(size: int = 48) -> np.ndarray:
    """Gradients, shapes, stripes, checkerboards and flat images (flat ones tie at the median)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)
    r = np.hypot(x - 0.5, y - 0.4)
    imgs = [
        x * 255,
        y * 255,
        (x + y) * 127.5,
        (1 - x) * y * 255,
        (r < 0.3) * 255,
        (r < 0.2) * 200 + 30,
        ((x > 0.2) & (x < 0.7) & (y > 0.3) & (y < 0.9)) * 255,
        (np.sin(x * 12) > 0) * 255,
        ((np.floor(x * 6) + np.floor(y * 6)) % 2) * 255,
        np.clip(255 * np.exp(-((x - 0.3) ** 2 + (y - 0.6) ** 2) * 20), 0, 255),
        np.zeros_like(x),
        np.full_like(x, 128),
        np.full_like(x, 255),
    ]
    return np.stack(imgs).round().astype(np.uint8)


def clustered_codes(rng: np.random.Generator, n: int, max_flips: int = 12) -> np.ndarray:
    """Clusters of 4 codes around random centres (0..max_flips bits flipped), plus exact copies."""
    centres = rng.integers(0, 2**64 - 1, -(-n // 4), dtype=np.uint64, endpoint=True)
    codes = np.repeat(centres, 4)[:n]
    for k in range(n):
        for bit in rng.choice(64, rng.integers(0, max_flips + 1), replace=False):
            codes[k] ^= np.uint64(1) << np.uint64(bit)
    codes[rng.integers(0, n, n // 10)] = codes[rng.integers(0, n, n // 10)]
    return codes


# --------------------------------------------------------------------------- phash


@pytest.mark.parametrize(
    "shape",
    [
        (40, 48, 48),
        (40, 48, 48, 1),
        (40, 48, 48, 3),
        (12, 20, 70, 3),
        (12, 100, 33),
        (12, 64, 40),
        (12, 32, 32),
        (12, 32, 48, 1),
        (12, 10, 10, 3),
        (6, 96, 96),
        (6, 128, 64, 3),
    ],
)
def test_phash_matches_imagehash_on_random_images(shape):
    images = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(phash_batch(images), reference_phash(images))


def test_phash_matches_imagehash_on_structured_images():
    gray = structured_images()
    rgb = np.stack([gray, np.roll(gray, 5, axis=2), 255 - gray], axis=-1)
    for images in (gray, gray[..., None], rgb, structured_images(61)):
        np.testing.assert_array_equal(phash_batch(images), reference_phash(images))


@pytest.mark.parametrize("hash_size, highfreq_factor", [(4, 4), (6, 3), (8, 1), (2, 5)])
def test_phash_matches_imagehash_for_other_hash_sizes(hash_size, highfreq_factor):
    images = np.random.default_rng(hash_size).integers(0, 256, (10, 48, 48, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        phash_batch(images, hash_size, highfreq_factor),
        reference_phash(images, hash_size, highfreq_factor),
    )


def test_phash_across_chunks(monkeypatch):
    monkeypatch.setattr(phash, "_PHASH_CHUNK", 7)
    images = np.random.default_rng(3).integers(0, 256, (30, 48, 48), dtype=np.uint8)
    np.testing.assert_array_equal(phash_batch(images), reference_phash(images))


def test_phash_per_image_fallback(monkeypatch):
    monkeypatch.setattr(phash, "_pass_order", lambda h, w, size: None)
    images = np.random.default_rng(4).integers(0, 256, (8, 100, 33, 3), dtype=np.uint8)
    np.testing.assert_array_equal(phash_batch(images), reference_phash(images))


def test_progress_bars_do_not_change_results():
    images = np.random.default_rng(6).integers(0, 256, (20, 48, 48), dtype=np.uint8)
    codes = phash_batch(images, progress=True)
    np.testing.assert_array_equal(codes, phash_batch(images))
    for method in ("mih", "brute"):
        got = near_duplicate_pairs(codes, 30, method=method, progress=True)
        assert_same_pairs(got, reference_pairs(codes, 30))


def test_phash_empty_and_bad_arguments():
    assert phash_batch(np.zeros((0, 48, 48), np.uint8)).dtype == np.uint64
    assert len(phash_batch(np.zeros((0, 48, 48), np.uint8))) == 0
    with pytest.raises(ValueError, match="float32"):
        phash_batch(np.zeros((2, 48, 48), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 48, 48, 2\)"):
        phash_batch(np.zeros((2, 48, 48, 2), np.uint8))
    with pytest.raises(ValueError, match="hash_size.*9"):
        phash_batch(np.zeros((2, 48, 48), np.uint8), hash_size=9)
    with pytest.raises(ValueError, match="highfreq_factor.*0"):
        phash_batch(np.zeros((2, 48, 48), np.uint8), highfreq_factor=0)


# --------------------------------------------------------------------------- digests, hamming


def test_exact_digests_equal_iff_pixels_equal():
    images = np.random.default_rng(0).integers(0, 256, (6, 48, 48, 1), dtype=np.uint8)
    images[3] = images[1]
    images[4] = images[1]
    images[4, 10, 10, 0] ^= 1  # one bit off
    digests = exact_digests(images)
    assert digests.shape == (6,) and digests.dtype == np.dtype("S16")
    same = digests[:, None] == digests[None, :]
    pixels_same = (images[:, None] == images[None, :]).all(axis=(2, 3, 4))
    np.testing.assert_array_equal(same, pixels_same)


def test_exact_digests_include_shape_and_handle_empty():
    flat = np.zeros((1, 4, 8), np.uint8)
    assert exact_digests(flat)[0] != exact_digests(flat.reshape(1, 8, 4))[0]
    assert exact_digests(np.zeros((0, 48, 48), np.uint8)).shape == (0,)


def test_hamming():
    a = np.array([0, 0b1011, 2**64 - 1], dtype=np.uint64)
    b = np.array([0, 0b0001, 0], dtype=np.uint64)
    np.testing.assert_array_equal(hamming(a, b), [0, 2, 64])
    np.testing.assert_array_equal(hamming(a.view(np.int64), b), [0, 2, 64])
    assert hamming(a[:, None], a[None, :]).shape == (3, 3)
    with pytest.raises(ValueError, match="float64"):
        hamming(np.array([1.0]), b)


# --------------------------------------------------------------------------- near duplicates


def assert_same_pairs(got, expected):
    assert all(part.dtype == np.int64 for part in got)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("max_distance", [0, 1, 4, 8, 12])
@pytest.mark.parametrize("method", ["auto", "mih", "brute"])
def test_near_duplicates_match_brute_force(max_distance, method):
    rng = np.random.default_rng(max_distance)
    sets = [
        rng.integers(0, 2**64 - 1, 400, dtype=np.uint64, endpoint=True),
        clustered_codes(rng, 600),
        rng.integers(0, 64, 300).astype(np.uint64),  # few distinct values, long band runs
        phash_batch(rng.integers(0, 256, (200, 48, 48), dtype=np.uint8)),
    ]
    for codes in sets:
        got = near_duplicate_pairs(codes, max_distance, method=method)
        assert_same_pairs(got, reference_pairs(codes, max_distance))


@pytest.mark.parametrize("max_distance", [0, 3, 9, 40, 64])
def test_near_duplicates_in_small_chunks(monkeypatch, max_distance):
    monkeypatch.setattr(near_pairs, "_PAIR_BUDGET", 7)
    codes = clustered_codes(np.random.default_rng(5), 120)
    expected = reference_pairs(codes, max_distance)
    for method in ("mih", "brute"):
        assert_same_pairs(near_duplicate_pairs(codes, max_distance, method=method), expected)


def test_near_duplicates_output_is_sorted_and_each_pair_once():
    codes = clustered_codes(np.random.default_rng(9), 800)
    i, j, d = near_duplicate_pairs(codes, 10)
    assert (i < j).all()
    assert (np.diff(i) >= 0).all() and (np.diff(j)[np.diff(i) == 0] > 0).all()
    np.testing.assert_array_equal(d, hamming(codes[i], codes[j]))


@pytest.mark.parametrize("max_distance", [0, 4])
def test_near_duplicates_edge_cases(max_distance):
    empty = near_duplicate_pairs(np.array([], dtype=np.uint64), max_distance)
    assert all(len(part) == 0 for part in empty)
    one = near_duplicate_pairs(np.array([7], dtype=np.uint64), max_distance)
    assert all(len(part) == 0 for part in one)
    i, j, d = near_duplicate_pairs(np.full(50, 2**63 + 5, dtype=np.uint64), max_distance)
    assert len(i) == 50 * 49 // 2 and (d == 0).all()
    assert_same_pairs((i, j, d), reference_pairs(np.full(50, 2**63 + 5, dtype=np.uint64), 0))


def test_near_duplicates_accepts_int64_codes():
    codes = clustered_codes(np.random.default_rng(2), 200)
    assert_same_pairs(near_duplicate_pairs(codes.view(np.int64), 6), reference_pairs(codes, 6))


@pytest.mark.parametrize("bad", [-1, 65, 2.5, True, "3"])
def test_near_duplicates_rejects_bad_distance(bad):
    with pytest.raises(ValueError, match=f"max_distance.*{bad!r}"):
        near_duplicate_pairs(np.zeros(3, np.uint64), bad)


def test_near_duplicates_rejects_bad_hashes_and_method():
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        near_duplicate_pairs(np.zeros((2, 2), np.uint64), 1)
    with pytest.raises(ValueError, match="float64"):
        near_duplicate_pairs(np.zeros(3), 1)
    with pytest.raises(ValueError, match="-1"):
        near_duplicate_pairs(np.array([1, -1], dtype=np.int32), 1)
    with pytest.raises(ValueError, match="'fast'"):
        near_duplicate_pairs(np.zeros(3, np.uint64), 1, method="fast")
