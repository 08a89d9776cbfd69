"""Rendering: cartoon faces drawn in numpy, a whole batch at a time.

Every image is one cartoon face:

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
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ... import progress as prog
from .dataset import EXPRESSIONS

_CHUNK = 64  # images rendered per numpy batch (fixed: the noise stream depends on it)
_CLUTTER = 5  # background clutter: a random CLUTTER x CLUTTER grid, smoothly interpolated


def render_params(params: dict[str, np.ndarray], size: int, seed: int, progress: bool | None = False) -> np.ndarray:
    """Draw one face per row of ``params`` (what :func:`sample_params` returns, possibly edited): (n, size, size) uint8.

    The pixel noise of chunk k comes from its own stream ``default_rng([seed, 1, k])``, so the
    chunks render in parallel.
    """
    n = len(params["rot"])
    images = np.empty((n, size, size), dtype=np.uint8)

    def render_chunk(k: int) -> None:  # numpy releases the GIL, so chunks render in parallel
        lo = k * _CHUNK
        batch = {key: val[lo : lo + _CHUNK] for key, val in params.items()}
        noise = np.random.default_rng([seed, 1, k])
        images[lo : lo + _CHUNK] = to_uint8(_render(batch, size, noise))

    n_chunks = -(-n // _CHUNK)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for _ in prog.bar(
            pool.map(render_chunk, range(n_chunks)), total=n_chunks, desc="synth", unit="batch", progress=progress
        ):
            pass
    return images


# ----------------------------------------------------------------------------------------------
# Parameters


def sample_params(rng: np.random.Generator, expr: np.ndarray, strength: float = 1.0) -> dict[str, np.ndarray]:
    """Per-sample drawing parameters (float32 arrays of length n) for expression codes ``expr``.

    ``strength`` scales every expression's intensity (1: as drawn; the random streams do not depend on it).
    """
    n = len(expr)
    U = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    N = lambda sd: rng.normal(0.0, sd, n)  # noqa: E731
    happy, neutral, sad, surprise = (expr == EXPRESSIONS.index(c) for c in ("happy", "neutral", "sad", "surprise"))
    # Expression intensity: 0 looks neutral, 1 is a full expression. Sad reaches close to 0.
    t = strength * np.select([happy, sad, surprise], [U(0.1, 1.0), U(0.0, 1.0) ** 1.3, U(0.2, 1.0)], 0.0)

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
    p["open_up"] = np.select([smile_open, surprise, parted], [0.01 + 0.03 * t, 0.04 + 0.08 * t, U(0.005, 0.015)], 0.0)
    p["open_lo"] = np.select([smile_open, surprise, parted], [0.03 + 0.07 * t, 0.04 + 0.09 * t, U(0.005, 0.015)], 0.0)
    p["teeth"] = smile_open * (rng.random(n) < 0.8) * 1.0
    p["mouth_wf"] = U(0.92, 1.08) * np.select([happy, sad, surprise], [1 + 0.25 * t, 1 - 0.08 * t, 0.6 - 0.15 * t], 1.0)
    p["eye_open"] = U(0.88, 1.12) * np.select([happy, sad, surprise], [1 - 0.4 * t, 1 - 0.15 * t, 1.3 + 0.5 * t], 1.0)
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
    p["jaw"] = U(-0.1, 0.3)  # > 0 narrows the chin
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
# Drawing


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
    gx, gy = c[None, None, :], c[:, None][None]  # (1,1,W), (1,H,1)
    q = {k: v[:, None, None] for k, v in p.items() if v.ndim == 1}  # (B,1,1) each

    cos, sin, s = np.cos(q["rot"]), np.sin(q["rot"]), q["scale"]
    X, Y = gx - q["tx"], gy - q["ty"]
    u = (cos * X + sin * Y) / s
    v = (cos * Y - sin * X) / s
    inv_edge = s / ((2.0 / size) * q["blur"])  # 1 / ramp width, face units

    def mask(d, scale=inv_edge):
        return np.clip(0.5 - d * scale, 0.0, 1.0)

    def paint(img, m, tone):
        return img + m * (tone - img)

    # Background: a level, a linear gradient in a random direction and smooth clutter.
    grad = np.cos(q["bg_dir"]) * gx + np.sin(q["bg_dir"]) * gy
    w_bg = np.exp(-0.5 * ((c[:, None] - np.linspace(-1.2, 1.2, _CLUTTER, dtype=f32)) / 0.35) ** 2)
    w_bg /= w_bg.sum(axis=1, keepdims=True)  # (size, CLUTTER)
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
    top = (
        p["eye_y"]
        - p["eye_ry"]
        - p["brow_gap"]
        - p["brow_raise"]
        - np.abs(p["brow_inner"])
        - np.abs(p["brow_arch"])
        - p["brow_th"]
        - np.abs(p["asym"])
    )
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
    bv = (
        q["eye_y"]
        - q["eye_ry"]
        - q["brow_gap"]
        - q["brow_raise"]
        + q["brow_inner"] * r
        - q["brow_arch"] * (1.0 - r * r)
        + q["asym"] * side
    )
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
    mouth_d = np.maximum(np.abs(vv - 0.5 * (upper + lower)) - 0.5 * (lower - upper) - q["lip_th"] / 2, au - w)
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
        occ_d = np.maximum(np.abs(ox * sa - oy * ca) - q["occ_hw"][o], np.abs(ox * ca + oy * sa) - q["occ_hl"][o])
        img[o] = paint(img[o], mask(occ_d, ie[o] / s[o]), q["occ_tone"][o])
    # Side lighting across the face (one cheek brighter).
    img = img * (1.0 + q["side_light"] * np.clip(u / q["face_a"], -1.0, 1.0) * skin_area)
    # Lighting, contrast, gamma, noise.
    gain = (1.0 + q["light"] * (np.cos(q["light_dir"]) * gx + np.sin(q["light_dir"]) * gy)) * q["contrast"]
    img = np.clip(img * gain + (0.5 - 0.5 * q["contrast"] + q["bright"]), 0.0, 1.0) ** q["gamma"]
    img += q["noise"] * rng.standard_normal(img.shape, dtype=f32)
    return np.clip(img, 0.0, 1.0, out=img)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (img * 255.0 + 0.5).astype(np.uint8)
