import math

import pytest
import torch
from torch import nn

from fer_core.train.optim import OPTIMIZERS, SCHEDULES, LRSchedule, create_optimizer


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def sched(name="constant", lr=1e-3, epochs=4, steps_per_epoch=5, **kw):
    opt = create_optimizer(model(), name="adam", lr=lr)
    return LRSchedule(opt, name=name, epochs=epochs, steps_per_epoch=steps_per_epoch, **kw)


def run_steps(s, n, metrics=None):
    """The lr each of the next n optimizer steps uses, closing epochs at their boundaries."""
    lrs = []
    for _ in range(n):
        lrs.append(s.lr)
        s.step_batch()
        if s.step_count % s.steps_per_epoch == 0:
            s.step_epoch(metrics(s.epoch) if metrics else {})
    return lrs


def plateau_lrs(values, **kw):
    """The lr after each epoch of a one-step-per-epoch plateau schedule fed ``values``."""
    s = sched("plateau", lr=1.0, epochs=len(values), steps_per_epoch=1, **kw)
    out = []
    for v in values:
        s.step_batch()
        s.step_epoch({"val_loss": v, "val_accuracy": v, "other": 0.0})
        out.append(s.lr)
    return out


# --- optimizers ------------------------------------------------------------------------------


def test_adam_defaults_are_keras():
    opt = create_optimizer(model(), lr=5e-4)
    assert isinstance(opt, torch.optim.Adam) and not isinstance(opt, torch.optim.AdamW)
    g = opt.param_groups[0]
    assert (g["lr"], g["eps"], g["betas"], g["weight_decay"]) == (5e-4, 1e-7, (0.9, 0.999), 0)


def test_adam_refuses_weight_decay():
    with pytest.raises(ValueError, match=r"0\.01.*`l2`.*adamw"):
        create_optimizer(model(), name="adam", weight_decay=0.01)


def test_adamw_excludes_1d_params_from_decay():
    m = model()
    opt = create_optimizer(m, name="adamw", lr=1e-3, weight_decay=0.05)
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(m[0].weight), id(m[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(m[0].bias), id(m[1].weight), id(m[1].bias), id(m[2].bias)}
    assert all(g["lr"] == 1e-3 for g in opt.param_groups)


def test_sgd_momentum_nesterov_and_frozen_params():
    m = model()
    m[0].weight.requires_grad_(False)
    opt = create_optimizer(m, name="sgd", lr=0.1, momentum=0.8, weight_decay=1e-4)
    g = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups) == 1
    assert (g["momentum"], g["nesterov"], g["weight_decay"]) == (0.8, True, 1e-4)
    assert all(p is not m[0].weight for p in g["params"])
    assert create_optimizer(m.parameters(), name="sgd", nesterov=False).param_groups[0]["nesterov"] is False
    with pytest.raises(ValueError, match="momentum > 0"):
        create_optimizer(m, name="sgd", momentum=0.0)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(name="rmsprop"), r"'rmsprop'.*'adam', 'adamw', 'sgd'"),
        (dict(lr=0.0), r"lr .* got 0\.0"),
        (dict(lr=float("nan")), r"lr .* got nan"),
        (dict(betas=(0.9, 1.0)), r"betas\[1\].* got 1\.0"),
        (dict(betas=0.9), r"betas must be a pair"),
        (dict(eps=-1.0), r"eps .* got -1\.0"),
    ],
)
def test_optimizer_argument_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        create_optimizer(model(), **kw)
    assert OPTIMIZERS == ("adam", "adamw", "sgd")


def test_optimizer_needs_trainable_params():
    with pytest.raises(ValueError, match="no trainable parameters"):
        create_optimizer([])
    with pytest.raises(ValueError, match="param-group dicts"):
        create_optimizer([{"params": list(model().parameters())}])


# --- schedules -------------------------------------------------------------------------------


def test_constant_and_unknown_schedule():
    assert run_steps(sched("constant"), 20) == [1e-3] * 20
    with pytest.raises(ValueError, match=r"'linear'.*'constant', 'cosine', 'step', 'plateau'"):
        sched("linear")
    assert SCHEDULES == ("constant", "cosine", "step", "plateau")


@pytest.mark.parametrize("alpha", [0.0, 0.02])
def test_cosine_is_keras_cosine_decay(alpha):
    # 4 epochs x 5 steps: decay over 20 steps, per step.
    lrs = run_steps(sched("cosine", epochs=4, steps_per_epoch=5, cosine_alpha=alpha), 24)
    assert lrs[0] == pytest.approx(1e-3)
    assert lrs[10] == pytest.approx(1e-3 * (alpha + (1 - alpha) / 2))
    assert lrs[5] == pytest.approx(1e-3 * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi / 4)) + alpha))
    assert lrs[20:] == pytest.approx([1e-3 * alpha] * 4, abs=1e-15)  # clamped past the end
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_warmup_ramp_then_cosine_from_its_end():
    # 1.5 epochs x 4 steps = 6 warmup steps, then a cosine over 5*4 - 6 = 14 steps.
    s = sched("cosine", epochs=5, steps_per_epoch=4, warmup_epochs=1.5, cosine_alpha=0.1)
    assert (s.warmup_steps, s.decay_steps) == (6, 14)
    lrs = run_steps(s, 20)
    assert lrs[:6] == pytest.approx([1e-3 * k / 6 for k in range(1, 7)])
    assert lrs[6] == pytest.approx(1e-3)
    assert lrs[13] == pytest.approx(1e-3 * (0.1 + 0.9 / 2))
    assert s.lr == pytest.approx(1e-4)


