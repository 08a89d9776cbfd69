"""Image hashes: an exact digest and a 64-bit perceptual hash (pHash) per image.

* :func:`exact_digests` -- a 16-byte digest per image; two digests are equal iff the pixels are.
* :func:`phash_batch` -- ``imagehash.phash`` for a whole stack of images, bit for bit, as uint64.

Pairs of near-equal hashes are found by :mod:`fer_core.data.near_pairs`.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import scipy.fftpack
from PIL import Image

from ..progress import bar

__all__ = ["exact_digests", "phash_batch"]

# Images resized per PIL call in phash_batch.
_PHASH_CHUNK = 2048
_LANCZOS = Image.Resampling.LANCZOS


# --------------------------------------------------------------------------- argument checks


def check_int(name: str, value, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer in [low, high]; otherwise raise ValueError.

    Also checks :func:`fer_core.data.near_pairs.near_duplicate_pairs`' ``max_distance``.
    """
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
        raise ValueError(f"images must have shape (N, H, W) or (N, H, W, C) with C = 1 or 3, got {images.shape}")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(f"images must have non-empty height and width, got {images.shape}")
    return np.ascontiguousarray(images)


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
    direct = np.stack([np.asarray(Image.fromarray(img).resize((size, size), _LANCZOS)) for img in probe])
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
        return np.stack([np.asarray(Image.fromarray(img).resize((size, size), _LANCZOS)) for img in gray])
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
    hash_size = check_int("hash_size", hash_size, 2, 8)
    highfreq_factor = check_int("highfreq_factor", highfreq_factor, 1)
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
