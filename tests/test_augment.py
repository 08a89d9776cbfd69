import pytest
import torch

from fer_core.train.augment import AUGMENT_PRESETS, Augment, create_augment, warp
from fer_core.train.config import AUGMENTS


def images(n=8, c=1, h=48, w=48, seed=0, lo=0.0, hi=1.0, dtype=torch.float32):
    """Uniform noise in [lo, hi): every pixel distinct, no symmetry."""
    g = torch.Generator().manual_seed(seed)
    return (lo + (hi - lo) * torch.rand(n, c, h, w, generator=g)).to(dtype)


def seeded(seed):
    return torch.Generator().manual_seed(seed)


# --- presets and arguments --------------------------------------------------------------------


def test_presets():
    assert AUGMENT_PRESETS == ("none", "flip", "soft", "strong") == AUGMENTS  # the trainer's choices
    flip = create_augment("flip")
    others = (flip.rotation, flip.zoom, flip.translate, flip.brightness, flip.contrast, flip.erase_p)
    assert flip.flip and others == (0,) * 6
    soft = create_augment("soft")
    assert (soft.flip, soft.rotation, soft.zoom, soft.contrast) == (True, 0.05, 0.05, 0.05)
    assert (soft.translate, soft.brightness, soft.erase_p) == (0.0, 0.0, 0.0)
    strong = create_augment("strong")
    assert strong.rotation * 360 == pytest.approx(15.0)
    assert (strong.zoom, strong.translate, strong.brightness, strong.contrast, strong.erase_p) == (
        0.1,
        0.1,
        0.2,
        0.3,
        0.5,
    )
    assert "rotation=0.05" in repr(soft) and "erase_scale=(0.02, 0.15)" in repr(strong)


def test_overrides_none_means_preset_value():
    aug = create_augment("strong", erase_p=None, brightness=0.1)
    assert (aug.erase_p, aug.brightness) == (0.5, 0.1)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown augment preset 'medium'.*none, flip, soft, strong"):
        create_augment("medium")


def test_unknown_override_is_named():
    with pytest.raises(ValueError, match=r"got unknown argument\(s\) 'hue'"):
        create_augment("soft", hue=0.1)


@pytest.mark.parametrize(
    "kwargs, quoted",
    [
        (dict(rotation=-0.1), "-0.1"),
        (dict(rotation=0.6), "0.6"),
        (dict(zoom=1.0), "1.0"),
        (dict(translate=float("nan")), "nan"),
        (dict(brightness="0.2"), "'0.2'"),
        (dict(contrast=1.5), "1.5"),
        (dict(erase_p=2), "2"),
        (dict(flip=1), "1"),
        (dict(erase_scale=(0.2, 0.1)), r"\(0.2, 0.1\)"),
        (dict(erase_ratio=(0.0, 3.0)), r"\(0.0, 3.0\)"),
        (dict(zoom=True), "True"),
    ],
)
def test_bad_values_raise_quoting_them(kwargs, quoted):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=rf"{name} must be .*got {quoted}$"):
        Augment(**kwargs)


@pytest.mark.parametrize("bad", [torch.rand(1, 48, 48), torch.zeros(2, 1, 8, 8, dtype=torch.uint8)])
def test_bad_input_raises(bad):
    with pytest.raises(ValueError, match=r"float tensor \(N, C, H, W\)"):
        create_augment("soft")(bad)


# --- what comes out ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", AUGMENT_PRESETS)
@pytest.mark.parametrize("c, dtype", [(1, torch.float32), (3, torch.float64)])
def test_shape_dtype_device_and_range_preserved(name, c, dtype):
    x = images(16, c, dtype=dtype)
    out = create_augment(name)(x, generator=seeded(0))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1


def test_none_is_identity():
    x = images()
    assert create_augment("none")(x) is x
    assert Augment()(x) is x


def test_flip_mirrors_some_images_and_leaves_the_others_untouched():
    x = images(32)
    out = create_augment("flip")(x, generator=seeded(0))
    same = [bool(torch.equal(o, i)) for o, i in zip(out, x, strict=True)]
    mirrored = [bool(torch.allclose(o, i.flip(-1), atol=1e-5)) for o, i in zip(out, x, strict=True)]
    assert all(s != m for s, m in zip(same, mirrored, strict=True))  # each image one or the other
    assert 0 < sum(mirrored) < len(x)


@pytest.mark.parametrize("name", ["soft", "strong"])
def test_seeded_runs_repeat_and_seeds_differ(name):
    x, aug = images(16, 3), create_augment(name)
    a = aug(x, generator=seeded(1))
    assert torch.equal(a, aug(x, generator=seeded(1)))
    assert not torch.equal(a, aug(x, generator=seeded(2)))
    assert not torch.equal(a, x)


def test_default_rng_when_no_generator():
    x, aug = images(), create_augment("soft")
    torch.manual_seed(5)
    a = aug(x)
    torch.manual_seed(5)
    assert torch.equal(a, aug(x))


