"""A configurable Keras-style FER CNN, and the capstone notebook's model ladder as presets.

    >>> import torch
    >>> from fer_core.models import create_model, PRESET_DEFAULTS
    >>> model = create_model("fer_cnn_bplusplus", num_classes=4, in_chans=1)   # the notebook's best
    >>> model(torch.zeros(2, 1, 48, 48)).shape
    torch.Size([2, 4])
    >>> PRESET_DEFAULTS["fer_cnn_bplusplus"]["loss"], PRESET_DEFAULTS["fer_cnn_bplusplus"]["l2"]
    ('focal', 0.0001)

The presets are the notebook's (seeds/004) ``build_model_*`` functions layer for layer; their
parameter counts equal the Keras summaries (Model 0: 1,274,500; A, B, C, B+, B++: 3,509,444;
D: 4,980,324, counting BatchNorm's running mean/var as Keras counts its moving statistics).
Keras semantics kept: "same" 3x3 convolutions, ``Conv2D(activation="relu")`` followed by
``BatchNormalization`` (activation *before* BN; Model 0 puts BN before the activation), floor-mode
2x2 max-pooling, ``Flatten`` (its size computed from ``input_size``, so 48x48 and other sizes work),
Glorot-uniform kernels with zero biases (``init="keras"``) and BatchNorm eps 1e-3 / momentum 0.99
(PyTorch ``momentum=0.01``). The notebook's in-model augmentation layers (B+, B++, D) are not part
of the model: ``PRESET_DEFAULTS[name]["augment"]`` names the trainer's preset instead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from numbers import Real

import torch
from torch import nn

from ._registry import FerModelMixin, ModelError, build_model_with_cfg, get_act_layer, register_model, scaled_rate

__all__ = ["FerCNN", "ConvBlock", "DenseHead", "PRESET_DEFAULTS", "keras_init_"]

BN_PLACEMENTS = ("conv", "block", "none")
POOL_KINDS = ("max", "none", "gap")
INITS = ("keras", "torch")


def keras_init_(module: nn.Module) -> None:
    """Keras default initialization: Glorot-uniform conv/dense kernels, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _per_item(value, n: int, name: str, kinds: tuple[type, ...]) -> list:
    """``value`` for each of ``n`` items: a scalar is repeated, a sequence must have ``n`` entries."""
    if isinstance(value, kinds):
        return [value] * n
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ModelError(f"{name} must be one value or a sequence of {n}; got {value!r}")
    if len(value) != n:
        raise ModelError(f"{name} has {len(value)} entries for {n} items: {list(value)!r}")
    bad = [v for v in value if not isinstance(v, kinds)]
    if bad:
        raise ModelError(f"{name} has entries of the wrong type: {bad!r}")
    return list(value)


def _dropout(rate: float, dropout_scale: float) -> nn.Module:
    p = scaled_rate(rate, dropout_scale)
    return nn.Dropout(p) if p > 0 else nn.Identity()


