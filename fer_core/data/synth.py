"""A procedural stand-in for FER data: 48x48 grayscale faces for happy, neutral, sad and surprise.

No real FER data can be downloaded here, so the project draws its own default data set. Every image
is one cartoon face rendered in numpy, a whole batch at a time:

- Each pixel gets face coordinates ``(u, v)`` after a per-sample rotation, shift and scale (``v``
  points down, the face spans about -0.8..0.8 across). Each part (face outline, hair, eyes, irises,
  brows, nose, mouth, cheek folds, an occluding bar) is a signed distance in those coordinates,
  turned into an anti-aliased mask by a one-pixel linear ramp (wider for "blurry" samples), and
  painted over the image. Symmetric parts are drawn once through ``|u|``.
- The expression sets a few parameters: mouth curvature, width and opening; eye opening; brow
  height, inner-end raise and arch; cheek folds. Happy lifts the mouth corners, narrows the eyes and
  deepens the folds (sometimes an open smile with teeth); sad drops the corners and raises the inner
  brows; surprise raises and arches the brows, widens the eyes and opens an O-shaped mouth; neutral
  keeps a flat mouth with small random resting variation. Each sample draws an *intensity*
  (0 = neutral face, 1 = full expression), and sad intensities reach down to almost 0, so some sad
  faces are genuinely indistinguishable from neutral ones: the main confusion, as in real FER.
- Identity (face shape, feature placement and size, skin, hair, background), pose, lighting
  (gradient, brightness, contrast, gamma), blur, Gaussian noise and occasional occluding bars vary
  at random.
- So do low-frequency nuisance factors, independent of the class: face position and size in the
  frame, head width and chin taper, hair volume, length, parting and tone, shoulders and neck
  (clothing tone), a background gradient in a random direction plus smooth clutter (a random 5x5
  grid, interpolated), and side lighting across the face. They are what a perceptual hash looks at:
  without them distinct faces sat 4-10 pHash bits from their nearest neighbour (median 8, n=4000:
  the 8x8 lowest DCT frequencies of every face were the same centred blob), so no near-duplicate
  threshold could tell copies from distinct faces; with them the nearest neighbour sits mostly
  10-16 bits away (median 14), nearer what real faces that differ in framing, hair, background and
  lighting should give (unmeasured: no real FER data here; ``benchmarks/dedup_threshold.py
  --images`` measures it on a real set).

On top of the rendered faces the generator injects the problems the ingest tool must find, and
records the ground truth: label noise (a share of samples get a wrong label, drawn with
FER-like confusions such as sad <-> neutral), exact duplicates, near duplicates (what a
re-upload does, one or two of: 1-pixel shift, small brightness or contrast change, mild noise, JPEG
re-encoding, a 1-pixel rescale; see ``near_copy``) and label conflicts (a copy whose label differs
from its original's). The final order is shuffled so copies do not sit at the end.

Everything is deterministic from ``SynthConfig.seed``. ``generate()`` builds a :class:`SynthSet` in
memory; ``write_folders()`` writes it as class folders, split folders or a FER2013-style CSV,
together with ``truth.csv`` and ``synth.json``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import progress as prog, storage
from ..errors import DataError
from .classes import FOUR_CLASS

EXPRESSIONS = FOUR_CLASS  # the expressions the renderer can draw
FER2013_INDEX = {"angry": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5, "neutral": 6}
LAYOUTS = ("folders", "split-folders", "fer2013-csv")
SPLIT_SHARES = (0.8, 0.1, 0.1)
_USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
_CHUNK = 64  # images rendered per numpy batch (fixed: the noise stream depends on it)
_CLUTTER = 5  # background clutter: a random CLUTTER x CLUTTER grid, smoothly interpolated

# Relative weights of the wrong label a noisy sample gets, given its true class: FER-like
# confusions (sad <-> neutral dominates, surprise is mistaken for happy or neutral).
_CONFUSION = {
    "happy": {"neutral": 0.5, "surprise": 0.3, "sad": 0.2},
    "neutral": {"sad": 0.55, "happy": 0.25, "surprise": 0.2},
    "sad": {"neutral": 0.65, "happy": 0.15, "surprise": 0.2},
    "surprise": {"happy": 0.4, "neutral": 0.4, "sad": 0.2},
}


@dataclass(frozen=True)
class SynthConfig:
    """What to generate.

    Attributes:
        n: total number of images, injected duplicates included (``round(n * duplicate_share)``
            of them are copies of the other ones).
        size: image side in pixels.
        label_noise: share of the original (non-copy) images whose given label is wrong. Copies
            inherit their original's given label, conflicts excepted. The default 0.3 is what makes
            long unregularised training visibly overfit (validation accuracy on the given labels
            peaks, then falls several points; see benchmarks/synth_difficulty.py); at 0.2 the fall
            stayed within the epoch-to-epoch scatter.
        duplicate_share: share of ``n`` that are copies of another image (exact or near, half
            each; below 0.5, since every copy has its own original).
        conflict_share: share of the copies whose label differs from their original's (default:
            a quarter, i.e. 1 % of the set, 40 conflicting pairs in the default 4000 images).
        seed: the random seed; the same config always yields the same set.
        class_shares: share of each class among the originals (normalised to sum to 1).
        classes: class names, each one of happy, neutral, sad, surprise; labels index this tuple.
    """

    n: int = 4000
    size: int = 48
    label_noise: float = 0.3
    duplicate_share: float = 0.04
    conflict_share: float = 0.25
    seed: int = 0
    class_shares: tuple[float, ...] = (0.357, 0.246, 0.244, 0.152)
    classes: tuple[str, ...] = FOUR_CLASS

    def validate(self) -> None:
        """Raise DataError naming the first bad field."""
        if self.n < 1:
            raise DataError(f"synth: n must be at least 1, got {self.n}")
        if self.size < 16:
            raise DataError(f"synth: size must be at least 16 pixels, got {self.size}")
        for name, top in (("label_noise", 1.0), ("duplicate_share", 0.5), ("conflict_share", 1.0)):
            value = getattr(self, name)
            if not 0.0 <= value < top:
                raise DataError(f"synth: {name} must lie in [0, {top:g}), got {value}")
        unknown = [c for c in self.classes if c not in EXPRESSIONS]
        if unknown or len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise DataError(f"synth: classes must be at least two distinct names out of "
                            f"{', '.join(EXPRESSIONS)}, got {self.classes}")
        if len(self.class_shares) != len(self.classes) or min(self.class_shares) < 0 \
                or sum(self.class_shares) <= 0:
            raise DataError(f"synth: class_shares must be {len(self.classes)} non-negative numbers "
                            f"with a positive sum, got {self.class_shares}")


@dataclass
class SynthSet:
    """A generated data set with its ground truth.

    Attributes:
        images: (N, size, size) uint8.
        labels: (N,) int64 given labels (possibly wrong), indices into ``classes``.
        true_labels: (N,) int64 the class each face was drawn as.
        dup_of: (N,) int64 index of the original an injected copy was made from, else -1.
        dup_kind: (N,) str "exact", "near" or "" (not a copy).
        classes: class names.
        config: the config it was generated from.
    """

    images: np.ndarray
    labels: np.ndarray
    true_labels: np.ndarray
    dup_of: np.ndarray
    dup_kind: np.ndarray
    classes: tuple[str, ...]
    config: SynthConfig | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def noisy(self) -> np.ndarray:
        """Bool mask of samples whose given label is not their true class."""
        return self.labels != self.true_labels

    @property
    def conflict(self) -> np.ndarray:
        """Bool mask of copies whose given label differs from their original's."""
        is_copy = self.dup_of >= 0
        out = np.zeros(len(self), dtype=bool)
        out[is_copy] = self.labels[is_copy] != self.labels[self.dup_of[is_copy]]
        return out

    def ids(self) -> list[str]:
        """Stable ids, ``synth_000123`` for index 123."""
        return [f"synth_{i:06d}" for i in range(len(self))]


