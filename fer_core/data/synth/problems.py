"""The problems the ingest tool must find, injected into the rendered faces with their ground truth.

Label noise (a share of samples get a wrong label, drawn with FER-like confusions such as
sad <-> neutral), exact duplicates, near duplicates (what a re-upload does, one or two of: 1-pixel
shift, small brightness or contrast change, mild noise, JPEG re-encoding, a 1-pixel rescale; see
``near_copy``) and label conflicts (a copy whose label differs from its original's). The final
order is shuffled so copies do not sit at the end.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from .dataset import SynthSet
from .render import to_uint8
from .subjects import extend_for_copies

# Relative weights of the wrong label a noisy sample gets, given its true class: FER-like
# confusions (sad <-> neutral dominates, surprise is mistaken for happy or neutral).
_CONFUSION = {
    "happy": {"neutral": 0.5, "surprise": 0.3, "sad": 0.2},
    "neutral": {"sad": 0.55, "happy": 0.25, "surprise": 0.2},
    "sad": {"neutral": 0.65, "happy": 0.15, "surprise": 0.2},
    "surprise": {"happy": 0.4, "neutral": 0.4, "sad": 0.2},
}

NEAR_COPY_KINDS = ("shift", "brightness", "contrast", "noise", "jpeg", "rescale")


def near_copy(img: np.ndarray, rng: np.random.Generator, kinds: tuple[str, ...] | None = None) -> np.ndarray:
    """A copy that is visibly the same picture but not byte-identical: what a re-upload does.

    One or two of NEAR_COPY_KINDS at random (or exactly ``kinds``, in order): a one-pixel shift
    (edge replicated), a brightness change of 2-6 gray levels, a contrast change of 4-10 %, mild
    noise (sd 1-2.5 gray levels), JPEG re-encoding at quality 80-95, or a bicubic rescale by one
    pixel (about 2 %), cropped or edge-padded back to the original size. ``img`` is (H, W) uint8.
    """
    out: np.ndarray = img.astype(np.float32)  # float32; "noise" and "brightness" promote it to float64
    if kinds is None:
        kinds = tuple(NEAR_COPY_KINDS[k] for k in rng.permutation(len(NEAR_COPY_KINDS))[: rng.integers(1, 3)])
    for kind in kinds:
        if kind == "shift":
            axis, step = int(rng.integers(0, 2)), int(rng.choice([-1, 1]))
            out = np.roll(out, step, axis=axis)
            edge = 0 if step == 1 else -1
            if axis == 0:
                out[edge] = out[edge + step]
            else:
                out[:, edge] = out[:, edge + step]
        elif kind == "brightness":
            out = out + rng.choice([-1, 1]) * rng.uniform(2, 6)
        elif kind == "contrast":
            mean = out.mean()
            out = mean + (out - mean) * (1.0 + rng.choice([-1, 1]) * rng.uniform(0.04, 0.1))
        elif kind == "noise":
            out = out + rng.normal(0.0, rng.uniform(1.0, 2.5), out.shape)
        elif kind == "jpeg":
            buf = io.BytesIO()
            Image.fromarray(to_uint8(np.clip(out, 0, 255) / 255.0)).save(
                buf, format="JPEG", quality=int(rng.integers(80, 96))
            )
            out = np.asarray(Image.open(buf), dtype=np.float32)
        elif kind == "rescale":
            h, w = out.shape
            step = int(rng.choice([-1, 1]))
            resized = Image.fromarray(out.astype(np.float32)).resize((w + step, h + step), Image.Resampling.BICUBIC)
            scaled = np.asarray(resized)
            if step > 0:
                top, left = int(rng.integers(0, step + 1)), int(rng.integers(0, step + 1))
                out = scaled[top : top + h, left : left + w]
            else:
                top, left = int(rng.integers(0, -step + 1)), int(rng.integers(0, -step + 1))
                out = np.pad(scaled, ((top, -step - top), (left, -step - left)), mode="edge")
        else:
            raise ValueError(f"unknown near-copy kind {kind!r}; choose from {', '.join(NEAR_COPY_KINDS)}")
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if np.array_equal(out, img):  # e.g. a shift of a flat region: force a difference
        out[0, 0] = out[0, 0] + 1 if out[0, 0] < 255 else 254
    return out


def _wrong_labels(
    true: np.ndarray, classes: tuple[str, ...], rng: np.random.Generator, avoid: np.ndarray | None = None
) -> np.ndarray:
    """A label other than ``avoid`` (default: the true label) for each sample, FER-like weights."""
    avoid = true if avoid is None else avoid
    out = np.empty_like(true)
    for i, (t, a) in enumerate(zip(true, avoid, strict=True)):
        w = np.array([_CONFUSION[classes[t]].get(c, 0.1) for c in classes])
        w[a] = 0.0
        if w.sum() == 0:
            w = np.ones(len(classes))
            w[a] = 0.0
        out[i] = rng.choice(len(classes), p=w / w.sum())
    return out


def noisy_labels(true: np.ndarray, classes: tuple[str, ...], share: float, rng: np.random.Generator) -> np.ndarray:
    """The given labels: ``true`` with a ``share`` of them, drawn at random, replaced by a wrong one."""
    labels = true.copy()
    flip = rng.choice(len(true), int(round(share * len(true))), replace=False)
    labels[flip] = _wrong_labels(true[flip], classes, rng)
    return labels


def with_copies(originals: SynthSet, n_dup: int, conflict_share: float, rng: np.random.Generator) -> SynthSet:
    """``originals`` followed by ``n_dup`` copies of some of them: half exact, half near; a
    ``conflict_share`` of the copies carry a label other than their original's."""
    images, labels, true, classes = originals.images, originals.labels, originals.true_labels, originals.classes
    orig = rng.choice(len(originals), n_dup, replace=False) if n_dup else np.empty(0, np.int64)
    exact = rng.random(n_dup) < 0.5
    copies = np.empty((n_dup, *images.shape[1:]), dtype=np.uint8)
    for i, (o, ex) in enumerate(zip(orig, exact, strict=True)):
        copies[i] = images[o] if ex else near_copy(images[o], rng)
    copy_labels = labels[orig].copy()
    conflict = rng.choice(n_dup, int(round(conflict_share * n_dup)), replace=False)
    copy_labels[conflict] = _wrong_labels(true[orig[conflict]], classes, rng, avoid=labels[orig[conflict]])
    return SynthSet(
        images=np.concatenate([images, copies]),
        labels=np.concatenate([labels, copy_labels]),
        true_labels=np.concatenate([true, true[orig]]),
        dup_of=np.concatenate([originals.dup_of, orig]).astype(np.int64),
        dup_kind=np.concatenate([originals.dup_kind, np.where(exact, "exact", "near")]).astype("<U5"),
        classes=classes,
        config=originals.config,
        subjects=extend_for_copies(originals.subjects, orig) if originals.subjects is not None else None,
    )


def shuffled(synth: SynthSet, rng: np.random.Generator) -> SynthSet:
    """``synth`` in a random order, so copies are spread through the set; ``dup_of`` follows."""
    perm = rng.permutation(len(synth))
    where = np.empty_like(perm)
    where[perm] = np.arange(len(synth))
    dup_of = synth.dup_of[perm]
    dup_of = np.where(dup_of >= 0, where[np.maximum(dup_of, 0)], -1).astype(np.int64)
    return SynthSet(
        images=synth.images[perm],
        labels=synth.labels[perm].astype(np.int64),
        true_labels=synth.true_labels[perm].astype(np.int64),
        dup_of=dup_of,
        dup_kind=synth.dup_kind[perm],
        classes=synth.classes,
        config=synth.config,
        subjects=synth.subjects.take(perm) if synth.subjects is not None else None,
    )