def test_warmup_constant_and_rounding():
    s = sched("constant", epochs=3, steps_per_epoch=4, warmup_epochs=0.5)
    assert run_steps(s, 4) == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3])
    assert sched(warmup_epochs=0.1).warmup_steps == 0  # round(0.5) == 0
    with pytest.raises(ValueError, match=r"warmup_epochs=4.*shorter"):
        sched("cosine", epochs=4, warmup_epochs=4)


def test_step_schedule_changes_at_epoch_boundaries():
    s = sched("step", epochs=7, steps_per_epoch=2, step_size=3, step_gamma=0.5)
    lrs = run_steps(s, 14)
    expected = [1e-3 * 0.5 ** (e // 3) for e in range(7) for _ in range(2)]
    assert lrs == pytest.approx(expected)


def test_plateau_patience_and_min_delta():
    # improvement must beat best by > 1e-4; after 2 stale epochs the lr halves and the count restarts
    lrs = plateau_lrs([1.0, 0.99995, 0.99991, 0.5, 0.6, 0.6, 0.6, 0.6, 0.4], plateau_patience=2)
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125]


def test_plateau_patience_zero_and_min_lr_floor():
    lrs = plateau_lrs([1.0] * 6, plateau_patience=0, plateau_factor=0.1, plateau_min_lr=0.0015)
    # epoch 1 improves on inf; then every epoch reduces, until the floor
    assert lrs == pytest.approx([1.0, 0.1, 0.01, 0.0015, 0.0015, 0.0015])
    assert lrs[3] == 0.0015  # exactly the floor


def test_plateau_mode_inference_and_override():
    rising = [0.1, 0.2, 0.3, 0.4]
    # val_loss -> min: a rising loss never improves after the first epoch
    assert plateau_lrs(rising, plateau_patience=1) == [1.0, 0.5, 0.25, 0.125]
    # val_accuracy -> max: a rising accuracy keeps improving
    assert plateau_lrs(rising, plateau_patience=1, plateau_monitor="val_accuracy") == [1.0] * 4
    assert plateau_lrs(rising, plateau_patience=1, plateau_monitor="val_loss", plateau_mode="max") == [1.0] * 4
    with pytest.raises(ValueError, match=r"'other'.*plateau_mode='min' or 'max'"):
        sched("plateau", plateau_monitor="other")
    with pytest.raises(ValueError, match=r"'down'.*'min', 'max'"):
        sched("plateau", plateau_mode="down")


def test_plateau_nan_is_no_improvement_and_missing_metric_errors():
    nan = float("nan")
    assert plateau_lrs([1.0, nan, nan, 0.5], plateau_patience=2) == [1.0, 1.0, 0.5, 0.5]
    s = sched("plateau")
    with pytest.raises(ValueError, match=r"'val_loss'.*\['loss', 'val_acc'\]"):
        s.step_epoch({"val_acc": 0.5, "loss": 1.0})
    s.step_epoch({"val_loss": torch.tensor(0.3)})  # tensors are fine
    assert s.best == pytest.approx(0.3)


def test_plateau_reduction_scales_warmup_and_all_groups():
    m = model()
    opt = torch.optim.Adam([{"params": m[0].parameters(), "lr": 1e-3}, {"params": m[2].parameters(), "lr": 1e-2}])
    s = LRSchedule(opt, name="plateau", epochs=3, steps_per_epoch=4, warmup_epochs=2, plateau_patience=0)
    s.step_epoch({"val_loss": 1.0})
    s.step_epoch({"val_loss": 1.0})  # reduce: 1e-3 -> 5e-4
    assert s.lr == pytest.approx(5e-4 / 8)  # warmup step 0 of 8
    assert opt.param_groups[1]["lr"] == pytest.approx(5e-3 / 8)
    assert [g["initial_lr"] for g in opt.param_groups] == [1e-3, 1e-2]


def test_argument_errors_quote_the_value():
    with pytest.raises(ValueError, match=r"epochs .* got 0"):
        sched(epochs=0)
    with pytest.raises(ValueError, match=r"plateau_factor .* got 1\.0"):
        sched("plateau", plateau_factor=1.0)
    with pytest.raises(ValueError, match=r"cosine_alpha .* got 1\.5"):
        sched("cosine", cosine_alpha=1.5)


@pytest.mark.parametrize("name", SCHEDULES)
def test_resume_is_exact(name):
    kw = dict(
        name=name,
        epochs=6,
        steps_per_epoch=3,
        warmup_epochs=1.0,
        cosine_alpha=0.05,
        step_size=2,
        step_gamma=0.3,
        plateau_patience=1,
        plateau_factor=0.3,
        plateau_min_lr=2e-5,
    )
    losses = [1.0, 0.9, 0.95, 0.97, float("nan"), 0.96]

    def metrics(e):
        return {"val_loss": losses[e]}

    def fresh():
        opt = create_optimizer(model(), name="adamw", lr=1e-3, weight_decay=0.01)
        return opt, LRSchedule(opt, **kw)

    _, full = fresh()
    expected = run_steps(full, 18, metrics)

    opt, first = fresh()
    head = run_steps(first, 8, metrics)
    state = first.state_dict()
    opt2, resumed = fresh()
    resumed.load_state_dict(state)
    assert head + run_steps(resumed, 10, metrics) == expected  # exact, not approx
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in full.optimizer.param_groups]
    if name == "plateau":
        assert len(set(expected)) > 4  # the test saw reductions

    other = LRSchedule(create_optimizer(model(), lr=1e-3), name=name, epochs=7, steps_per_epoch=3)
    with pytest.raises(ValueError, match="other settings"):
        other.load_state_dict(state)
