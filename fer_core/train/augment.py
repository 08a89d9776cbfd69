"""Augmentation presets applied to whole batches on the training device: ``none``, ``flip``, ``soft``, ``strong``.

The trainer moves a uint8 batch to the device, scales it to [0, 1], augments it here and normalizes
afterwards. Nothing runs per image in Python: every random parameter is drawn for the whole batch
as a tensor, all geometric transforms (flip, rotation, zoom, translation) are one affine matrix per
image applied by a single ``F.affine_grid`` + ``F.grid_sample``, and random erasing is a mask built
from coordinate grids. A batch of 4096 48x48 faces is a handful of kernels, on CPU or CUDA.

Presets (``AUGMENT_PRESETS``):

- ``none``: identity (the input tensor itself is returned).
- ``flip``: random horizontal flips only (a hand-written notebook's ``RandomHorizontalFlip``).
- ``soft``: the capstone notebook's Keras pipeline ``RandomFlip("horizontal")``,
  ``RandomRotation(0.05)`` (+-18 degrees), ``RandomZoom(0.05)``, ``RandomContrast(0.05)``, with
  Keras' "reflect" fill.
- ``strong``: flip, rotation +-15 degrees, zoom 0.9-1.1, translation +-10%, brightness +-0.2,
  contrast 0.7-1.3 and, for half the images, random erasing of 2-15% of the image.

Randomness comes only from the ``generator`` passed in (or the default RNG of the input's device),
so a seeded run is reproducible. Each call draws one (N, 13) uniform tensor whatever the settings,
one column per random quantity, so with one seed two settings see the same random numbers per
image (e.g. ``soft`` and ``strong`` flip the same images).

Example::

    from fer_core.train.augment import create_augment
    augment = create_augment("strong", erase_p=0.25)     # a preset, with a sweepable override
    g = torch.Generator(device="cuda").manual_seed(0)
    x = augment(xb.cuda().float().div_(255), generator=g)  # (N, C, H, W) in [0, 1], then normalize
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..validate import check_number, is_real

# Preset name -> Augment keyword arguments.
_PRESETS: dict[str, dict] = {
    "none": {},
    "flip": dict(flip=True),
    "soft": dict(flip=True, rotation=0.05, zoom=0.05, contrast=0.05),
    "strong": dict(flip=True, rotation=15 / 360, zoom=0.1, translate=0.1, brightness=0.2, contrast=0.3, erase_p=0.5),
}
AUGMENT_PRESETS: tuple[str, ...] = tuple(_PRESETS)

# Columns of the per-image uniform draw (see the module docstring).
_FLIP, _ANGLE, _SCALE, _TX, _TY, _BRIGHT, _CONTRAST, _ERASE, _AREA, _RATIO, _TOP, _LEFT, _FILL = range(13)
_NUM_DRAWS = 13


def _check_range(name: str, value, hi: float, rule: str) -> tuple[float, float]:
    """``value`` as a (lo, hi) float pair, or ``ValueError`` quoting it unless 0 < lo <= hi <= ``hi``."""
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(is_real(v) for v in value)
    if ok:
        lo_v, hi_v = (float(v) for v in value)
        ok = 0.0 < lo_v <= hi_v <= hi
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return lo_v, hi_v


def _uniform(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Uniform [0, 1) draws ``u`` mapped to [lo, hi)."""
    return lo + (hi - lo) * u


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample images ``x`` (N, C, H, W) through affine matrices ``theta`` (N, 2, 3), in one call.

    ``theta`` maps each output pixel's normalized coordinates (x, y in [-1, 1], ``align_corners=
    False``) to the input's, as ``F.affine_grid``: the identity matrix returns ``x`` (to float
    rounding, ~1e-6), ``[[-1, 0, 0], [0, 1, 0]]`` mirrors it. Bilinear, with reflection padding
    (Keras' ``fill_mode="reflect"``).

    Example::

        eye = torch.eye(2, 3).expand(len(x), 2, 3)
        torch.testing.assert_close(warp(x, eye), x, atol=1e-5, rtol=0)
    """
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


class Augment(nn.Module):
    """Random flip, rotation, zoom, translation, brightness, contrast and erasing of a batch on its device.

    In this order, each image independently (all ranges uniform unless said otherwise):

    1. Geometry, one affine resampling (``warp``): a horizontal mirror with probability 0.5
       (``flip``), a rotation by up to ``rotation`` of a full turn either way, a zoom by a scale
       in [1 - ``zoom``, 1 + ``zoom``] (same for both axes; > 1 enlarges the face), and a shift
       by up to ``translate`` of the width / height either way. Angles are true angles on
       non-square images too. A flip with no other geometry is an exact mirror, not a resampling.
    2. Photometry: ``x + b`` with b in [-``brightness``, ``brightness``] (one b per image), and
       ``(x - mean) * f + mean`` with f in [1 - ``contrast``, 1 + ``contrast``] and the mean per
       image and channel (Keras' ``RandomContrast``). The two commute.
    3. Clamp to [0, 1].
    4. Random erasing (Zhong et al. 2017, https://arxiv.org/abs/1708.04896, as torchvision's
       ``RandomErasing``) with probability ``erase_p``: one rectangle covering ``erase_scale`` of
       the image area at an aspect ratio (height / width) log-uniform in ``erase_ratio``, at a
       uniform position inside the image, filled on all channels with 0 or (with probability 0.5)
       the image's per-channel mean.

    All settings 0 / False is the identity: the input tensor itself is returned.

    Example::

        augment = Augment(flip=True, rotation=0.05, zoom=0.05, contrast=0.05)   # the "soft" preset
        out = augment(x, generator=torch.Generator().manual_seed(0))

    Args:
        flip: mirror left-right with probability 0.5.
        rotation: the largest rotation, as a fraction of a full turn (Keras' ``RandomRotation``
            factor), in [0, 0.5]: 0.05 is +-18 degrees.
        zoom: the largest relative change of scale, in [0, 1) (Keras' ``RandomZoom`` factor).
        translate: the largest shift, as a fraction of the width (x) and height (y), in [0, 1].
        brightness: the largest value added, in [0, 1] (images are in [0, 1]).
        contrast: the largest relative change of contrast, in [0, 1] (Keras' ``RandomContrast``).
        erase_p: the probability of erasing a rectangle, in [0, 1].
        erase_scale: (lo, hi), the erased fraction of the image area, 0 < lo <= hi <= 1.
        erase_ratio: (lo, hi), the erased rectangle's aspect ratio range, 0 < lo <= hi.

    Pitfall: the input must be in [0, 1] (normalize after augmenting): the output is clamped to
    [0, 1] and the erasing fill 0 is black only before normalization.
    """

    def __init__(
        self,
        *,
        flip: bool = False,
        rotation: float = 0.0,
        zoom: float = 0.0,
        translate: float = 0.0,
        brightness: float = 0.0,
        contrast: float = 0.0,
        erase_p: float = 0.0,
        erase_scale: tuple[float, float] = (0.02, 0.15),
        erase_ratio: tuple[float, float] = (0.3, 3.3),
    ):
        super().__init__()
        if not isinstance(flip, bool):
            raise ValueError(f"flip must be True or False, got {flip!r}")
        self.flip = flip
        self.rotation = check_number(
            rotation, "rotation", low=0.0, high=0.5, rule="a fraction of a full turn in [0, 0.5] (0.05 is +-18 degrees)"
        )
        self.zoom = check_number(zoom, "zoom", low=0.0, high=1.0, high_open=True, rule="a float in [0, 1)")
        self.translate = check_number(
            translate, "translate", low=0.0, high=1.0, rule="a fraction of the size in [0, 1]"
        )
        self.brightness = check_number(brightness, "brightness", low=0.0, high=1.0, rule="a float in [0, 1]")
        self.contrast = check_number(contrast, "contrast", low=0.0, high=1.0, rule="a float in [0, 1]")
        self.erase_p = check_number(erase_p, "erase_p", low=0.0, high=1.0, rule="a probability in [0, 1]")
        self.erase_scale = _check_range(
            "erase_scale", erase_scale, 1.0, "a pair (lo, hi) of area fractions with 0 < lo <= hi <= 1"
        )
        self.erase_ratio = _check_range(
            "erase_ratio", erase_ratio, math.inf, "a pair (lo, hi) of aspect ratios with 0 < lo <= hi"
        )

    @property
    def warps(self) -> bool:
        """Whether the geometry needs a resampling (any rotation, zoom or translation)."""
        return self.rotation > 0 or self.zoom > 0 or self.translate > 0

    @property
    def is_identity(self) -> bool:
        """Whether every setting is off, so that ``augment(x) is x``."""
        return not (self.flip or self.warps or self.brightness > 0 or self.contrast > 0 or self.erase_p > 0)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment the batch ``x`` (N, C, H, W) float in [0, 1]: same shape, dtype, device and layout.

        ``generator`` (on ``x``'s device) is the only source of randomness; None uses the default RNG.
        """
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            got = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"augment expects a float tensor (N, C, H, W) in [0, 1], got a {got}")
        if generator is not None and generator.device.type != x.device.type:
            raise ValueError(f"augment: the generator is on {generator.device} but the batch on {x.device}")
        if self.is_identity or x.shape[0] == 0:
            return x
        return self.transform(x, self.draws(x.shape[0], x.device, generator))

    @property
    def settings(self) -> tuple:
        """Every setting, for telling whether two augmentations do the same (one ``transform`` of a batch for both)."""
        return (
            self.flip,
            self.rotation,
            self.zoom,
            self.translate,
            self.brightness,
            self.contrast,
            self.erase_p,
            self.erase_scale,
            self.erase_ratio,
        )

    def draws(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """The random numbers of a batch of ``n`` images (``(n, D)`` float32 uniforms, one column per setting),
        drawn as ``forward`` draws them. ``transform(x, draws(...))`` is ``forward``'s work without the drawing,
        so one ``transform`` can serve several batches' draws concatenated (packed trials)."""
        return torch.rand(n, _NUM_DRAWS, generator=generator, device=device)

    def transform(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Augment the batch ``x`` (N, C, H, W) float in [0, 1] with the draws ``u`` (N, D) of ``draws``: each
        image depends only on its own row of ``u``. The identity returns ``x``."""
        if self.is_identity or x.shape[0] == 0:
            return x
        n, _, h, w = x.shape
        if tuple(u.shape) != (n, _NUM_DRAWS):
            raise ValueError(
                f"augment: draws must be of shape ({n}, {_NUM_DRAWS}) for this batch, got {tuple(u.shape)}"
            )
        if self.warps:
            out = warp(x, self._matrices(u, h, w))
        elif self.flip:
            out = torch.where((u[:, _FLIP] < 0.5).view(n, 1, 1, 1), x.flip(-1), x)
        else:
            out = x
        if self.brightness > 0 or self.contrast > 0:
            out = self._photometric(out, u)
        out = out.clamp(0.0, 1.0)
        if self.erase_p > 0:
            out = self._erase(out, u)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def _matrices(self, u: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(N, 2, 3) ``affine_grid`` matrices for the draws ``u``: output coordinates -> input coordinates.

        In centred pixel coordinates ``p_in = R(angle) F p_out / scale + shift`` (F: the flip);
        ``affine_grid`` works in coordinates normalized per axis (x * 2/W, y * 2/H), hence the H/W
        factors on the rotation's off-diagonal terms and the shift's factor 2.
        """
        angle = _uniform(u[:, _ANGLE], -1.0, 1.0) * (self.rotation * 2 * math.pi)
        scale = _uniform(u[:, _SCALE], 1.0 - self.zoom, 1.0 + self.zoom)
        tx = _uniform(u[:, _TX], -1.0, 1.0) * (2 * self.translate)
        ty = _uniform(u[:, _TY], -1.0, 1.0) * (2 * self.translate)
        sign = torch.where(u[:, _FLIP] < 0.5, -1.0, 1.0) if self.flip else torch.ones_like(angle)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        return torch.stack(
            [torch.stack([cos * sign, -sin * (h / w), tx], dim=1), torch.stack([sin * (w / h) * sign, cos, ty], dim=1)],
            dim=1,
        )

    def _photometric(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Brightness (added) and contrast (scaled about the per-image, per-channel mean); no clamp."""
        n = x.shape[0]
        if self.contrast > 0:
            f = _uniform(u[:, _CONTRAST], 1.0 - self.contrast, 1.0 + self.contrast)
            f = f.to(x.dtype).view(n, 1, 1, 1)
            mean = x.mean(dim=(2, 3), keepdim=True)
            x = (x - mean) * f + mean
        if self.brightness > 0:
            x = x + _uniform(u[:, _BRIGHT], -self.brightness, self.brightness).to(x.dtype).view(n, 1, 1, 1)
        return x

    def _erase(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Random erasing as one (N, 1, H, W) mask from row and column grids compared with each box."""
        n, _, h, w = x.shape
        area = _uniform(u[:, _AREA], *self.erase_scale) * (h * w)
        log_lo, log_hi = (math.log(r) for r in self.erase_ratio)
        ratio = torch.exp(_uniform(u[:, _RATIO], log_lo, log_hi))
        eh = torch.sqrt(area * ratio).round().clamp(1, h)
        ew = torch.sqrt(area / ratio).round().clamp(1, w)
        # floor(u * (free + 1)) is uniform over 0..free; the minimum guards float rounding at u ~ 1.
        top = torch.minimum(torch.floor(u[:, _TOP] * (h - eh + 1)), h - eh).view(n, 1, 1)
        left = torch.minimum(torch.floor(u[:, _LEFT] * (w - ew + 1)), w - ew).view(n, 1, 1)
        rows = torch.arange(h, device=x.device, dtype=u.dtype).view(1, h, 1)
        cols = torch.arange(w, device=x.device, dtype=u.dtype).view(1, 1, w)
        inside = (rows >= top) & (rows < top + eh.view(n, 1, 1)) & (cols >= left) & (cols < left + ew.view(n, 1, 1))
        mask = (inside & (u[:, _ERASE] < self.erase_p).view(n, 1, 1)).unsqueeze(1)  # (N, 1, H, W)
        use_mean = (u[:, _FILL] < 0.5).view(n, 1, 1, 1)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        fill = torch.where(use_mean, x.mean(dim=(2, 3), keepdim=True), zero)  # (N, C, 1, 1)
        return torch.where(mask, fill, x)

    def extra_repr(self) -> str:
        s = (
            f"flip={self.flip}, rotation={self.rotation:g}, zoom={self.zoom:g}, "
            f"translate={self.translate:g}, brightness={self.brightness:g}, contrast={self.contrast:g}, "
            f"erase_p={self.erase_p:g}"
        )
        if self.erase_p > 0:
            s += f", erase_scale={self.erase_scale}, erase_ratio={self.erase_ratio}"
        return s


def create_augment(name: str, **overrides) -> Augment:
    """Build the augmentation preset ``name`` (one of ``AUGMENT_PRESETS``), with optional overrides.

    ``overrides`` are ``Augment`` keyword arguments replacing the preset's; those that are ``None``
    are dropped, so a sweep or CLI default of ``None`` means "the preset's own value". Raises
    ``ValueError`` for an unknown name (listing the valid ones), an argument ``Augment`` does not
    take (naming it) and, from ``Augment``, a bad value (quoting it).

    Example::

        augment = create_augment("soft")
        augment = create_augment("strong", erase_p=None, brightness=0.1)   # erase_p stays 0.5
    """
    if name not in _PRESETS:
        raise ValueError(f"unknown augment preset {name!r}; valid presets: {', '.join(AUGMENT_PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    accepted = [p for p in inspect.signature(Augment).parameters]
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ValueError(
            f"augment preset {name!r} got unknown argument(s) {', '.join(map(repr, unknown))}; "
            f"Augment takes: {', '.join(accepted)}"
        )
    return Augment(**{**_PRESETS[name], **overrides})
