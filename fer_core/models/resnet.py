"""ResNets for small faces, and the Plain-34 / SE-ResNet-34 / Mish-ResNet-34 variants of seeds/002.

    >>> import torch
    >>> from fer_core.models import create_model
    >>> model = create_model("se_resnet34", num_classes=7, in_chans=1, dropout=0.2)
    >>> model(torch.zeros(2, 1, 48, 48)).shape
    torch.Size([2, 7])

The default stem is made for 48x48 faces: one 3x3 stride-1 convolution and no max-pool, so the four
stages see 48, 24, 12 and 6 pixels instead of ImageNet's 4x smaller maps (a 7x7 stride-2 stem and a
max-pool would leave 2x2 pixels before the last stage). ``stem="imagenet"`` gives torchvision's stem
(for 224x224 input, as seeds/002 trained); with it and ``in_chans=3, num_classes=1000`` resnet18/34/50
have exactly torchvision's parameter counts. Blocks are torchvision's (ResNet v1.5: the stride is on
the 3x3 conv); ``residual=False`` removes the identity/projection shortcut (Plain-34),
``se_reduction`` adds squeeze-and-excitation before the residual add, ``act="mish"`` swaps every ReLU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._registry import FerModelMixin, ModelError, build_model_with_cfg, get_act_layer, register_model, scaled_rate

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "SqueezeExcite"]

STEMS = ("small", "imagenet")


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): a channel gate from globally pooled features."""

    def __init__(self, channels: int, reduction: int = 16, act_layer: type[nn.Module] = nn.ReLU):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(self.act(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * gate.sigmoid()


def _shortcut(in_chs: int, out_chs: int, stride: int, residual: bool) -> nn.Module | None:
    """The projection shortcut (1x1 conv + BN) when shapes change; None for identity or no shortcut."""
    if not residual or (stride == 1 and in_chs == out_chs):
        return None
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False), nn.BatchNorm2d(out_chs))


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34). With ``residual=False`` the block has no shortcut at all."""

    expansion = 1

    def __init__(
        self,
        in_chs: int,
        planes: int,
        stride: int = 1,
        *,
        act_layer: type[nn.Module] = nn.ReLU,
        residual: bool = True,
        se_reduction: int = 0,
    ):
        super().__init__()
        out_chs = planes * self.expansion
        self.residual = residual
        self.conv1 = nn.Conv2d(in_chs, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = act_layer()
        self.conv2 = nn.Conv2d(planes, out_chs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.se = SqueezeExcite(out_chs, se_reduction, act_layer) if se_reduction else None
        self.downsample = _shortcut(in_chs, out_chs, stride, residual)
        self.act2 = act_layer()

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        if self.se is not None:
            out = self.se(out)
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.act2(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4 (ResNet-50)."""

    expansion = 4

    def __init__(
        self,
        in_chs: int,
        planes: int,
        stride: int = 1,
        *,
        act_layer: type[nn.Module] = nn.ReLU,
        residual: bool = True,
        se_reduction: int = 0,
    ):
        super().__init__()
        out_chs = planes * self.expansion
        self.residual = residual
        self.conv1 = nn.Conv2d(in_chs, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = act_layer()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = act_layer()
        self.conv3 = nn.Conv2d(planes, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.se = SqueezeExcite(out_chs, se_reduction, act_layer) if se_reduction else None
        self.downsample = _shortcut(in_chs, out_chs, stride, residual)
        self.act3 = act_layer()

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.act3(out)


_BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(FerModelMixin, nn.Module):
    """ResNet with a small-input stem, global average pooling, dropout and a linear classifier.

    Args:
        block: "basic" (two 3x3 convs) or "bottleneck" (1x1-3x3-1x1, 4x expansion).
        layers: blocks per stage (four stages: 64, 128, 256, 512 planes; strides 1, 2, 2, 2).
        num_classes: classifier width (0: no classifier, ``forward`` returns pooled features).
        in_chans: input channels.
        dropout: dropout rate before the classifier (0 by default, as in seeds/002).
        dropout_scale: global scale on ``dropout`` (clamped to [0, 0.95]).
        act: "relu" or "mish" (every activation, SE gates' hidden one included).
        residual: False removes every shortcut (a "plain" network).
        se_reduction: squeeze-and-excitation channel reduction in every block (0: no SE).
        stem: "small" (3x3 stride-1 conv, no max-pool; for 48x48 faces) or "imagenet" (7x7 stride-2
            conv and 3x3 stride-2 max-pool; for 224x224 input).
        zero_init_last: zero each block's last BN weight so blocks start as identities
            (residual networks only).
    """

    def __init__(
        self,
        *,
        block: str,
        layers: Sequence[int],
        num_classes: int = 4,
        in_chans: int = 1,
        dropout: float = 0.0,
        dropout_scale: float = 1.0,
        act: str = "relu",
        residual: bool = True,
        se_reduction: int = 0,
        stem: str = "small",
        zero_init_last: bool = False,
    ):
        super().__init__()
        if block not in _BLOCKS:
            raise ModelError(f"block must be one of {', '.join(_BLOCKS)}; got {block!r}")
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ModelError(f"layers must give four positive block counts; got {layers!r}")
        if stem not in STEMS:
            raise ModelError(f"stem must be one of {', '.join(STEMS)}; got {stem!r}")
        if se_reduction < 0:
            raise ModelError(f"se_reduction must be >= 0 (0: no SE); got {se_reduction!r}")
        if in_chans < 1:
            raise ModelError(f"in_chans must be >= 1; got {in_chans!r}")
        block_cls, act_layer = _BLOCKS[block], get_act_layer(act)
        self.num_classes, self.in_chans, self.residual = num_classes, in_chans, residual
        self.drop_rate = scaled_rate(dropout, dropout_scale)

        if stem == "small":
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), act_layer()
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(64),
                act_layer(),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        stages, width = [], 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(
                    block_cls(width, planes, stride, act_layer=act_layer, residual=residual, se_reduction=se_reduction)
                )
                width = planes * block_cls.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.num_features = width
        self.drop = nn.Dropout(self.drop_rate) if self.drop_rate > 0 else nn.Identity()
        self.fc = self._classifier(num_classes)
        self._init_weights(zero_init_last and residual)

    def _classifier(self, num_classes: int) -> nn.Module:
        if num_classes < 0:
            raise ModelError(f"num_classes must be >= 0; got {num_classes!r}")
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the four stages: (N, C, H, W) -> (N, num_features, H/8, W/8) with the small stem."""
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pooling, dropout, the classifier."""
        x = self.drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a new one of width ``num_classes`` (0: none)."""
        self.fc = self._classifier(num_classes)
        self.num_classes = num_classes


def _create_resnet(name: str, pretrained: bool, kwargs: dict, *, fixed: dict, defaults: dict | None = None):
    return build_model_with_cfg(ResNet, name, kwargs, pretrained=pretrained, fixed=fixed, defaults=defaults)


@register_model
def resnet18(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18: basic blocks (2, 2, 2, 2)."""
    return _create_resnet("resnet18", pretrained, kwargs, fixed=dict(block="basic", layers=(2, 2, 2, 2)))


@register_model
def resnet34(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-34: basic blocks (3, 4, 6, 3)."""
    return _create_resnet("resnet34", pretrained, kwargs, fixed=dict(block="basic", layers=(3, 4, 6, 3)))


@register_model
def resnet50(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-50: bottleneck blocks (3, 4, 6, 3)."""
    return _create_resnet("resnet50", pretrained, kwargs, fixed=dict(block="bottleneck", layers=(3, 4, 6, 3)))


@register_model
def plain34(pretrained: bool = False, **kwargs) -> ResNet:
    """Plain-34: ResNet-34 without any skip connection (seeds/002: 58.1% vs ResNet-34's 78.8%)."""
    return _create_resnet("plain34", pretrained, kwargs, fixed=dict(block="basic", layers=(3, 4, 6, 3), residual=False))


@register_model
def se_resnet34(pretrained: bool = False, **kwargs) -> ResNet:
    """SE-ResNet-34: squeeze-and-excitation (reduction 16 by default) in every block."""
    if kwargs.get("se_reduction", 16) < 1:
        raise ModelError(
            f"se_resnet34: se_reduction must be >= 1; got {kwargs['se_reduction']!r} (use resnet34 for no SE)"
        )
    return _create_resnet(
        "se_resnet34",
        pretrained,
        kwargs,
        fixed=dict(block="basic", layers=(3, 4, 6, 3)),
        defaults=dict(se_reduction=16),
    )


@register_model
def mish_resnet34(pretrained: bool = False, **kwargs) -> ResNet:
    """Mish-ResNet-34: ResNet-34 with every ReLU replaced by Mish."""
    return _create_resnet(
        "mish_resnet34", pretrained, kwargs, fixed=dict(block="basic", layers=(3, 4, 6, 3), act="mish")
    )
