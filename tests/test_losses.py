import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fer_core.data.split import class_weights as manifest_class_weights
from fer_core.losses import (
    class_weights_from_counts,
    create_loss,
    is_loss,
    list_losses,
    register_loss,
    weighted_sampler_weights,
)

K = 4
WEIGHTS = [0.5, 1.0, 2.0, 3.0]


def batch(n=16, k=K, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * scale, torch.randint(0, k, (n,), generator=g)


def keras_focal(logits, target, alpha, gamma, label_smoothing):
    """Keras 3 categorical_focal_crossentropy(from_logits=True), reduction sum_over_batch_size, in numpy."""
    z = logits.double().numpy()
    y = np.eye(z.shape[1])[target.numpy()]
    y = y * (1.0 - label_smoothing) + label_smoothing / z.shape[1]
    p = np.exp(z - z.max(1, keepdims=True))
    p = np.clip(p / p.sum(1, keepdims=True), 1e-7, 1 - 1e-7)
    focal = np.asarray(alpha) * (1 - p) ** gamma * (-y * np.log(p))
    return focal.sum(1).mean()


# --- registry -------------------------------------------------------------------------------


def test_registry_lists_and_creates():
    assert {"ce", "focal"} <= set(list_losses())
    assert list_losses("foc*") == ["focal"]
    assert is_loss("ce") and not is_loss("mse")
    assert isinstance(create_loss("ce"), torch.nn.Module)


def test_unknown_name_lists_registered():
    with pytest.raises(ValueError, match=r"unknown loss 'mse'.*ce, focal"):
        create_loss("mse")


def test_unknown_kwarg_names_it_and_the_loss():
    with pytest.raises(ValueError, match=r"loss 'ce' got unknown argument\(s\) 'gamma'"):
        create_loss("ce", gamma=2.0)


def test_none_kwargs_mean_the_loss_default():
    loss = create_loss("focal", gamma=None, alpha=None, label_smoothing=None, class_weight=None)
    assert (loss.gamma, loss.alpha.item(), loss.label_smoothing, loss.class_weight) == (2.0, 0.25, 0.0, None)
    create_loss("ce", gamma=None)  # a None for a knob the loss lacks is dropped too


def test_register_twice_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register_loss("ce")(torch.nn.Module)


@pytest.mark.parametrize(
    "name,kwargs,message",
    [
        ("ce", {"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\), got 1.0"),
        ("focal", {"label_smoothing": -0.1}, r"label_smoothing must be in \[0, 1\), got -0.1"),
        ("ce", {"label_smoothing": float("nan")}, r"label_smoothing must be in \[0, 1\), got nan"),
        ("focal", {"gamma": -1}, r"gamma must be a finite float >= 0, got -1"),
        ("focal", {"alpha": -0.25}, r"alpha must be a finite float >= 0 .*got -0.25"),
        (
            "focal",
            {"num_classes": 4, "alpha": [0.25, 0.25, 0.5]},
            r"alpha must have num_classes=4 entries, got 3: \[0.25, 0.25, 0.5\]",
        ),
        ("focal", {"alpha": [0.25, -1.0, 0.5]}, r"alpha entries must be finite and >= 0; class index\(es\) \[1\]"),
        ("ce", {"class_weight": [1.0, 0.0, 2.0]}, r"class_weight entries must be finite and > 0; .*\[1\] have \[0.0\]"),
        ("ce", {"num_classes": 1}, r"num_classes must be an integer >= 2, got 1"),
    ],
)
def test_invalid_values_quote_value_and_rule(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_loss(name, **kwargs)


def test_bad_inputs_are_reported():
    logits, target = batch()
    with pytest.raises(ValueError, match="logits have 4 classes, but the loss was built for 3"):
        create_loss("focal", num_classes=3)(logits, target)
    with pytest.raises(ValueError, match="target must be an int64 tensor"):
        create_loss("ce")(logits, target.float())
    with pytest.raises(ValueError, match="logits have 4 classes but alpha has 3"):
        create_loss("focal", alpha=[1.0, 1.0, 1.0])(logits, target)


# --- cross-entropy and the focal invariants ---------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("weights", [None, WEIGHTS])
def test_ce_matches_torch(eps, weights):
    logits, target = batch()
    w = None if weights is None else torch.tensor(weights)
    expected = F.cross_entropy(logits, target, weight=w, label_smoothing=eps)
    got = create_loss("ce", num_classes=K, label_smoothing=eps, class_weight=weights)(logits, target)
    assert got.item() == pytest.approx(expected.item(), abs=1e-7)


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("weights", [None, WEIGHTS])
def test_focal_with_gamma_0_alpha_1_is_ce(eps, weights):
    logits, target = batch(seed=1)
    ce = create_loss("ce", label_smoothing=eps, class_weight=weights)(logits, target)
    focal = create_loss("focal", gamma=0.0, alpha=1.0, label_smoothing=eps, class_weight=weights)(logits, target)
    assert abs(focal.item() - ce.item()) < 1e-6


def test_focal_hand_computed():
    # logits [2, 0, -1]: exp = 7.389056, 1, 0.367879, sum 8.756936
    # p = 0.843795, 0.114195, 0.042010;  -log p = 0.169846, 2.169846, 3.169846
    x = torch.tensor([[2.0, 0.0, -1.0]])
    # target 0, gamma 2, alpha 0.25: 0.25 * (1 - 0.843795)^2 * 0.169846 = 0.25 * 0.024400 * 0.169846
    loss = create_loss("focal", gamma=2.0, alpha=0.25)(x, torch.tensor([0]))
    assert loss.item() == pytest.approx(0.0010360643, rel=1e-6)
    # + label smoothing 0.1 -> y = 0.933333, 0.033333, 0.033333; sum over the 3 classes of
    # 0.25 * y_k * (1 - p_k)^2 * -log p_k = 0.00096699 + 0.01418808 + 0.02424258
    loss = create_loss("focal", gamma=2.0, alpha=0.25, label_smoothing=0.1)(x, torch.tensor([0]))
    assert loss.item() == pytest.approx(0.0393976552, rel=1e-6)
    # per-class alpha [0.5, 1, 2], target 1: 1.0 * (1 - 0.114195)^2 * 2.169846 = 1.70257
    loss = create_loss("focal", gamma=2.0, alpha=[0.5, 1.0, 2.0])(x, torch.tensor([1]))
    assert loss.item() == pytest.approx(1.7025699934, rel=1e-6)


@pytest.mark.parametrize("alpha", [0.25, [0.1, 0.2, 0.3, 0.4]])
def test_focal_matches_keras(alpha):
    logits, target = batch(seed=2)
    got = create_loss("focal", gamma=2.0, alpha=alpha, label_smoothing=0.1)(logits, target)
    assert got.item() == pytest.approx(keras_focal(logits, target, alpha, 2.0, 0.1), rel=1e-5)


def test_per_class_alpha_equal_entries_is_scalar_alpha():
    logits, target = batch(seed=3)
    scalar = create_loss("focal", alpha=0.3, label_smoothing=0.1)(logits, target)
    per_class = create_loss("focal", alpha=[0.3] * K, label_smoothing=0.1)(logits, target)
    assert per_class.item() == pytest.approx(scalar.item(), rel=1e-6)
    only_class_2 = create_loss("focal", alpha=[0.0, 0.0, 1.0, 0.0])(logits, target)
    rows = target == 2
    assert only_class_2.item() == pytest.approx(
        create_loss("focal", alpha=1.0)(logits[rows], target[rows]).item() * rows.sum().item() / len(target), rel=1e-6
    )


@pytest.mark.parametrize("weights", [None, WEIGHTS])
@pytest.mark.parametrize("name", ["ce", "focal"])
def test_batch_loss_is_the_mean(name, weights):
    logits, target = batch(n=6, seed=4)
    loss_fn = create_loss(name, label_smoothing=0.1, class_weight=weights)
    per_sample = torch.stack([loss_fn(logits[i : i + 1], target[i : i + 1]) for i in range(6)])
    w = torch.ones(K) if weights is None else torch.tensor(weights)
    w_t = w[target]  # torch's convention: sum_i w_t l_i / sum_i w_t
    assert loss_fn(logits, target).item() == pytest.approx(((w_t * per_sample).sum() / w_t.sum()).item(), rel=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("big", [1e4, 1e30])
def test_extreme_logits_give_finite_loss_and_gradients(gamma, eps, big):
    # Sample 0 is confidently right, sample 1 confidently wrong: softmax probabilities underflow
    # to exactly 0 and 1 in float32.
    logits = torch.tensor([[big, -big, 0.0, 0.0], [big, -big, 0.0, 0.0]], requires_grad=True)
    target = torch.tensor([0, 1])
    for loss_fn in (
        create_loss("focal", gamma=gamma, alpha=0.25, label_smoothing=eps, class_weight=WEIGHTS),
        create_loss("ce", label_smoothing=eps),
    ):
        loss = loss_fn(logits, target)
        (grad,) = torch.autograd.grad(loss, logits)
        assert math.isfinite(loss.item()) and loss.item() > 0
        assert torch.isfinite(grad).all(), grad


def test_focal_gradient_matches_finite_differences():
    logits, target = batch(n=3, seed=5)
    z = logits.double()
    loss_fn = create_loss("focal", gamma=1.5, alpha=[0.2, 0.4, 0.6, 0.8], label_smoothing=0.1, class_weight=WEIGHTS)
    (grad,) = torch.autograd.grad(loss_fn(z.requires_grad_(), target), z)
    h, numeric = 1e-6, torch.zeros_like(z)
    for i in range(z.numel()):  # central differences, one logit at a time
        dz = torch.zeros(z.numel(), dtype=z.dtype).index_fill_(0, torch.tensor([i]), h).view_as(z)
        numeric.view(-1)[i] = (loss_fn(z.detach() + dz, target) - loss_fn(z.detach() - dz, target)) / (2 * h)
    assert torch.allclose(grad, numeric, atol=1e-8)


def test_focal_down_weights_easy_examples():
    # Without smoothing, focal / ce = (1 - p_target)^gamma: easy (p = 0.964663) -> 0.0012487, hard (p = 1/3) -> 0.444
    t = torch.tensor([0])
    ce, focal = create_loss("ce"), create_loss("focal", gamma=2.0, alpha=1.0)
    for logits, ratio in ((torch.tensor([[4.0, 0.0, 0.0]]), 0.0012487), (torch.zeros(1, 3), 4 / 9)):
        assert (focal(logits, t) / ce(logits, t)).item() == pytest.approx(ratio, rel=1e-4)


# --- class weights and the sampler ----------------------------------------------------------


def test_balanced_class_weights():
    # n / (K * n_c) with n = 200, K = 4, as sklearn's compute_class_weight("balanced")
    counts = [120, 30, 45, 5]
    got = class_weights_from_counts(counts)
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx([200 / 480, 200 / 120, 200 / 180, 200 / 20], rel=1e-6)
    # the same weights the data layer writes into manifest.json
    labels = np.repeat(np.arange(4), counts)
    assert got.tolist() == pytest.approx(manifest_class_weights(labels, 4), rel=1e-5)
    assert class_weights_from_counts(torch.tensor([7, 7, 7])).tolist() == [1.0, 1.0, 1.0]
    assert class_weights_from_counts(counts, mode=None) is None


def test_class_weights_reject_absent_class_and_bad_mode():
    with pytest.raises(ValueError, match=r"class index\(es\) \[2\] have no samples"):
        class_weights_from_counts([10, 5, 0, 3])
    with pytest.raises(ValueError, match="'balanced' or None, got 'inverse'"):
        class_weights_from_counts([10, 5], mode="inverse")


def test_weighted_sampler_weights():
    w = weighted_sampler_weights(torch.tensor([0, 0, 0, 1, 2, 2]), num_classes=4)
    assert w.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0, 0.5, 0.5])
    assert torch.bincount(torch.tensor([0, 0, 0, 1, 2, 2]), weights=w).tolist() == pytest.approx([1.0, 1.0, 1.0])
    sampler = torch.utils.data.WeightedRandomSampler(
        w, num_samples=6000, replacement=True, generator=torch.Generator().manual_seed(0)
    )
    drawn = torch.bincount(torch.tensor([0, 0, 0, 1, 2, 2])[list(sampler)], minlength=3)
    assert (drawn - 2000).abs().max() < 200  # each class about a third of the draws
    with pytest.raises(ValueError, match=r"integers in \[0, 4\)"):
        weighted_sampler_weights([0, 4], num_classes=4)


# --------------------------------------------------------------------------------------------------
# Stacked losses (packed trials): K loss modules over (K, N, C) logits in one call


def _stacked_case():
    w = [0.5, 2.0, 1.0, 1.5]
    modules = [
        create_loss("ce", num_classes=4),
        create_loss("ce", num_classes=4, label_smoothing=0.1, class_weight=w),
        create_loss("focal", num_classes=4, gamma=2.0, alpha=0.25, label_smoothing=0.1),
        create_loss("focal", num_classes=4, gamma=1.5, alpha=[0.1, 0.2, 0.3, 0.4], class_weight=w),
        create_loss("focal", num_classes=4, gamma=0.0, alpha=1.0),
    ]
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(len(modules), 32, 4, generator=g)).requires_grad_(True)
    target = torch.randint(0, 4, (len(modules), 32), generator=g)
    return modules, logits, target


def test_stacked_losses_equal_each_trials_loss_and_gradient():
    from fer_core.losses.stacked import stacked_loss

    modules, logits, target = _stacked_case()
    stacked = stacked_loss(modules)
    assert stacked is not None
    got = stacked(logits, target)
    assert got.shape == (len(modules),)
    (grad_got,) = torch.autograd.grad(got.sum(), logits)
    want = torch.stack([m(logits[i], target[i]) for i, m in enumerate(modules)])
    (grad_want,) = torch.autograd.grad(want.sum(), logits)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad_got, grad_want, rtol=1e-5, atol=1e-8)
    # each trial's loss depends only on its own logits
    (only_first,) = torch.autograd.grad(stacked(logits, target)[0], logits)
    assert only_first[1:].abs().sum() == 0 and only_first[0].abs().sum() > 0


def test_stacked_losses_refuse_what_they_do_not_know():
    from fer_core.losses.stacked import stacked_loss

    modules, logits, target = _stacked_case()
    assert stacked_loss([*modules, torch.nn.CrossEntropyLoss()]) is None  # another kind: one by one
    assert stacked_loss([]) is None
    with pytest.raises(ValueError, match="share num_classes"):
        stacked_loss([create_loss("ce", num_classes=4), create_loss("ce", num_classes=3)])
    stacked = stacked_loss(modules)
    assert stacked is not None
    with pytest.raises(ValueError, match=r"logits must be \(5, N, C\)"):
        stacked(logits[:2], target[:2])
    with pytest.raises(ValueError, match="built for 4"):
        stacked(logits[..., :3], target)
