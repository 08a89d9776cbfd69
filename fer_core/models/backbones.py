"""torchvision backbones (VGG16, ResNet-50, EfficientNet-B0) with the notebook's transfer-learning heads.

    >>> from fer_core.models import create_model
    >>> model = create_model("tv_resnet50", num_classes=4, in_chans=1,
    ...                      weights_path="weights/resnet50-imagenet.pth", freeze_base=True)

Nothing is ever downloaded: torchvision builds the network with ``weights=None`` and ``weights_path``
names a local ``state_dict`` file of the plain torchvision model (as saved by
``torch.save(torchvision.models.resnet50(weights="IMAGENET1K_V2").state_dict(), path)`` on a machine
that can download). Its ImageNet classifier is ignored. ``pretrained=True`` without ``weights_path``
is an error. With loaded weights and ``in_chans=1`` the first convolution's RGB kernels are summed
over the input channels (a gray image fed as R=G=B gives the same response); without weights the
first convolution is simply built for ``in_chans``.

The heads are the notebook's (seeds/004, section 6): global average pooling, then Dense 512 (relu)
-> BN -> dropout .5 -> Dense 256 (relu) -> dropout .3 for VGG16, Dense 256 (relu) -> BN -> dropout .5
for ResNet-50 and EfficientNet-B0, then the classifier. ``freeze_base=True`` trains only the head and
keeps the base's BatchNorm layers in inference mode (as the notebook's ``base(x, training=False)``).
Inputs must be at least 32x32 (VGG16 halves the size five times; the others also assume it);
``upscale_to`` bilinearly resizes inputs inside the model first (the notebook resized 48 -> 224).
No normalization happens inside: for ImageNet weights normalize with ImageNet's mean/std outside.
Note: the notebook's ResNet was Keras's ResNet50V2; torchvision's resnet50 is v1.5.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..validate import ARG_SEMI, check_int
from ._registry import FerModelMixin, ModelError, build_model_with_cfg, register_model
from .fer_cnn import DenseHead

__all__ = ["TorchvisionBackbone", "adapt_input_conv"]


def _kaiming_(m: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    if m.bias is not None:
        nn.init.zeros_(m.bias)


def _vgg16() -> nn.Module:
    # Only VGG's conv part: torchvision's VGG would also build (and initialize) its 120M-parameter
    # classifier, which this model never uses. Same module names, so the state_dict keys match.
    from torchvision.models import vgg

    model = nn.Module()
    model.features = features = vgg.make_layers(vgg.cfgs["D"])
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            _kaiming_(m)
    return model


def _resnet50() -> nn.Module:
    from torchvision.models import resnet50

    model = resnet50(weights=None)
    model.fc = nn.Identity()
    return model


def _efficientnet_b0() -> nn.Module:
    from torchvision.models import efficientnet_b0

    model = efficientnet_b0(weights=None)
    model.classifier = nn.Identity()
    return model


def _features_trunk(model: nn.Module) -> nn.Module:
    return model.get_submodule("features")


def _resnet_trunk(model: nn.Module) -> nn.Module:
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    return nn.Sequential(OrderedDict((n, getattr(model, n)) for n in names))


@dataclass(frozen=True)
class _Arch:
    build: Callable[[], nn.Module]  # the torchvision network, random init, classifier removed
    trunk: Callable[[nn.Module], nn.Module]  # its convolutional part, (N, C, H, W) -> feature map
    first_conv: str  # the first convolution's path inside the trunk
    classifier_keys: tuple[str, ...]  # state_dict prefixes of the (ignored) ImageNet classifier
    num_features: int


_ARCHS = {
    "vgg16": _Arch(_vgg16, _features_trunk, "0", ("classifier.",), 512),
    "resnet50": _Arch(_resnet50, _resnet_trunk, "conv1", ("fc.",), 2048),
    "efficientnet_b0": _Arch(_efficientnet_b0, _features_trunk, "0.0", ("classifier.",), 1280),
}


def _load_weights(model: nn.Module, weights_path: str | Path, arch: str, classifier_keys: tuple[str, ...]) -> None:
    path = Path(weights_path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line error
        raise ModelError(f"{path}: cannot read a state_dict ({type(exc).__name__}: {exc})") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ModelError(f"{path}: expected a state_dict (a dict of tensors), got {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(classifier_keys)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ModelError(f"{path}: not a torchvision {arch} state_dict ({str(exc).splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise ModelError(
            f"{path}: not a torchvision {arch} state_dict (missing keys: {missing[:4]}, "
            f"unexpected keys: {unexpected[:4]})"
        )


def adapt_input_conv(conv: nn.Conv2d, in_chans: int, pretrained: bool) -> nn.Conv2d:
    """``conv`` rebuilt for ``in_chans`` input channels (``conv`` itself when it already fits).

    With pretrained weights the RGB kernels are summed for ``in_chans=1``; for more channels they are
    repeated cyclically and scaled by ``3 / in_chans`` (so a constant image gives the same response).
    Without pretrained weights the new convolution gets a fresh Kaiming-normal initialization.
    """
    if conv.in_channels == in_chans:
        return conv
    # (a built Conv2d's kernel_size, stride, ... are typed tuple[int, ...], its arguments tuple[int, int])
    same: dict[str, Any] = dict(
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    new = nn.Conv2d(in_chans, conv.out_channels, **same)
    if not pretrained:
        _kaiming_(new)
        return new
    with torch.no_grad():
        weight = conv.weight
        if in_chans == 1:
            new.weight.copy_(weight.sum(dim=1, keepdim=True))
        else:
            reps = math.ceil(in_chans / weight.shape[1])
            new.weight.copy_(weight.repeat(1, reps, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans))
        if conv.bias is not None and new.bias is not None:
            new.bias.copy_(conv.bias)
    return new


class TorchvisionBackbone(FerModelMixin, nn.Module):
    """A torchvision network's convolutional part, global average pooling and a Keras-style head.

    Args:
        arch: "vgg16", "resnet50" or "efficientnet_b0".
        num_classes: classifier width (0: no classifier).
        in_chans: input channels (1 for grayscale; see the module docstring for loaded weights).
        dropout_scale: global scale on the head's dropout rates (clamped to [0, 0.95]).
        pretrained: load pretrained weights; requires ``weights_path`` (nothing is downloaded).
        weights_path: a local state_dict file of the torchvision model; loaded whenever given.
        freeze_base: train only the head; the base's BatchNorm stays in inference mode.
        upscale_to: if set, resize every input to ``upscale_to`` x ``upscale_to`` (bilinear) first.
        head_hidden, head_bn, head_dropout: the head's hidden dense widths, BatchNorm after each, and
            dropout after each (see ``DenseHead``).
    """

    min_input_size = 32

    def __init__(
        self,
        *,
        arch: str,
        num_classes: int = 4,
        in_chans: int = 1,
        dropout_scale: float = 1.0,
        pretrained: bool = False,
        weights_path: str | Path | None = None,
        freeze_base: bool = False,
        upscale_to: int | None = None,
        head_hidden: Sequence[int] = (256,),
        head_bn: bool | Sequence[bool] = True,
        head_dropout: float | Sequence[float] = 0.5,
    ):
        super().__init__()
        if arch not in _ARCHS:
            raise ModelError(f"arch must be one of {', '.join(_ARCHS)}; got {arch!r}")
        if pretrained and weights_path is None:
            raise ModelError(
                f"tv_{arch}: pretrained weights cannot be downloaded here; pass "
                f"weights_path=<a local state_dict file of torchvision's {arch}>"
            )
        if weights_path is not None and not Path(weights_path).is_file():
            raise ModelError(f"tv_{arch}: weights_path {str(weights_path)!r} is not a file")
        if in_chans < 1:
            raise ModelError(f"in_chans must be >= 1; got {in_chans!r}")
        if upscale_to is not None:
            check_int(
                upscale_to,
                "upscale_to",
                low=self.min_input_size,
                kind=int,
                one_rule=True,
                error=ModelError,
                template=ARG_SEMI,
            )
        spec = _ARCHS[arch]
        self.arch, self.num_classes, self.in_chans = arch, num_classes, in_chans
        self.freeze_base, self.upscale_to = freeze_base, upscale_to
        self.pretrained = weights_path is not None
        self._first_conv = spec.first_conv

        base = spec.build()
        if weights_path is not None:
            _load_weights(base, weights_path, arch, spec.classifier_keys)
        self.trunk = spec.trunk(base)
        self._set_first_conv(adapt_input_conv(self.first_conv, in_chans, self.pretrained))
        self.num_features_base = spec.num_features
        self.head = DenseHead(
            spec.num_features,
            num_classes=num_classes,
            hidden=head_hidden,
            bn=head_bn,
            dropout=head_dropout,
            dropout_scale=dropout_scale,
        )
        self.num_features = self.head.num_features
        if freeze_base:
            self.trunk.requires_grad_(False)
            self.trunk.eval()

    @property
    def first_conv(self) -> nn.Conv2d:
        """The base's first convolution (the one adapted to ``in_chans``)."""
        return cast(nn.Conv2d, self.trunk.get_submodule(self._first_conv))

    def _set_first_conv(self, conv: nn.Conv2d) -> None:
        parent, _, leaf = self._first_conv.rpartition(".")
        setattr(self.trunk.get_submodule(parent) if parent else self.trunk, leaf, conv)

    def train(self, mode: bool = True) -> TorchvisionBackbone:
        """As ``nn.Module.train``, but a frozen base always stays in inference mode."""
        super().train(mode)
        if self.freeze_base:
            self.trunk.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Optional upscaling, then the base: (N, C, H, W) -> its last feature map."""
        if self.upscale_to is not None:
            x = F.interpolate(x, size=(self.upscale_to, self.upscale_to), mode="bilinear", align_corners=False)
        if min(x.shape[-2:]) < self.min_input_size:
            raise ModelError(
                f"tv_{self.arch} needs inputs of at least {self.min_input_size}x"
                f"{self.min_input_size}; got {tuple(x.shape[-2:])} (set upscale_to)"
            )
        return self.trunk(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pooling, the hidden dense layers, the classifier."""
        return self.head(x.mean(dim=(2, 3)), pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a new one of width ``num_classes`` (0: none)."""
        self.head.reset(num_classes)
        self.num_classes = num_classes


def _create_tv(arch: str, pretrained: bool, kwargs: dict, defaults: dict) -> TorchvisionBackbone:
    return build_model_with_cfg(
        TorchvisionBackbone, f"tv_{arch}", kwargs, pretrained=pretrained, fixed=dict(arch=arch), defaults=defaults
    )


_HEAD_256 = dict(head_hidden=(256,), head_bn=True, head_dropout=0.5)


@register_model
def tv_vgg16(pretrained: bool = False, **kwargs) -> TorchvisionBackbone:
    """torchvision VGG16 (conv part) + the notebook's head: Dense 512 + BN + .5, Dense 256 + .3.

    Needs inputs >= 32x32. With ``in_chans=3, num_classes=4, freeze_base=True`` its parameter
    counts equal the notebook's VGG16_FER (15,111,748 total, 396,036 trainable).
    """
    return _create_tv(
        "vgg16", pretrained, kwargs, dict(head_hidden=(512, 256), head_bn=(True, False), head_dropout=(0.5, 0.3))
    )


@register_model
def tv_resnet50(pretrained: bool = False, **kwargs) -> TorchvisionBackbone:
    """torchvision ResNet-50 (ImageNet stem: 7x7 stride 2 + max-pool) + head Dense 256 + BN + .5."""
    return _create_tv("resnet50", pretrained, kwargs, _HEAD_256)


@register_model
def tv_efficientnet_b0(pretrained: bool = False, **kwargs) -> TorchvisionBackbone:
    """torchvision EfficientNet-B0 + head Dense 256 + BN + .5."""
    return _create_tv("efficientnet_b0", pretrained, kwargs, _HEAD_256)
