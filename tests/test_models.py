"""fer_core.models: the registry, the notebook's presets, the ResNets and the torchvision backbones.

Kept fast on a busy 2-core CPU: batches of 2, one thread, each torchvision backbone built once.
"""

import pytest
import torch
from torch import nn

from fer_core.models import (
    PRESET_DEFAULTS,
    FerCNN,
    ModelError,
    create_model,
    is_model,
    list_models,
    register_model,
)
from fer_core.models.resnet import BasicBlock, SqueezeExcite

TV = ["tv_efficientnet_b0", "tv_resnet50", "tv_vgg16"]
FER_CNN = ["fer_cnn_0", "fer_cnn_a", "fer_cnn_b", "fer_cnn_bplus", "fer_cnn_bplusplus", "fer_cnn_c", "fer_cnn_d"]
SMALL_CNN = ["fer_cnn_small", "fer_cnn_tiny"]  # not in the notebook: CPU-sized
PLAIN_CNN = ["fer_cnn_plain"]  # not in the notebook: the hand-written baseline
RESNETS = ["mish_resnet34", "plain34", "resnet18", "resnet34", "resnet50", "se_resnet34"]

# The notebook's (seeds/004) model.summary() lines: (Total, Trainable, Non-trainable params).
NOTEBOOK_PARAMS = {
    "fer_cnn_0": (1_274_500, 1_274_052, 448),
    "fer_cnn_a": (3_509_444, 3_507_140, 2_304),
    "fer_cnn_b": (3_509_444, 3_507_140, 2_304),
    "fer_cnn_c": (3_509_444, 3_507_140, 2_304),
    "fer_cnn_bplus": (3_509_444, 3_507_140, 2_304),
    "fer_cnn_bplusplus": (3_509_444, 3_507_140, 2_304),
    "fer_cnn_d": (4_980_324, 4_978_340, 1_984),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Several threads fighting other jobs for two cores is ~10x slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def zoo():
    """``zoo(name)``: the model built with its defaults (4 classes, 1 channel), built once per module.

    Tests that change a zoo model put it back (``reset_classifier(4)``) before they return.
    """
    built = {}

    def get(name: str) -> nn.Module:
        if name not in built:
            built[name] = create_model(name)
        return built[name]

    return get


def keras_param_counts(model: nn.Module) -> tuple[int, int, int]:
    """(total, trainable, non-trainable) parameters, counted as Keras's ``model.summary()`` does.

    Keras counts a BatchNormalization layer's moving mean and variance as non-trainable *params*
    (4 per channel in all); PyTorch keeps them as buffers (``running_mean``, ``running_var``, plus an
    integer ``num_batches_tracked`` that has no Keras counterpart and is not counted). Conv and dense
    layers count the same in both (kernel + bias). So: trainable = parameters that require grad;
    non-trainable = frozen parameters + BatchNorm running statistics.
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    stats = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return trainable + frozen + stats, trainable, frozen + stats


def dropout_rates(model: nn.Module) -> list[float]:
    return [m.p for m in model.modules() if isinstance(m, nn.Dropout)]


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_registered_names():
    assert list_models() == sorted(FER_CNN + SMALL_CNN + PLAIN_CNN + RESNETS + TV)
    assert list_models("tv_*") == TV
    assert list_models("*resnet34") == ["mish_resnet34", "resnet34", "se_resnet34"]
    assert is_model("fer_cnn_bplusplus") and not is_model("fer_cnn_e")


def test_unknown_model_lists_registered_names():
    with pytest.raises(ValueError) as err:
        create_model("resnet35")
    assert ", ".join(list_models()) in str(err.value)
    assert "'resnet35'" in str(err.value)


def test_none_kwargs_are_dropped():
    model = create_model(
        "fer_cnn_0", num_classes=None, in_chans=None, dropout_scale=None, act=None, input_size=None, pretrained=None
    )
    assert (model.num_classes, model.in_chans) == (4, 1)
    assert dropout_rates(model) == pytest.approx([0.25, 0.25, 0.25, 0.5])


def test_unknown_kwarg_names_it_and_the_model():
    with pytest.raises(ValueError, match=r"fer_cnn_b: unknown argument\(s\) dropot"):
        create_model("fer_cnn_b", dropot=0.1)
    with pytest.raises(ValueError, match="resnet18: unknown argument.*input_size"):
        create_model("resnet18", input_size=32)


def test_fixed_kwarg_and_pretrained_without_weights_are_errors():
    with pytest.raises(ValueError, match="plain34: argument.*residual.*fixed"):
        create_model("plain34", residual=True)
    with pytest.raises(ValueError, match="resnet18 has no pretrained weights"):
        create_model("resnet18", pretrained=True)


def test_register_model_refuses_a_taken_name():
    def resnet18(pretrained=False, **kwargs):
        return nn.Identity()

    with pytest.raises(ModelError, match="already registered"):
        register_model(resnet18)
    assert create_model("resnet18", num_classes=3).num_classes == 3  # the real one is still there


# ---------------------------------------------------------------------------------------------
# Every custom model: builds, runs, same head API
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FER_CNN + RESNETS)
def test_model_runs_with_the_head_api(name, zoo):
    model = zoo(name).eval()
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        assert logits.shape == (2, 4)
        torch.testing.assert_close(model.forward_head(feats), logits)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
        assert (model.num_classes, model.in_chans) == (4, 1)
        assert model.get_classifier().out_features == 4
        model.reset_classifier(7)
        assert model.num_classes == 7 and model.forward_head(feats).shape == (2, 7)
        model.reset_classifier(0)
        assert model.forward_head(feats).shape == (2, model.num_features)
    model.reset_classifier(4)


@pytest.mark.parametrize("name", FER_CNN + ["resnet18"])
def test_model_runs_rgb_with_seven_classes_at_32px(name):
    # input_size is a FerCNN argument (its Flatten size); None is dropped for the ResNets
    model = create_model(name, num_classes=7, in_chans=3, input_size=32 if name in FER_CNN else None).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_l2_parameters_are_kernels_only(zoo):
    model = zoo("fer_cnn_b")
    kernels = model.l2_parameters()
    assert len(kernels) == 8 and all(w.ndim in (2, 4) for w in kernels)  # 6 convs + 2 dense
    classifier = model.get_classifier().weight
    assert any(w is classifier for w in kernels)
    assert not any(w is classifier for w in model.l2_parameters("all_but_classifier"))
    assert len(model.l2_parameters("all_but_classifier")) == 7
    assert [w.shape for w in model.l2_parameters("dense")] == [(256, 9216), (4, 256)]
    with pytest.raises(ValueError, match="l2 scope"):
        model.l2_parameters("conv")


# ---------------------------------------------------------------------------------------------
# The notebook's presets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NOTEBOOK_PARAMS)
def test_preset_param_counts_equal_the_notebook(name, zoo):
    assert keras_param_counts(zoo(name)) == NOTEBOOK_PARAMS[name]  # 4 classes, 1 channel, 48x48


def test_preset_structure(zoo):
    def block_layers(model, i):
        return [type(m).__name__ for m in model.blocks[i]]

    m0, ma, md = zoo("fer_cnn_0"), zoo("fer_cnn_a"), zoo("fer_cnn_d")
    # Model 0: Conv -> BN -> relu; Model A: Conv(relu) -> BN, twice
    assert block_layers(m0, 0) == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Dropout"]
    assert block_layers(ma, 0) == ["Conv2d", "ReLU", "BatchNorm2d"] * 2 + ["MaxPool2d", "Dropout"]
    assert dropout_rates(ma) == pytest.approx([0.20, 0.25, 0.30, 0.40])
    # Model D: BN once per block, pool / none / pool / none / GAP, dropout after the GAP
    assert block_layers(md, 1) == ["Conv2d", "ReLU", "Conv2d", "ReLU", "BatchNorm2d", "Dropout"]
    assert [any(isinstance(m, nn.MaxPool2d) for m in b) for b in md.blocks] == [True, False, True, False, False]
    assert md.global_pool and md.forward_features(torch.zeros(1, 1, 48, 48)).shape == (1, 512, 12, 12)
    assert dropout_rates(md) == pytest.approx([0.25, 0.30, 0.35, 0.40, 0.50, 0.50])
    for name in ("fer_cnn_b", "fer_cnn_c", "fer_cnn_bplus", "fer_cnn_bplusplus"):
        assert dropout_rates(zoo(name)) == pytest.approx([0.25, 0.30, 0.40, 0.50])


def test_small_cnns_are_cpu_sized():
    counts = {name: sum(p.numel() for p in create_model(name).parameters()) for name in SMALL_CNN}
    assert 150_000 < counts["fer_cnn_small"] < 300_000
    assert 30_000 < counts["fer_cnn_tiny"] < 60_000
    for name in SMALL_CNN:
        assert create_model(name, num_classes=7)(torch.zeros(2, 1, 48, 48)).shape == (2, 7)


def test_plain_cnn_is_the_hand_written_baseline():
    m = create_model("fer_cnn_plain")
    assert sum(p.numel() for p in m.parameters()) == 1_468_260  # 286,432 conv + 896 BN + 1,179,904 + 1,028 dense
    layers = [type(x).__name__ for x in m.blocks[0]]
    assert layers == ["Conv2d", "BatchNorm2d", "ReLU"] * 2 + ["MaxPool2d", "Dropout"]  # BN before ReLU
    assert [b.conv2.out_channels for b in m.blocks] == [32, 64, 128] and m.head.hidden.fc1.out_features == 256
    assert dropout_rates(m) == pytest.approx([0.2, 0.3, 0.4, 0.4])
    assert (m.blocks[0].bn1.eps, m.blocks[0].bn1.momentum) == (1e-5, 0.1)  # PyTorch's BatchNorm, not Keras'
    assert m(torch.zeros(2, 1, 48, 48)).shape == (2, 4)


def test_flatten_size_follows_input_size(zoo):
    big, small = zoo("fer_cnn_b"), create_model("fer_cnn_b", input_size=32)
    assert keras_param_counts(big)[0] - keras_param_counts(small)[0] == (6 * 6 - 4 * 4) * 256 * 256
    with pytest.raises(ValueError, match="input_size"):
        big(torch.zeros(2, 1, 32, 32))


def test_preset_training_defaults():
    assert set(PRESET_DEFAULTS) == set(FER_CNN + PLAIN_CNN)
    keys = set(PRESET_DEFAULTS["fer_cnn_0"])
    assert all(set(cfg) == keys for cfg in PRESET_DEFAULTS.values())
    bpp = PRESET_DEFAULTS["fer_cnn_bplusplus"]
    assert (bpp["loss"], bpp["focal_gamma"], bpp["focal_alpha"], bpp["label_smoothing"]) == ("focal", 2.0, 0.25, 0.1)
    assert (bpp["l2"], bpp["l2_scope"], bpp["lr"], bpp["lr_schedule"], bpp["cosine_alpha"]) == (
        1e-4,
        "all_but_classifier",
        5e-4,
        "cosine",
        0.02,
    )
    assert (bpp["augment"], bpp["early_stopping_patience"], bpp["batch_size"], bpp["epochs"]) == ("soft", 20, 64, 75)
    m0 = PRESET_DEFAULTS["fer_cnn_0"]
    assert (m0["lr"], m0["augment"], m0["lr_schedule"], m0["plateau_factor"], m0["plateau_patience"]) == (
        1e-3,
        "none",
        "plateau",
        0.5,
        5,
    )
    assert PRESET_DEFAULTS["fer_cnn_b"]["plateau_patience"] == 7
    assert (PRESET_DEFAULTS["fer_cnn_c"]["l2"], PRESET_DEFAULTS["fer_cnn_c"]["l2_scope"]) == (1e-3, "dense")
    d = PRESET_DEFAULTS["fer_cnn_d"]
    assert (d["early_stopping_patience"], d["plateau_patience"], d["plateau_min_lr"]) == (10, 5, 1e-7)
    plain = PRESET_DEFAULTS["fer_cnn_plain"]
    assert (plain["optimizer"], plain["lr"], plain["label_smoothing"], plain["augment"]) == ("adam", 1e-3, 0.1, "flip")
    assert (plain["lr_schedule"], plain["cosine_alpha"], plain["batch_size"], plain["class_weight"]) == (
        "cosine",
        0.0,
        64,
        "none",
    )


def test_dropout_scale_scales_and_clamps():
    assert dropout_rates(create_model("fer_cnn_b", dropout_scale=0.5)) == pytest.approx([0.125, 0.15, 0.2, 0.25])
    assert dropout_rates(create_model("fer_cnn_b", dropout_scale=10.0)) == [0.95] * 4
    assert dropout_rates(create_model("fer_cnn_b", dropout_scale=0.0)) == []
    assert create_model("resnet18", dropout=0.3, dropout_scale=2.0).drop.p == pytest.approx(0.6)
    with pytest.raises(ValueError, match="dropout_scale"):
        create_model("fer_cnn_b", dropout_scale=-1.0)


def test_fer_cnn_is_configurable():
    model = FerCNN(
        num_classes=3,
        filters=(8, 16),
        convs_per_block=(1, 2),
        bn="block",
        pool=("none", "gap"),
        block_dropout=(0.0, 0.2),
        dense=(),
        act="mish",
        init="torch",
    ).eval()
    assert model(torch.randn(2, 1, 20, 20)).shape == (2, 3)
    assert any(isinstance(m, nn.Mish) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    with pytest.raises(ValueError, match="2 to 5"):
        FerCNN(filters=(8, 8, 8, 8, 8, 8))
    with pytest.raises(ValueError, match="gap"):
        FerCNN(filters=(8, 8), pool=("gap", "max"))
    with pytest.raises(ValueError, match="too small"):
        FerCNN(filters=(8, 8, 8), input_size=4)


# ---------------------------------------------------------------------------------------------
# ResNets
# ---------------------------------------------------------------------------------------------


def test_imagenet_stem_matches_torchvision_param_counts():
    # torchvision's resnet18 / resnet50 with 3 channels and 1000 classes
    for name, expected in (("resnet18", 11_689_512), ("resnet50", 25_557_032)):
        model = create_model(name, num_classes=1000, in_chans=3, stem="imagenet")
        assert sum(p.numel() for p in model.parameters()) == expected


def test_plain_block_has_no_skip_connection(zoo):
    x = torch.rand(1, 8, 6, 6)
    for residual in (True, False):
        block = BasicBlock(8, 8, act_layer=nn.ReLU, residual=residual)
        nn.init.zeros_(block.bn2.weight)  # the residual branch now outputs 0
        with torch.no_grad():
            out = block(x)
        torch.testing.assert_close(out, x if residual else torch.zeros_like(x))

    plain = zoo("plain34")
    blocks = [m for m in plain.modules() if isinstance(m, BasicBlock)]
    assert plain.residual is False and len(blocks) == 16
    assert all(not b.residual and b.downsample is None for b in blocks)


def test_se_and_mish_variants(zoo):
    se = zoo("se_resnet34")
    blocks = [m for m in se.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 16 and all(isinstance(b.se, SqueezeExcite) for b in blocks)
    mish = zoo("mish_resnet34")
    assert any(isinstance(m, nn.Mish) for m in mish.modules())
    assert not any(isinstance(m, nn.ReLU) for m in mish.modules())
    assert not any(isinstance(m, SqueezeExcite) for m in mish.modules())


# ---------------------------------------------------------------------------------------------
# torchvision backbones: each built once
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TV)
def test_pretrained_without_weights_path_is_a_clear_error(name):
    with pytest.raises(ValueError, match="cannot be downloaded here; pass weights_path"):
        create_model(name, pretrained=True)


def test_missing_weights_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="is not a file"):
        create_model("tv_vgg16", weights_path=tmp_path / "nope.pth")


@pytest.fixture(scope="module")
def resnet50_state_dict_file(tmp_path_factory):
    from torchvision.models import resnet50

    state = resnet50(weights=None).state_dict()  # random init: a stand-in for ImageNet weights
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(state, path)
    return path, state


def test_tv_resnet50_loads_weights_path_sums_first_conv_and_freezes(resnet50_state_dict_file):
    path, state = resnet50_state_dict_file
    model = create_model("tv_resnet50", num_classes=4, in_chans=1, weights_path=path, freeze_base=True)
    assert model.first_conv.weight.shape == (64, 1, 7, 7)
    torch.testing.assert_close(model.first_conv.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.trunk.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])

    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("head.") for n in trainable)
    assert len(model.l2_parameters()) == 2  # head dense + classifier; frozen ones skipped
    model.train()
    assert not any(m.training for m in model.trunk.modules()) and model.head.training
    feats = model.forward_features(torch.randn(2, 1, 48, 48))
    assert model.forward_head(feats).shape == (2, 4)
    model.reset_classifier(7)
    assert model.forward_head(feats).shape == (2, 7) and model.get_classifier().weight.requires_grad


def test_tv_vgg16_matches_the_notebook_vgg16():
    # The notebook's VGG16_FER: frozen RGB VGG16 base + GAP + Dense 512/BN/.5 + Dense 256/.3 + Dense 4
    model = create_model("tv_vgg16", num_classes=4, in_chans=3, freeze_base=True).eval()
    assert keras_param_counts(model) == (15_111_748, 396_036, 14_715_712)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
        with pytest.raises(ValueError, match="at least 32x32"):
            model(torch.randn(2, 3, 24, 24))
        model.reset_classifier(7)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_tv_efficientnet_b0_gray_from_scratch_with_upscaling():
    model = create_model("tv_efficientnet_b0", num_classes=7, in_chans=1, upscale_to=64, dropout_scale=0.0).eval()
    assert model.first_conv.in_channels == 1
    assert all(p.requires_grad for p in model.parameters())
    assert not any(isinstance(m, nn.Dropout) for m in model.head.modules())
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 1, 16, 16))  # upscaled to 64 first
        assert feats.shape == (2, 1280, 2, 2)
        assert model.forward_head(feats).shape == (2, 7)