# ----------------------------------------------------------------------------------------------
# Parameters


def _counts(n: int, shares) -> np.ndarray:
    """Split n into integer counts proportional to shares (largest remainder)."""
    raw = np.asarray(shares, dtype=float) / float(np.sum(shares)) * n
    counts = np.floor(raw).astype(np.int64)
    counts[np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]] += 1
    return counts


def _sample_params(rng: np.random.Generator, expr: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample drawing parameters (float32 arrays of length n) for expression codes ``expr``."""
    n = len(expr)
    U = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    N = lambda sd: rng.normal(0.0, sd, n)  # noqa: E731
    happy, neutral, sad, surprise = (expr == EXPRESSIONS.index(c) for c in
                                     ("happy", "neutral", "sad", "surprise"))
    # Expression intensity: 0 looks neutral, 1 is a full expression. Sad reaches close to 0.
    t = np.select([happy, sad, surprise], [U(0.1, 1.0), U(0.0, 1.0) ** 1.3, U(0.2, 1.0)], 0.0)

    p: dict[str, np.ndarray] = {}
    # Pose and rendering.
    p["rot"] = np.clip(N(0.12), -0.3, 0.3)
    p["scale"] = U(0.8, 1.04)
    p["tx"], p["ty"] = U(-0.1, 0.1), U(-0.1, 0.1)
    p["blur"] = U(0.8, 2.6)  # edge width in pixels
    # Identity.
    p["face_a"], p["face_b"] = 0.78 * U(0.85, 1.15), U(0.9, 1.1)
    p["skin"], p["bg"] = U(0.45, 0.8), U(0.05, 0.95)
    p["hair"] = (rng.random(n) < 0.85) * 1.0
    p["hair_tone"], p["hairline"] = U(0.02, 0.6), U(-0.78, -0.52)
    p["eye_x"], p["eye_y"] = U(0.27, 0.35), U(-0.17, -0.08)
    p["eye_rx"], p["eye_ry"] = U(0.12, 0.16), U(0.05, 0.075)
    p["iris_r"], p["gaze_x"], p["gaze_y"] = U(0.04, 0.055), U(-0.03, 0.03), U(-0.01, 0.01)
    p["white"], p["iris_tone"] = U(0.1, 0.3), U(0.0, 0.25)
    p["brow_gap"], p["brow_hw"], p["brow_th"] = U(0.11, 0.17), U(0.12, 0.17), U(0.03, 0.06)
    p["brow_dark"] = U(0.3, 0.7)
    p["nose_dark"] = U(0.05, 0.2)
    p["mouth_y"], p["mouth_w"], p["lip_th"] = U(0.44, 0.56), U(0.2, 0.28), U(0.025, 0.045)
    p["lip_dark"] = U(0.3, 0.55)
    p["asym"] = N(0.012)
    # Expression. Each row: neutral resting jitter + class-specific change scaled by intensity.
    p["curve"] = N(0.025) + np.select([happy, sad], [0.03 + 0.14 * t, -(0.01 + 0.1 * t)], 0.0)
    smile_open = happy & (rng.random(n) < 0.5)
    parted = neutral & (rng.random(n) < 0.1)
    p["open_up"] = np.select([smile_open, surprise, parted], [0.01 + 0.03 * t, 0.04 + 0.08 * t,
                                                              U(0.005, 0.015)], 0.0)
    p["open_lo"] = np.select([smile_open, surprise, parted], [0.03 + 0.07 * t, 0.04 + 0.09 * t,
                                                              U(0.005, 0.015)], 0.0)
    p["teeth"] = smile_open * (rng.random(n) < 0.8) * 1.0
    p["mouth_wf"] = U(0.92, 1.08) * np.select([happy, sad, surprise],
                                              [1 + 0.25 * t, 1 - 0.08 * t, 0.6 - 0.15 * t], 1.0)
    p["eye_open"] = U(0.88, 1.12) * np.select([happy, sad, surprise],
                                              [1 - 0.4 * t, 1 - 0.15 * t, 1.3 + 0.5 * t], 1.0)
    p["brow_raise"] = N(0.015) + np.select([sad, surprise], [0.01 * t, 0.05 + 0.07 * t], 0.0)
    p["brow_inner"] = N(0.012) + np.select([sad, surprise], [0.015 + 0.05 * t, 0.01], 0.0)
    p["brow_arch"] = 0.01 + N(0.01) + np.select([sad, surprise], [-0.01 * t, 0.02 + 0.04 * t], 0.0)
    p["fold"] = U(0.0, 0.4) + np.where(happy, 0.8 * t, 0.0)
    # Lighting, noise, occlusion.
    p["light"], p["light_dir"] = U(0.0, 0.5), U(0.0, 2 * np.pi)
    p["contrast"], p["bright"], p["gamma"] = U(0.45, 1.3), U(-0.12, 0.12), U(0.75, 1.35)
    p["noise"] = U(0.01, 0.06)
    p["occ"] = (rng.random(n) < 0.2) * 1.0
    p["occ_x"], p["occ_y"], p["occ_ang"] = U(-0.6, 0.6), U(-0.6, 0.6), U(0.0, np.pi)
    p["occ_hw"], p["occ_hl"], p["occ_tone"] = U(0.06, 0.25), U(0.3, 1.2), U(0.0, 1.0)
    # Low-frequency nuisance (what a perceptual hash sees): head shape, hair volume, length and
    # parting, side lighting on the face, neck and shoulders, background gradient and clutter.
    p["jaw"] = U(-0.1, 0.3)                          # > 0 narrows the chin
    p["hair_vol"], p["hair_len"] = U(0.0, 0.28), U(-0.35, 1.1)
    p["hair_tilt"], p["hair_side"] = U(-0.3, 0.3), U(-0.15, 0.15)
    p["side_light"] = U(-0.4, 0.4)
    p["neck_w"], p["body"] = U(0.26, 0.4), (rng.random(n) < 0.85) * 1.0
    p["body_x"], p["body_y"] = U(-0.3, 0.3), U(1.05, 1.45)
    p["body_w"], p["body_tone"] = U(1.0, 1.7), U(0.0, 1.0)
    p["bg_grad"], p["bg_dir"] = U(0.0, 0.8), U(0.0, 2 * np.pi)
    p["clutter"] = U(0.1, 0.5)
    p["clutter_grid"] = rng.standard_normal((n, _CLUTTER, _CLUTTER))
    return {k: np.asarray(v, dtype=np.float32) for k, v in p.items()}


# ----------------------------------------------------------------------------------------------
# Rendering


def _ellipse_sd(u, v, a, b):
    """Approximate signed distance to an axis-aligned ellipse with radii a, b (first order)."""
    ua, vb = u / a, v / b
    k = np.sqrt(ua * ua + vb * vb)
    grad = np.sqrt((ua / a) ** 2 + (vb / b) ** 2) + 1e-6
    return (k - 1.0) * k / grad


def _box(p: dict[str, np.ndarray], u0, u1, v0, v1, size: int) -> tuple[slice, slice, slice]:
    """Pixel window covering face-coordinate box [u0,u1] x [v0,v1] of every sample in the batch."""
    cos, sin, s = np.cos(p["rot"]), np.sin(p["rot"]), p["scale"]
    xs, ys = [], []
    for u in (u0, u1):
        for v in (v0, v1):
            xs.append(p["tx"] + s * (cos * u - sin * v))
            ys.append(p["ty"] + s * (sin * u + cos * v))
    pad = 1.0 + float(p["blur"].max())
    to_px = lambda z: (np.asarray(z) + 1.0) * (size / 2.0) - 0.5  # noqa: E731
    c0, c1 = int(np.floor(to_px(np.min(xs)) - pad)), int(np.ceil(to_px(np.max(xs)) + pad)) + 1
    r0, r1 = int(np.floor(to_px(np.min(ys)) - pad)), int(np.ceil(to_px(np.max(ys)) + pad)) + 1
    return slice(None), slice(max(r0, 0), max(r1, 0)), slice(max(c0, 0), max(c1, 0))


def _render(p: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one batch: p holds (B,) arrays; returns (B, size, size) float32 in [0, 1].

    Background, face and hair cover the whole image; the small parts are computed only inside the
    pixel window their face-coordinate box can reach in this batch (see ``_box``).
    """
    f32 = np.float32
    c = (np.arange(size, dtype=f32) + 0.5) * (2.0 / size) - 1.0
    gx, gy = c[None, None, :], c[:, None][None]                     # (1,1,W), (1,H,1)
    q = {k: v[:, None, None] for k, v in p.items() if v.ndim == 1}    # (B,1,1) each

    cos, sin, s = np.cos(q["rot"]), np.sin(q["rot"]), q["scale"]
    X, Y = gx - q["tx"], gy - q["ty"]
    u = (cos * X + sin * Y) / s
    v = (cos * Y - sin * X) / s
    inv_edge = s / ((2.0 / size) * q["blur"])                         # 1 / ramp width, face units

    def mask(d, scale=inv_edge):
        return np.clip(0.5 - d * scale, 0.0, 1.0)

    def paint(img, m, tone):
        return img + m * (tone - img)

    # Background: a level, a linear gradient in a random direction and smooth clutter.
    grad = np.cos(q["bg_dir"]) * gx + np.sin(q["bg_dir"]) * gy
    w_bg = np.exp(-0.5 * ((c[:, None] - np.linspace(-1.2, 1.2, _CLUTTER, dtype=f32)) / 0.35) ** 2)
    w_bg /= w_bg.sum(axis=1, keepdims=True)                          # (size, CLUTTER)
    clutter = np.einsum("ik,bkl,jl->bij", w_bg, p["clutter_grid"], w_bg, optimize=True)
    clutter /= clutter.reshape(len(clutter), -1).std(axis=1)[:, None, None] + 1e-6
    img = q["bg"] + 0.5 * q["bg_grad"] * grad * (0.35 + q["bg"]) + q["clutter"] * clutter
    # Shoulders (clothing) and neck, below the head and following its pose.
    body = mask(_ellipse_sd(u - q["body_x"], v - q["body_y"], q["body_w"], 0.55)) * q["body"]
    img = paint(img, body, q["body_tone"])
    neck = mask(np.maximum(np.abs(u) - q["neck_w"], 0.45 - v)) * np.maximum(body, mask(v - 1.6))
    img = paint(img, neck, 0.8 * q["skin"])
    # Face: an ellipse whose width narrows towards the chin (jaw > 0) or widens (jaw < 0).
    fb = q["face_b"]
    fv = v - 0.05
    fa = q["face_a"] * (1.0 - q["jaw"] * np.clip(fv / fb, 0.0, 1.0))
    face_d = _ellipse_sd(u, fv, fa, fb)
    face = mask(face_d)
    rr = (u / fa) ** 2 + (fv / fb) ** 2
    img = paint(img, face, q["skin"] * (1.0 - 0.3 * rr))
    # Hair: a cap above a (tilted, curved) hairline, and down the sides outside the face to
    # hair_len, reaching hair_vol beyond the face outline.
    hu = u - q["hair_side"]
    cap = mask(v - (q["hairline"] + q["hair_tilt"] * hu + 0.35 * (hu / fa) ** 2))
    sides = (1.0 - face) * mask(v - q["hair_len"])
    outline = mask(_ellipse_sd(hu, fv, fa, fb) - 0.08 - q["hair_vol"])
    img = paint(img, outline * np.maximum(cap, sides) * q["hair"], q["hair_tone"])
    skin_area = face * (1.0 - cap * q["hair"])

    # Upper window: eyes and brows.
    w = p["mouth_w"] * p["mouth_wf"]
    top = p["eye_y"] - p["eye_ry"] - p["brow_gap"] - p["brow_raise"] - np.abs(p["brow_inner"]) \
        - np.abs(p["brow_arch"]) - p["brow_th"] - np.abs(p["asym"])
    bottom = p["eye_y"] + p["eye_ry"] * p["eye_open"] + np.abs(p["asym"]) + 0.02
    reach = np.max(p["eye_x"] + np.maximum(p["eye_rx"], p["brow_hw"])) + 0.02
    win = _box(p, -reach, reach, top.min(), bottom.max(), size)
    uu, vv, sub, ie = u[win], v[win], img[win], inv_edge
    au, side = np.abs(uu), np.sign(uu)
    # Eyes: white, iris (clipped to the eye), lid outline.
    ev = vv - q["eye_y"] - q["asym"] * side
    eye_d = _ellipse_sd(au - q["eye_x"], ev, q["eye_rx"], q["eye_ry"] * q["eye_open"])
    eye = mask(eye_d)
    sub = paint(sub, eye, np.minimum(q["skin"] + q["white"], 1.0))
    iu = np.abs(uu - q["gaze_x"]) - q["eye_x"]
    iris = eye * mask(np.sqrt(iu * iu + (ev - q["gaze_y"]) ** 2) - q["iris_r"])
    sub = paint(sub, iris, q["iris_tone"])
    sub = sub * (1.0 - 0.6 * mask(np.abs(eye_d) - 0.012))
    # Brows: a thick curve above each eye; r runs -1 (inner end) .. 1 (outer end).
    r = (au - q["eye_x"]) / q["brow_hw"]
    bv = (q["eye_y"] - q["eye_ry"] - q["brow_gap"] - q["brow_raise"]
          + q["brow_inner"] * r - q["brow_arch"] * (1.0 - r * r) + q["asym"] * side)
    slope = 1.0 / np.sqrt(1.0 + (q["brow_inner"] / q["brow_hw"]) ** 2)
    brow = mask(np.maximum(np.abs(vv - bv) * slope - q["brow_th"] / 2, (np.abs(r) - 1.0) * q["brow_hw"]))
    img[win] = sub * (1.0 - q["brow_dark"] * brow)

    # Lower window: nose, cheek folds, mouth.
    reach = float(np.max(w)) + 0.08
    bottom = p["mouth_y"] + np.abs(p["curve"]) + p["open_lo"] + p["lip_th"] + 0.06
    win = _box(p, -reach, reach, -0.04, bottom.max(), size)
    uu, vv, sub = u[win], v[win], img[win]
    au, w = np.abs(uu), q["mouth_w"] * q["mouth_wf"]
    # Nose: a soft shadow along one side and two nostrils.
    ridge = mask(np.maximum(np.abs(uu + 0.05) - 0.012, np.abs(vv - 0.12) - 0.14))
    nostril = mask(np.sqrt((au - 0.06) ** 2 + ((vv - 0.28) * 1.6) ** 2) - 0.03)
    sub = sub * (1.0 - q["nose_dark"] * (ridge + 2.0 * nostril))
    # Cheek folds (nose wing to mouth corner), deep for happy faces.
    ax, ay, bx, by = 0.1, 0.22, w + 0.05, q["mouth_y"] - q["curve"] * 0.5 + 0.04
    px, py, dx, dy = au - ax, vv - ay, bx - ax, by - ay
    h = np.clip((px * dx + py * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    fold = mask(np.sqrt((px - h * dx) ** 2 + (py - h * dy) ** 2) - 0.01)
    sub = sub * (1.0 - 0.25 * q["fold"] * fold)
    # Mouth: a curve v = curve * (0.5 - (u/w)^2) below mouth_y, opened by open_up / open_lo.
    mr2 = (uu / w) ** 2
    sq = np.sqrt(np.clip(1.0 - mr2, 0.0, None))
    line = q["mouth_y"] + q["curve"] * (0.5 - mr2)
    upper, lower = line - q["open_up"] * sq, line + q["open_lo"] * sq
    mouth_d = np.maximum(np.abs(vv - 0.5 * (upper + lower)) - 0.5 * (lower - upper) - q["lip_th"] / 2,
                         au - w)
    mouth = mask(mouth_d)
    depth = np.clip(q["lip_dark"] + 5.0 * (q["open_up"] + q["open_lo"]), 0.0, 0.92)
    sub = sub * (1.0 - depth * mouth)
    t = np.flatnonzero(p["teeth"])  # rare parts are drawn on their samples only
    if t.size:
        teeth_d = np.maximum(np.abs(vv[t] - upper[t] - 0.02) - 0.018, au[t] - 0.75 * w[t])
        teeth = mouth[t] * mask(teeth_d, ie[t])
        sub[t] = paint(sub[t], teeth, 0.85 * np.minimum(q["skin"][t] + q["white"][t], 1.0))
    img[win] = sub

    # Occluding bar (a hand, a strap, a scarf), in image coordinates.
    o = np.flatnonzero(p["occ"])
    if o.size:
        ca, sa = np.cos(q["occ_ang"][o]), np.sin(q["occ_ang"][o])
        ox, oy = gx - q["occ_x"][o], gy - q["occ_y"][o]
        occ_d = np.maximum(np.abs(ox * sa - oy * ca) - q["occ_hw"][o],
                           np.abs(ox * ca + oy * sa) - q["occ_hl"][o])
        img[o] = paint(img[o], mask(occ_d, ie[o] / s[o]), q["occ_tone"][o])
    # Side lighting across the face (one cheek brighter).
    img = img * (1.0 + q["side_light"] * np.clip(u / q["face_a"], -1.0, 1.0) * skin_area)
    # Lighting, contrast, gamma, noise.
    gain = (1.0 + q["light"] * (np.cos(q["light_dir"]) * gx + np.sin(q["light_dir"]) * gy)) * q["contrast"]
    img = np.clip(img * gain + (0.5 - 0.5 * q["contrast"] + q["bright"]), 0.0, 1.0) ** q["gamma"]
    img += q["noise"] * rng.standard_normal(img.shape, dtype=f32)
    return np.clip(img, 0.0, 1.0, out=img)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return (img * 255.0 + 0.5).astype(np.uint8)


NEAR_COPY_KINDS = ("shift", "brightness", "contrast", "noise", "jpeg", "rescale")


def near_copy(img: np.ndarray, rng: np.random.Generator, kinds: tuple[str, ...] | None = None) -> np.ndarray:
    """A copy that is visibly the same picture but not byte-identical: what a re-upload does.

    One or two of NEAR_COPY_KINDS at random (or exactly ``kinds``, in order): a one-pixel shift
    (edge replicated), a brightness change of 2-6 gray levels, a contrast change of 4-10 %, mild
    noise (sd 1-2.5 gray levels), JPEG re-encoding at quality 80-95, or a bicubic rescale by one
    pixel (about 2 %), cropped or edge-padded back to the original size. ``img`` is (H, W) uint8.
    """
    out = img.astype(np.float32)
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
            Image.fromarray(_to_uint8(np.clip(out, 0, 255) / 255.0)).save(
                buf, format="JPEG", quality=int(rng.integers(80, 96)))
            out = np.asarray(Image.open(buf), dtype=np.float32)
        elif kind == "rescale":
            h, w = out.shape
            step = int(rng.choice([-1, 1]))
            scaled = Image.fromarray(out.astype(np.float32)).resize((w + step, h + step),
                                                                    Image.Resampling.BICUBIC)
            scaled = np.asarray(scaled)
            if step > 0:
                top, left = int(rng.integers(0, step + 1)), int(rng.integers(0, step + 1))
                out = scaled[top:top + h, left:left + w]
            else:
                top, left = int(rng.integers(0, -step + 1)), int(rng.integers(0, -step + 1))
                out = np.pad(scaled, ((top, -step - top), (left, -step - left)), mode="edge")
        else:
            raise ValueError(f"unknown near-copy kind {kind!r}; choose from {', '.join(NEAR_COPY_KINDS)}")
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if np.array_equal(out, img):  # e.g. a shift of a flat region: force a difference
        out[0, 0] = out[0, 0] + 1 if out[0, 0] < 255 else 254
    return out


def _wrong_labels(true: np.ndarray, classes: tuple[str, ...], rng: np.random.Generator,
                  avoid: np.ndarray | None = None) -> np.ndarray:
    """A label other than ``avoid`` (default: the true label) for each sample, FER-like weights."""
    avoid = true if avoid is None else avoid
    out = np.empty_like(true)
    for i, (t, a) in enumerate(zip(true, avoid)):
        w = np.array([_CONFUSION[classes[t]].get(c, 0.1) for c in classes])
        w[a] = 0.0
        if w.sum() == 0:
            w = np.ones(len(classes))
            w[a] = 0.0
        out[i] = rng.choice(len(classes), p=w / w.sum())
    return out


def generate(config: SynthConfig = SynthConfig(), progress: bool | None = False) -> SynthSet:
    """Draw the data set described by ``config`` (deterministic from ``config.seed``)."""
    config.validate()
    rng = np.random.default_rng([config.seed, 0])
    classes = tuple(config.classes)
    n_dup = int(round(config.n * config.duplicate_share))
    n_base = config.n - n_dup

    true = np.repeat(np.arange(len(classes)), _counts(n_base, config.class_shares))
    rng.shuffle(true)
    expr = np.array([EXPRESSIONS.index(c) for c in classes])[true]
    params = _sample_params(rng, expr)

    images = np.empty((n_base, config.size, config.size), dtype=np.uint8)

    def render_chunk(k: int) -> None:  # numpy releases the GIL, so chunks render in parallel
        lo = k * _CHUNK
        batch = {key: val[lo:lo + _CHUNK] for key, val in params.items()}
        noise = np.random.default_rng([config.seed, 1, k])
        images[lo:lo + _CHUNK] = _to_uint8(_render(batch, config.size, noise))

    n_chunks = -(-n_base // _CHUNK)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for _ in prog.bar(pool.map(render_chunk, range(n_chunks)), total=n_chunks, desc="synth",
                          unit="batch", progress=progress):
            pass

    # Label noise on the originals.
    labels = true.copy()
    flip = rng.choice(n_base, int(round(config.label_noise * n_base)), replace=False)
    labels[flip] = _wrong_labels(true[flip], classes, rng)

    # Injected copies: half exact, half near; a share of them carry a conflicting label.
    orig = rng.choice(n_base, n_dup, replace=False) if n_dup else np.empty(0, np.int64)
    exact = rng.random(n_dup) < 0.5
    copies = np.empty((n_dup, config.size, config.size), dtype=np.uint8)
    for i, (o, ex) in enumerate(zip(orig, exact)):
        copies[i] = images[o] if ex else near_copy(images[o], rng)
    copy_labels = labels[orig].copy()
    conflict = rng.choice(n_dup, int(round(config.conflict_share * n_dup)), replace=False)
    copy_labels[conflict] = _wrong_labels(true[orig[conflict]], classes, rng,
                                          avoid=labels[orig[conflict]])

    all_images = np.concatenate([images, copies])
    all_labels = np.concatenate([labels, copy_labels])
    all_true = np.concatenate([true, true[orig]])
    all_dup = np.concatenate([np.full(n_base, -1), orig]).astype(np.int64)
    all_kind = np.concatenate([np.full(n_base, ""), np.where(exact, "exact", "near")]).astype("<U5")

    # Shuffle so copies are spread through the set; remap dup_of to the new positions.
    perm = rng.permutation(config.n)
    where = np.empty_like(perm)
    where[perm] = np.arange(config.n)
    dup_of = all_dup[perm]
    dup_of = np.where(dup_of >= 0, where[np.maximum(dup_of, 0)], -1).astype(np.int64)
    return SynthSet(images=all_images[perm], labels=all_labels[perm].astype(np.int64),
                    true_labels=all_true[perm].astype(np.int64), dup_of=dup_of,
                    dup_kind=all_kind[perm], classes=classes, config=config)


# ----------------------------------------------------------------------------------------------
# Writing


def assign_splits(n: int, seed: int, shares: tuple[float, float, float] = SPLIT_SHARES) -> np.ndarray:
    """A seeded random train/val/test assignment (not stratified, copies not kept together)."""
    names = np.repeat(np.array(["train", "val", "test"]), _counts(n, shares))
    np.random.default_rng([seed, 2]).shuffle(names)
    return names


def _save_pngs(items: list[tuple[Path, np.ndarray]]) -> None:
    def save(item):
        path, arr = item
        Image.fromarray(arr, mode="L").save(path, format="PNG", compress_level=1)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(save, items, chunksize=64))


def _write_fer2013(path: Path, synth: SynthSet, splits: np.ndarray) -> None:
    codes = [FER2013_INDEX[c] for c in synth.classes]
    text = [str(i) for i in range(256)]
    with open(path, "w", newline="") as fh:
        fh.write("emotion,pixels,Usage\n")
        for img, label, split in zip(synth.images, synth.labels, splits):
            pixels = " ".join(map(text.__getitem__, img.ravel().tolist()))
            fh.write(f"{codes[label]},{pixels},{_USAGE[split]}\n")


def write_folders(synth: SynthSet, out_dir: str | os.PathLike, layout: str = "folders", *,
                  overwrite: bool = False) -> Path:
    """Write ``synth`` to ``out_dir`` in one of LAYOUTS, plus ``truth.csv`` and ``synth.json``.

    Layouts: ``folders`` -> ``<class>/<id>.png`` (class = given label); ``split-folders`` ->
    ``<train|val|test>/<class>/<id>.png`` from a seeded random 80/10/10 assignment (copies may land
    in other splits than their originals: leakage to detect); ``fer2013-csv`` -> ``fer2013.csv``
    with ``emotion,pixels,Usage`` rows in id order. ``truth.csv`` has ``id,file,label,true_label,
    noisy,dup_of,dup_kind`` (class names; noisy 0/1; dup_of an id or empty; for the CSV layout file
    is ``fer2013.csv#<row>`` with row counted from 0 after the header).

    The set is built in a temporary folder beside ``out_dir`` and renamed into place
    (``fer_core.storage.folder_writer``: a local folder or a storage URI). An existing non-empty
    ``out_dir`` is an error unless
    ``overwrite`` is true and it is an earlier synthetic set. Returns ``out_dir``.
    """
    if layout not in LAYOUTS:
        raise DataError(f"synth: unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    out = out_dir if storage.is_uri(out_dir) else Path(out_dir).resolve()
    config = synth.config or SynthConfig(n=len(synth), size=synth.images.shape[1], classes=synth.classes)
    ids = synth.ids()
    splits = assign_splits(len(synth), config.seed)
    # --overwrite replaces an earlier synthetic set (it holds synth.json), nothing else.
    with storage.folder_writer(out, overwrite=overwrite, kind="synthetic face set", markers=("synth.json",),
                               last=("synth.json",)) as tmp:
        os.chmod(tmp, 0o755)
        if layout == "fer2013-csv":
            if synth.images.shape[1:] != (48, 48):
                raise DataError(f"synth: fer2013-csv holds 48x48 images, these are "
                                f"{synth.images.shape[1]}x{synth.images.shape[2]}")
            _write_fer2013(tmp / "fer2013.csv", synth, splits)
            files = [f"fer2013.csv#{i}" for i in range(len(synth))]
        else:
            prefix = [f"{s}/" for s in splits] if layout == "split-folders" else [""] * len(synth)
            files = [f"{pre}{synth.classes[lab]}/{i}.png" for pre, lab, i in zip(prefix, synth.labels, ids)]
            for folder in sorted({f.rsplit("/", 1)[0] for f in files}):
                (tmp / folder).mkdir(parents=True, exist_ok=True)
            _save_pngs([(tmp / f, img) for f, img in zip(files, synth.images)])

        with open(tmp / "truth.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "file", "label", "true_label", "noisy", "dup_of", "dup_kind"])
            noisy = synth.noisy
            for i in range(len(synth)):
                d = int(synth.dup_of[i])
                writer.writerow([ids[i], files[i], synth.classes[synth.labels[i]],
                                 synth.classes[synth.true_labels[i]], int(noisy[i]),
                                 ids[d] if d >= 0 else "", synth.dup_kind[i]])
        meta = {"generator": "fer_core.data.synth", "layout": layout, "config": asdict(config),
                "counts": {"images": len(synth), "noisy": int(synth.noisy.sum()),
                           "exact": int((synth.dup_kind == "exact").sum()),
                           "near": int((synth.dup_kind == "near").sum()),
                           "conflicts": int(synth.conflict.sum())}}
        if layout != "folders":
            meta["splits"] = {s: int((splits == s).sum()) for s in ("train", "val", "test")}
        (tmp / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out