def test_flip_only_gives_the_image_or_its_mirror_exactly():
    x = images(64)
    out = Augment(flip=True)(x, generator=seeded(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert torch.all(same ^ mirrored)
    assert 10 < mirrored.sum() < 54  # about half of them


def test_identity_and_mirror_matrices_are_exact():
    x = images(4, 3, h=48, w=40)
    eye = torch.eye(2, 3).expand(4, 2, 3)
    torch.testing.assert_close(warp(x, eye), x, atol=1e-5, rtol=0)
    mirror = torch.tensor([[-1.0, 0, 0], [0, 1, 0]]).expand(4, 2, 3)
    torch.testing.assert_close(warp(x, mirror), x.flip(-1), atol=1e-5, rtol=0)


def test_zero_rotation_zoom_translate_gives_the_input_back():
    # Tiny settings run the whole random-matrix path, with angles and shifts that round to 0.
    x = images(8, 3)
    out = Augment(rotation=1e-12, zoom=1e-12, translate=1e-12)(x, generator=seeded(0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_matrices_are_true_rotations_and_zooms_on_non_square_images():
    # In pixel units (affine_grid's normalized coordinates times W/2, H/2) each matrix must be
    # R(angle) F / scale: orthogonal up to 1/scale^2, a mirror (det < 0) for the flipped images.
    n, h, w = 256, 48, 32
    aug = Augment(flip=True, rotation=0.5, zoom=0.1, translate=0.1)
    theta = aug._matrices(torch.rand(n, 13, generator=seeded(0)), h, w)
    s = torch.diag(torch.tensor([w / 2, h / 2]))
    a = s @ theta[:, :, :2] @ torch.linalg.inv(s)
    aat = a @ a.transpose(1, 2)
    inv_scale2 = aat[:, 0, 0]
    torch.testing.assert_close(aat, inv_scale2.view(n, 1, 1) * torch.eye(2))
    scale = inv_scale2.rsqrt()
    assert scale.min() >= 0.9 - 1e-5 and scale.max() <= 1.1 + 1e-5
    flipped = torch.linalg.det(a) < 0
    assert 80 < flipped.sum() < 176
    assert theta[:, :, 2].abs().max() <= 2 * 0.1 + 1e-6  # shifts: 10% of the size, normalized


def test_contrast_factor_range():
    x = images(256, 3, lo=0.4, hi=0.6)  # a factor <= 1.05 cannot clamp these
    out = Augment(contrast=0.05)(x, generator=seeded(0))
    ratio = out.std(dim=(2, 3)) / x.std(dim=(2, 3))
    assert ratio.min() >= 0.95 - 1e-5 and ratio.max() <= 1.05 + 1e-5
    assert ratio.min() < 0.96 and ratio.max() > 1.04  # the whole range is used
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))  # one factor for all channels
    torch.testing.assert_close(out.mean(dim=(2, 3)), x.mean(dim=(2, 3)))  # about the mean


def test_brightness_is_one_shift_per_image():
    x = images(64, 3, lo=0.3, hi=0.7)
    out = Augment(brightness=0.2)(x, generator=seeded(0))
    shift = (out - x).flatten(1)
    torch.testing.assert_close(shift, shift[:, :1].expand_as(shift))
    assert shift.abs().max() <= 0.2 + 1e-6 and shift.min() < -0.15 and shift.max() > 0.15


def test_erasing_creates_a_constant_rectangle():
    n, c, h, w = 64, 3, 48, 48
    x = images(n, c, h, w)
    out = Augment(erase_p=1.0)(x, generator=seeded(0))
    fills = set()
    for i in range(n):
        changed = (out[i] != x[i]).any(0)  # (H, W)
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        box = out[i, :, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert changed.sum() == box[0].numel()  # the changed pixels fill their bounding box
        assert 0.02 * h * w * 0.8 <= box[0].numel() <= 0.15 * h * w * 1.2
        assert torch.all(box == box[:, :1, :1])  # constant per channel
        fill = box[:, 0, 0]
        if torch.all(fill == 0):
            fills.add("zero")
        else:
            torch.testing.assert_close(fill, x[i].mean(dim=(1, 2)))
            fills.add("mean")
    assert fills == {"zero", "mean"}


def test_erase_probability():
    x = images(400, 1, h=16, w=16)
    out = Augment(erase_p=0.5)(x, generator=seeded(0))
    erased = (out != x).flatten(1).any(1).float().mean()
    assert 0.4 < erased < 0.6


@pytest.mark.parametrize("name", ["soft", "strong"])
def test_channels_last_input(name):
    x = images(8, 3)
    aug = create_augment(name)
    out = aug(x.contiguous(memory_format=torch.channels_last), generator=seeded(3))
    assert out.shape == x.shape and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, aug(x, generator=seeded(3)))


def test_a_large_batch_goes_through_one_vectorized_call():
    x = torch.rand(4096, 1, 48, 48)
    out = create_augment("strong")(x, generator=seeded(0))
    assert out.shape == x.shape
    assert (out != x).flatten(1).any(1).all()  # every image was changed


def test_empty_batch():
    x = torch.rand(0, 1, 48, 48)
    assert create_augment("strong")(x).shape == x.shape


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generator_reproducible():
    x = images(32, 3).cuda()
    aug = create_augment("strong")
    a = aug(x, generator=torch.Generator(device="cuda").manual_seed(0))
    assert a.device == x.device
    assert torch.equal(a, aug(x, generator=torch.Generator(device="cuda").manual_seed(0)))
    with pytest.raises(ValueError, match="generator is on cpu"):
        aug(x, generator=seeded(0))