class ConvBlock(nn.Sequential):
    """One Keras-style block: ``n_convs`` "same" convolutions with activation and BatchNorm, then
    an optional 2x2 max-pool and dropout.

    ``bn`` places BatchNorm after each conv ("conv"), after the block's last conv ("block") or
    nowhere ("none"); ``bn_after_act`` puts it after the activation (Keras ``Conv2D(activation=..)``
    then ``BatchNormalization``) or before it. With ``pool="gap"`` the block neither pools nor drops:
    the model's head does global average pooling and then the block's dropout, as Keras does.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        n_convs: int = 2,
        kernel_size: int = 3,
        bn: str = "conv",
        bn_after_act: bool = True,
        pool: str = "max",
        drop_rate: float = 0.0,
        act_layer: type[nn.Module] = nn.ReLU,
        dropout_scale: float = 1.0,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
    ):
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(1, n_convs + 1):
            layers[f"conv{i}"] = nn.Conv2d(
                in_chs if i == 1 else out_chs, out_chs, kernel_size, padding=kernel_size // 2
            )
            act = (f"act{i}", act_layer())
            norm = (
                [(f"bn{i}", nn.BatchNorm2d(out_chs, eps=bn_eps, momentum=bn_momentum))]
                if bn == "conv" or (bn == "block" and i == n_convs)
                else []
            )
            layers.update([act, *norm] if bn_after_act else [*norm, act])
        if pool == "max":
            layers["pool"] = nn.MaxPool2d(2)
        if pool != "gap" and drop_rate != 0:
            layers["drop"] = _dropout(drop_rate, dropout_scale)
        super().__init__(layers)


class DenseHead(nn.Module):
    """Keras-style dense head: ``[Linear -> act -> (BatchNorm) -> Dropout] x len(hidden)``, then the
    classifier ``fc`` (``nn.Identity`` when ``num_classes == 0``).

    Shared by ``FerCNN`` and the notebook's transfer-learning heads (``backbones``).
    """

    def __init__(
        self,
        in_features: int,
        *,
        num_classes: int,
        hidden: Sequence[int] = (),
        bn: bool | Sequence[bool] = False,
        dropout: float | Sequence[float] = 0.0,
        act_layer: type[nn.Module] = nn.ReLU,
        dropout_scale: float = 1.0,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
        init: str = "keras",
    ):
        super().__init__()
        hidden = _per_item(hidden, len(hidden), "dense widths", (int,)) if not isinstance(hidden, int) else [hidden]
        if any(w < 1 for w in hidden):
            raise ModelError(f"dense widths must be >= 1; got {hidden!r}")
        bns = _per_item(bn, len(hidden), "dense_bn", (bool,))
        rates = _per_item(dropout, len(hidden), "dense_dropout", (Real,))
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = in_features
        for i, (out, use_bn, rate) in enumerate(zip(hidden, bns, rates, strict=True), start=1):
            layers[f"fc{i}"] = nn.Linear(width, out)
            layers[f"act{i}"] = act_layer()
            if use_bn:
                layers[f"bn{i}"] = nn.BatchNorm1d(out, eps=bn_eps, momentum=bn_momentum)
            if rate != 0:
                layers[f"drop{i}"] = _dropout(float(rate), dropout_scale)
            width = out
        self.hidden = nn.Sequential(layers)
        self.num_features = width
        self.init = init
        if init == "keras":
            keras_init_(self.hidden)
        self.fc = self._classifier(num_classes)

    def _classifier(self, num_classes: int) -> nn.Module:
        if num_classes < 0:
            raise ModelError(f"num_classes must be >= 0; got {num_classes!r}")
        fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if self.init == "keras":
            keras_init_(fc)
        return fc

    def reset(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialized one of width ``num_classes``."""
        self.fc = self._classifier(num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.hidden(x)
        return x if pre_logits else self.fc(x)


class FerCNN(FerModelMixin, nn.Module):
    """Configurable FER CNN: 2-5 conv blocks, a flatten (or global-average-pool) and a dense head.

    Args:
        num_classes: classifier width (0: no classifier, ``forward`` returns pre-logits).
        in_chans: input channels (1 grayscale, 3 RGB).
        filters: filters per block, 2 to 5 blocks.
        convs_per_block: convolutions per block (1 single, 2 double), one value or one per block.
        kernel_size: odd conv kernel size ("same" padding).
        bn: BatchNorm placement, "conv" (after each conv), "block" (after the block's last conv)
            or "none".
        bn_after_act: BatchNorm after the activation (Keras ``Conv2D(activation=...)`` followed by
            ``BatchNormalization``) rather than between conv and activation.
        pool: per block "max" (2x2 max-pool) or "none"; the last block may be "gap" (global
            average pooling instead of flatten). One value or one per block.
        block_dropout: dropout after each block (after the GAP for a "gap" block), one or per block.
        dense: widths of the hidden dense layers before the classifier (may be empty).
        dense_bn: BatchNorm after each hidden dense layer's activation, one or per layer.
        dense_dropout: dropout after each hidden dense layer, one or per layer.
        act: "relu" or "mish".
        dropout_scale: global scale on every dropout rate above (clamped to [0, 0.95]).
        input_size: input height and width (int or (h, w)); sets the flattened size, as Keras's
            ``Flatten`` does. Not used with a "gap" last block.
        bn_eps, bn_momentum: BatchNorm settings (defaults are Keras's: eps 1e-3, momentum 0.99).
        init: "keras" (Glorot-uniform kernels, zero biases) or "torch" (PyTorch's defaults).
    """

    def __init__(
        self,
        *,
        num_classes: int = 4,
        in_chans: int = 1,
        filters: Sequence[int] = (64, 128, 256),
        convs_per_block: int | Sequence[int] = 2,
        kernel_size: int = 3,
        bn: str = "conv",
        bn_after_act: bool = True,
        pool: str | Sequence[str] = "max",
        block_dropout: float | Sequence[float] = 0.25,
        dense: Sequence[int] = (256,),
        dense_bn: bool | Sequence[bool] = True,
        dense_dropout: float | Sequence[float] = 0.5,
        act: str = "relu",
        dropout_scale: float = 1.0,
        input_size: int | Sequence[int] = 48,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
        init: str = "keras",
    ):
        super().__init__()
        if (
            isinstance(filters, (str, bytes))
            or not isinstance(filters, Sequence)
            or not all(isinstance(f, int) and f >= 1 for f in filters)
            or not 2 <= len(filters) <= 5
        ):
            raise ModelError(f"filters must list 2 to 5 positive block widths; got {filters!r}")
        filters, n = list(filters), len(filters)
        convs = _per_item(convs_per_block, n, "convs_per_block", (int,))
        pools = _per_item(pool, n, "pool", (str,))
        rates = _per_item(block_dropout, n, "block_dropout", (Real,))
        if any(c < 1 for c in convs):
            raise ModelError(f"convs_per_block must be >= 1; got {convs!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ModelError(f"kernel_size must be odd and positive ('same' padding); got {kernel_size!r}")
        if bn not in BN_PLACEMENTS:
            raise ModelError(f"bn must be one of {', '.join(BN_PLACEMENTS)}; got {bn!r}")
        if any(p not in POOL_KINDS for p in pools) or "gap" in pools[:-1]:
            raise ModelError(
                f"pool entries must be 'max' or 'none' ('gap' allowed for the last block only); got {pools!r}"
            )
        if init not in INITS:
            raise ModelError(f"init must be one of {', '.join(INITS)}; got {init!r}")
        if in_chans < 1:
            raise ModelError(f"in_chans must be >= 1; got {in_chans!r}")
        act_layer = get_act_layer(act)
        self.num_classes, self.in_chans, self.dropout_scale = num_classes, in_chans, dropout_scale
        self.input_size = _per_item(input_size, 2, "input_size", (int,))
        self.global_pool = pools[-1] == "gap"

        blocks, width = [], in_chans
        for out, n_convs, p, rate in zip(filters, convs, pools, rates, strict=True):
            blocks.append(
                ConvBlock(
                    width,
                    out,
                    n_convs=n_convs,
                    kernel_size=kernel_size,
                    bn=bn,
                    bn_after_act=bn_after_act,
                    pool=p,
                    drop_rate=float(rate),
                    act_layer=act_layer,
                    dropout_scale=dropout_scale,
                    bn_eps=bn_eps,
                    bn_momentum=bn_momentum,
                )
            )
            width = out
        self.blocks = nn.Sequential(*blocks)

        if self.global_pool:
            self.feature_shape = None
            self.head_drop = _dropout(float(rates[-1]), dropout_scale)
            flat = width
        else:
            h, w = self.input_size
            for p in pools:
                h, w = (h // 2, w // 2) if p == "max" else (h, w)
            if h < 1 or w < 1:
                raise ModelError(f"input_size {self.input_size} is too small for {pools.count('max')} 2x2 max-pools")
            self.feature_shape = (width, h, w)
            self.head_drop = nn.Identity()
            flat = width * h * w
        self.head = DenseHead(
            flat,
            num_classes=num_classes,
            hidden=dense,
            bn=dense_bn,
            dropout=dense_dropout,
            act_layer=act_layer,
            dropout_scale=dropout_scale,
            bn_eps=bn_eps,
            bn_momentum=bn_momentum,
            init=init,
        )
        self.num_features = self.head.num_features
        if init == "keras":
            keras_init_(self.blocks)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The conv blocks: (N, C, H, W) -> the last block's feature map."""
        return self.blocks(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Flatten (or global-average-pool and drop), the hidden dense layers, the classifier."""
        if self.global_pool:
            x = self.head_drop(x.mean(dim=(2, 3)))
        else:
            if tuple(x.shape[1:]) != self.feature_shape:
                raise ModelError(
                    f"FerCNN was built for input_size={tuple(self.input_size)} (features "
                    f"{self.feature_shape}); got features {tuple(x.shape[1:])}: "
                    "pass input_size matching the images"
                )
            x = torch.flatten(x, 1)
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a new one of width ``num_classes`` (0: none)."""
        self.head.reset(num_classes)
        self.num_classes = num_classes


# --------------------------------------------------------------------------------------------
# The notebook's ladder (seeds/004, "def build_model_*")
# --------------------------------------------------------------------------------------------

# Model A/B/C/B+/B++: three double-conv blocks 64-128-256, Conv(relu) -> BN after each conv,
# max-pool, dropout; Flatten; Dense 256 (relu) -> BN -> dropout; the only change is dropout.
_ABC = dict(
    filters=(64, 128, 256), convs_per_block=2, bn="conv", bn_after_act=True, pool="max", dense=(256,), dense_bn=True
)
_B_DROPOUT = dict(block_dropout=(0.25, 0.30, 0.40), dense_dropout=0.50)

_PRESETS: dict[str, dict] = {
    # build_model_0: single convs 32-64-128, Conv -> BN -> relu, pool, dropout .25; Dense 256, dropout .5
    "fer_cnn_0": dict(
        filters=(32, 64, 128),
        convs_per_block=1,
        bn="conv",
        bn_after_act=False,
        pool="max",
        block_dropout=0.25,
        dense=(256,),
        dense_bn=False,
        dense_dropout=0.5,
    ),
    # build_model_a: dropout .20/.25/.30, dense .40
    "fer_cnn_a": dict(_ABC, block_dropout=(0.20, 0.25, 0.30), dense_dropout=0.40),
    # build_model_b: dropout .25/.30/.40, dense .50
    "fer_cnn_b": dict(_ABC, **_B_DROPOUT),
    # build_model_c: Model B + kernel L2 1e-3 on both Dense layers (the L2 is a training setting)
    "fer_cnn_c": dict(_ABC, **_B_DROPOUT),
    # build_model_b_plus_v8: Model B + L2 1e-4 on every kernel but the classifier
    "fer_cnn_bplus": dict(_ABC, **_B_DROPOUT),
    # Model B++ is build_model_b_plus_v8 again, trained with focal loss
    "fer_cnn_bplusplus": dict(_ABC, **_B_DROPOUT),
    # build_model_d: double convs 32-64-128-256-512, Conv(relu) x2 -> BN per block,
    # pool / none / pool / none / GAP, dropout .25/.30/.35/.40/.50 (the last after the GAP);
    # Dense 512 (relu), dropout .5
    "fer_cnn_d": dict(
        filters=(32, 64, 128, 256, 512),
        convs_per_block=2,
        bn="block",
        bn_after_act=True,
        pool=("max", "none", "max", "none", "gap"),
        block_dropout=(0.25, 0.30, 0.35, 0.40, 0.50),
        dense=(512,),
        dense_bn=False,
        dense_dropout=0.5,
    ),
    # Not in the notebook: B-style blocks scaled down so that CPU sweeps and CI finish in minutes.
    # small: double convs 16-32-64 with BN, Dense 64 (~220k params, ~10x Model B's CPU speed);
    # tiny: single convs 8-16-32, Dense 32 (~43k params, ~40x).
    # Their BatchNorm uses PyTorch's momentum (0.1), not Keras' 0.01: short CPU runs (a few hundred
    # steps) would otherwise evaluate with running statistics that have not caught up yet.
    "fer_cnn_small": dict(
        filters=(16, 32, 64),
        convs_per_block=2,
        bn="conv",
        bn_after_act=True,
        pool="max",
        dense=(64,),
        dense_bn=True,
        bn_momentum=0.1,
        **_B_DROPOUT,
    ),
    "fer_cnn_tiny": dict(
        filters=(8, 16, 32),
        convs_per_block=1,
        bn="conv",
        bn_after_act=True,
        pool="max",
        dense=(32,),
        dense_bn=True,
        bn_momentum=0.1,
        **_B_DROPOUT,
    ),
    # Not in the notebook: the plain CNN a team writes by hand in PyTorch first (issue 15's baseline):
    # three blocks of two 3x3 convs, each Conv -> BN -> ReLU (32-64-128), 2x2 max-pool and dropout
    # .2/.3/.4; Flatten, Dense 256 (ReLU), dropout .4. PyTorch's own init and BatchNorm (eps 1e-5,
    # momentum 0.1), as `nn.Conv2d` / `nn.BatchNorm2d` give them. ~1.5M params, ~1/4 of Model B's work.
    "fer_cnn_plain": dict(
        filters=(32, 64, 128),
        convs_per_block=2,
        bn="conv",
        bn_after_act=False,
        pool="max",
        block_dropout=(0.2, 0.3, 0.4),
        dense=(256,),
        dense_bn=False,
        dense_dropout=0.4,
        bn_eps=1e-5,
        bn_momentum=0.1,
        init="torch",
    ),
}


def _training(**overrides) -> dict:
    """The notebook's training settings: every key always present, None where not used.

    Keys: optimizer, lr; l2 (Keras kernel L2 strength, ``l2 * sum(w**2)``) and l2_scope (see
    ``FerModelMixin.l2_parameters``); loss ("ce" or "focal"), label_smoothing, focal_gamma,
    focal_alpha (the notebook's focal loss: a scalar alpha times ``(1 - p)**gamma`` times the
    cross-entropy of each class's smoothed target, summed over classes); augment ("none" or "soft":
    horizontal flip, rotation +-0.05 turns, zoom +-5%, contrast +-5%); class_weight ("balanced",
    sklearn's); batch_size; epochs; lr_schedule ("plateau", "cosine" or "constant");
    plateau_monitor/factor/patience/min_lr (Keras ReduceLROnPlateau); cosine_alpha (Keras
    CosineDecay over all ``epochs`` steps, per step, ending at ``cosine_alpha * lr``);
    early_stopping_monitor/patience (with best weights restored); checkpoint_monitor (the saved
    "best" model). Keras's Adam has eps 1e-7.
    """
    base = dict(
        optimizer="adam",
        lr=None,
        l2=0.0,
        l2_scope=None,
        loss="ce",
        label_smoothing=0.0,
        focal_gamma=None,
        focal_alpha=None,
        augment="none",
        class_weight="balanced",
        batch_size=64,
        epochs=75,
        lr_schedule="constant",
        plateau_monitor=None,
        plateau_factor=None,
        plateau_patience=None,
        plateau_min_lr=None,
        cosine_alpha=None,
        early_stopping_monitor=None,
        early_stopping_patience=None,
        checkpoint_monitor="val_accuracy",
    )
    unknown = set(overrides) - set(base)
    if unknown:
        raise KeyError(f"unknown training keys {sorted(unknown)}")
    return {**base, **overrides}


def _plateau(patience: int, min_lr: float) -> dict:
    return dict(
        lr_schedule="plateau",
        plateau_monitor="val_loss",
        plateau_factor=0.5,
        plateau_patience=patience,
        plateau_min_lr=min_lr,
    )


_B_PLUS = dict(
    lr=5e-4,
    l2=1e-4,
    l2_scope="all_but_classifier",
    label_smoothing=0.1,
    augment="soft",
    lr_schedule="cosine",
    cosine_alpha=0.02,
    early_stopping_monitor="val_accuracy",
    early_stopping_patience=20,
)

#: Each preset's training settings (not architecture): the notebook's, read off its training cells, and the
#: plain hand-written baseline's.
PRESET_DEFAULTS: dict[str, dict] = {
    # Adam(1e-3), CE, ReduceLROnPlateau(val_loss, 0.5, patience 5, min 1e-6), 75 epochs
    "fer_cnn_0": _training(lr=1e-3, **_plateau(5, 1e-6)),
    # Adam(5e-4), CE, no augmentation, plateau patience 5
    "fer_cnn_a": _training(lr=5e-4, **_plateau(5, 1e-6)),
    # Adam(5e-4), soft augmentation, plateau patience 7
    "fer_cnn_b": _training(lr=5e-4, augment="soft", **_plateau(7, 1e-6)),
    # Adam(CosineDecay(1e-3, alpha 0.01)), L2 1e-3 on both Dense kernels, soft augmentation
    "fer_cnn_c": _training(lr=1e-3, l2=1e-3, l2_scope="dense", augment="soft", lr_schedule="cosine", cosine_alpha=0.01),
    # Adam(CosineDecay(5e-4, alpha 0.02)), L2 1e-4, label smoothing 0.1, EarlyStopping(val_acc, 20)
    "fer_cnn_bplus": _training(**_B_PLUS),
    # as B+, with FocalLoss(gamma 2, alpha 0.25, label_smoothing 0.1)
    "fer_cnn_bplusplus": _training(**_B_PLUS, loss="focal", focal_gamma=2.0, focal_alpha=0.25),
    # Adam(5e-4) constant, L2 1e-4, label smoothing 0.1, soft augmentation,
    # EarlyStopping(val_acc, 10), ReduceLROnPlateau(val_loss, 0.5, patience 5, min 1e-7)
    "fer_cnn_d": _training(
        lr=5e-4,
        l2=1e-4,
        l2_scope="all_but_classifier",
        label_smoothing=0.1,
        augment="soft",
        early_stopping_monitor="val_accuracy",
        early_stopping_patience=10,
        **_plateau(5, 1e-7),
    ),
    # Not the notebook's: the plain baseline's recipe (issue 15): Adam(1e-3), CrossEntropyLoss(label_smoothing
    # 0.1) without class weights, RandomHorizontalFlip, CosineAnnealingLR to 0 over the epochs, batch 64, 12 epochs
    "fer_cnn_plain": _training(
        lr=1e-3,
        label_smoothing=0.1,
        augment="flip",
        class_weight="none",
        lr_schedule="cosine",
        cosine_alpha=0.0,
        epochs=12,
        checkpoint_monitor=None,
    ),
}


def _create_fer_cnn(name: str, pretrained: bool, kwargs: dict) -> FerCNN:
    return build_model_with_cfg(FerCNN, name, kwargs, pretrained=pretrained, defaults=_PRESETS[name])


@register_model
def fer_cnn_0(pretrained: bool = False, **kwargs) -> FerCNN:
    """Notebook Model 0 (baseline): single-conv blocks 32-64-128, dropout .25, Dense 256. 1,274,500 params."""
    return _create_fer_cnn("fer_cnn_0", pretrained, kwargs)


@register_model
def fer_cnn_a(pretrained: bool = False, **kwargs) -> FerCNN:
    """Notebook Model A: double-conv blocks 64-128-256 with BN, dropout .20/.25/.30, Dense 256 + BN, .40."""
    return _create_fer_cnn("fer_cnn_a", pretrained, kwargs)


@register_model
def fer_cnn_b(pretrained: bool = False, **kwargs) -> FerCNN:
    """Notebook Model B: Model A with dropout .25/.30/.40 and .50 (trained with soft augmentation)."""
    return _create_fer_cnn("fer_cnn_b", pretrained, kwargs)


@register_model
def fer_cnn_c(pretrained: bool = False, **kwargs) -> FerCNN:
    """Notebook Model C: Model B's architecture, trained with L2 1e-3 on the Dense kernels."""
    return _create_fer_cnn("fer_cnn_c", pretrained, kwargs)


@register_model
def fer_cnn_bplus(pretrained: bool = False, **kwargs) -> FerCNN:
    """Notebook Model B+: Model B's architecture, trained with L2 1e-4 and label smoothing 0.1."""
    return _create_fer_cnn("fer_cnn_bplus", pretrained, kwargs)


@register_model
def fer_cnn_bplusplus(pretrained: bool = False, **kwargs) -> FerCNN:
    """Notebook Model B++ (best, 85.81%): Model B+'s architecture, trained with focal loss."""
    return _create_fer_cnn("fer_cnn_bplusplus", pretrained, kwargs)


@register_model
def fer_cnn_d(pretrained: bool = False, **kwargs) -> FerCNN:
    """Notebook Model D: five double-conv blocks 32-512, pool/none/pool/none/GAP, Dense 512. 4,980,324 params."""
    return _create_fer_cnn("fer_cnn_d", pretrained, kwargs)


@register_model
def fer_cnn_small(pretrained: bool = False, **kwargs) -> FerCNN:
    """Model B's design at a quarter of the width (16-32-64, Dense 64): for CPU sweeps. ~220k params."""
    return _create_fer_cnn("fer_cnn_small", pretrained, kwargs)


@register_model
def fer_cnn_plain(pretrained: bool = False, **kwargs) -> FerCNN:
    """A plain hand-written CNN: double-conv blocks 32-64-128 (Conv -> BN -> ReLU), dropout .2/.3/.4, Dense 256,
    dropout .4; PyTorch init. ~1.5M params. Its recipe (``PRESET_DEFAULTS``): Adam 1e-3, label smoothing .1,
    flips, cosine, batch 64."""
    return _create_fer_cnn("fer_cnn_plain", pretrained, kwargs)


@register_model
def fer_cnn_tiny(pretrained: bool = False, **kwargs) -> FerCNN:
    """Single-conv blocks 8-16-32 and Dense 32 with Model B's dropout: for tests and smoke runs. ~43k params."""
    return _create_fer_cnn("fer_cnn_tiny", pretrained, kwargs)
