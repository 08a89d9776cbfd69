"""Decode image files into fixed-size uint8 arrays, in parallel, with a reason for every failure."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .. import progress as prog

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
COLOR_MODES = {"grayscale": "L", "rgb": "RGB"}


def channels(color: str) -> int:
    """Number of channels stored for a color mode name ('grayscale' -> 1, 'rgb' -> 3)."""
    if color not in COLOR_MODES:
        raise ValueError(f"color must be one of {sorted(COLOR_MODES)}, got {color!r}")
    return 1 if color == "grayscale" else 3


def from_pil(img: Image.Image, size: int, color: str) -> np.ndarray:
    """A PIL image as a (size, size, C) uint8 array: EXIF-rotated, converted, resized (no crop)."""
    mode = COLOR_MODES[color]
    if img.format in ("JPEG", "TIFF", "WEBP", "MPO"):  # the formats that carry an EXIF orientation
        img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I") or img.mode == "F":
        img = Image.fromarray(to_8bit(img), mode="L")
    if img.mode != mode:
        img = img.convert(mode)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.uint8)
    return arr.reshape(size, size, -1)


def to_8bit(img: Image.Image) -> np.ndarray:
    """A single-channel image of more than 8 bits as uint8 gray values, scaled by its bit depth.

    Pillow's ``convert("L")`` clips these to 255 (a 16-bit face becomes a white square), so:
    - ``I;16*`` (16-bit PNG, TIFF, PGM): 0..65535 maps onto 0..255 (value / 257, rounded).
    - ``I`` (32-bit int) and ``F`` (float) say nothing about their range, so it is read from the
      values: within 0..255 they are kept, within 0..65535 scaled as 16-bit; a float image within
      0..1 is scaled by 255. Anything else (negative, larger, NaN) raises ValueError: no scaling
      guessed from one image's extremes would be applied consistently across a data set.
    """
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    arr = arr.astype(np.float64)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 65535:
        raise ValueError(
            f"pixel values {lo:g}..{hi:g} of a mode {img.mode} image are outside 0..65535; convert it to 8 or 16 bits"
        )
    if img.mode == "F" and hi <= 1:
        arr = arr * 255
    elif hi > 255:
        arr = arr / 257
    return np.rint(arr).astype(np.uint8)


def decode_file(path: str | os.PathLike, size: int, color: str) -> np.ndarray:
    """Decode one file; raises ValueError with a short reason if it is not a usable image."""
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":  # let libjpeg decode at a reduced scale (>= size) when it can
                img.draft(COLOR_MODES[color], (size, size))
            img.load()
            return from_pil(img, size, color)
    except UnidentifiedImageError:
        raise ValueError("not an image (unrecognized format)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        msg = str(exc) or type(exc).__name__
        raise ValueError(f"unreadable image: {msg}") from None


@dataclass
class Decoded:
    images: np.ndarray  # (n_ok, size, size, C) uint8
    ok: np.ndarray  # (n_ok,) indices into the input list
    failures: list[tuple[int, str]]  # (index, reason)


def _decode_chunk(args: tuple[Sequence[str], int, str, int]) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    paths, size, color, offset = args
    out = np.empty((len(paths), size, size, channels(color)), dtype=np.uint8)
    ok: list[int] = []
    failures: list[tuple[int, str]] = []
    for k, path in enumerate(paths):
        try:
            out[len(ok)] = decode_file(path, size, color)
            ok.append(offset + k)
        except ValueError as exc:
            failures.append((offset + k, str(exc)))
    return out[: len(ok)], ok, failures


def decode_files(
    paths: Sequence[str | os.PathLike],
    size: int,
    color: str,
    *,
    workers: int | None = None,
    progress: bool | None = None,
    chunk: int = 512,
) -> Decoded:
    """Decode many files into one array; failures are returned with reasons, not raised.

    Uses ``workers`` processes (default: all cores) when there is enough work to pay for them.
    """
    files = [os.fspath(p) for p in paths]
    n = len(files)
    c = channels(color)
    workers = workers or os.cpu_count() or 1
    jobs = [(files[i : i + chunk], size, color, i) for i in range(0, n, chunk)]
    images = np.empty((n, size, size, c), dtype=np.uint8)
    ok: list[int] = []
    failures: list[tuple[int, str]] = []
    with prog.bar(total=n, desc="decode", unit="img", progress=progress) as pbar:
        if workers > 1 and n >= 4 * chunk:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = pool.map(_decode_chunk, jobs)
                for arr, ok_i, fail_i in results:
                    images[len(ok) : len(ok) + len(ok_i)] = arr
                    ok += ok_i
                    failures += fail_i
                    pbar.update(len(ok_i) + len(fail_i))
        else:
            for job in jobs:
                arr, ok_i, fail_i = _decode_chunk(job)
                images[len(ok) : len(ok) + len(ok_i)] = arr
                ok += ok_i
                failures += fail_i
                pbar.update(len(ok_i) + len(fail_i))
    return Decoded(images=images[: len(ok)], ok=np.asarray(ok, dtype=np.int64), failures=failures)


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES
