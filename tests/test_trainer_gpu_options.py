"""The trainer's options for GPUs: cheaper steps for one trial (``compile``, fused optimizers on CUDA, a step
that never waits for the host) and memory isolation for trials sharing a GPU (``gpu_memory_fraction``).

The CPU path must stay what it was: a seeded CPU epoch is byte-identical to a plain reference loop written
here from the trainer's documented seeding contract (so no refactoring of the step, no compile or fused
kernel leaking onto CPU can change a CPU result unnoticed).
"""

from __future__ import annotations

import pytest
import torch

from fer_core.errors import FerError
from fer_core.losses import create_loss
from fer_core.models import create_model
from fer_core.train import ConfigError, load_config, train, trainer as trainer_module
from fer_core.train.augment import create_augment
from fer_core.train.optim import create_optimizer
from fer_core.train.trainer import add_l2_grad_

TINY = ["model=fer_cnn_tiny", "batch_size=32", "eval_batch_size=64", "device=cpu", "threads=1", "class_weight=none"]


def cfg(*overrides):
    return load_config(overrides=[*TINY, *overrides])


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """The trainer's documented per-epoch seeds: 1 dropout, 2 the sample order, 3 the augmentation."""
    return (seed * 1_000_003 + epoch * 7919 + stream) % (2**63 - 1)


def reference_run(data, *, seed: int, epochs: int, lr: float, l2: float) -> tuple[torch.nn.Module, list[float]]:
    """The simplest loop that implements the trainer's contract on CPU: Adam (Keras eps), focal loss with
    label smoothing, the Keras L2 gradient on every kernel but the classifier, soft augmentation."""
    torch.manual_seed(seed)
    model = create_model("fer_cnn_tiny", num_classes=4, in_chans=1).to(memory_format=torch.channels_last)
    loss_fn = create_loss("focal", num_classes=4, gamma=2.0, alpha=0.25, label_smoothing=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-7)
    augment = create_augment("soft")
    kernels = model.l2_parameters("all_but_classifier")
    x, y = data.x("train"), data.y("train")
    losses = []
    for epoch in range(epochs):
        model.train()
        torch.manual_seed(epoch_seed(seed, epoch, 1))
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch_seed(seed, epoch, 2)))
        aug_gen = torch.Generator().manual_seed(epoch_seed(seed, epoch, 3))
        total = torch.zeros((), dtype=torch.float64)
        for start in range(0, len(y), 32):
            idx = order[start : start + 32]
            xb = x.index_select(0, idx).to(torch.float32, memory_format=torch.channels_last).div_(255.0)
            xb, yb = augment(xb, generator=aug_gen), y.index_select(0, idx)
            loss = loss_fn(model(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            add_l2_grad_(kernels, l2)
            opt.step()
            total += loss.detach().double() * len(yb)
        losses.append(float(total) / len(y))
    return model, losses


def test_a_seeded_cpu_run_is_byte_identical_to_the_reference_loop(brightness_data):
    result = train(
        cfg(
            "preset=fer_cnn_bplusplus",
            "model=fer_cnn_tiny",
            "class_weight=none",
            "lr_schedule=constant",
            "epochs=2",
            "precision=fp32",  # the reference loop is fp32; auto is bf16 on a CPU with native bf16
        ),
        brightness_data,
        progress=False,
    )
    model, losses = reference_run(brightness_data, seed=0, epochs=2, lr=5e-4, l2=1e-4)
    assert [h["train_loss"] for h in result.history] == losses
    assert result.model is not None
    got, want = result.model.state_dict(), model.state_dict()
    assert list(got) == list(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


def test_compile_must_be_true_or_false():
    assert cfg().compile is False
    with pytest.raises(ConfigError, match="compile: must be true or false; got 'fast'"):
        cfg("compile=fast")


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_fused_reaches_the_optimizer_and_is_off_by_default(name):
    model = torch.nn.Linear(3, 2)
    assert not create_optimizer(model, name=name).defaults.get("fused")
    assert create_optimizer(model, name=name, fused=True).defaults["fused"] is True
    with pytest.raises(ValueError, match="fused must be True, False or None, got 'yes'"):
        create_optimizer(model, name=name, fused="yes")


def test_the_trainer_uses_no_fused_optimizer_on_cpu(brightness_data, monkeypatch):
    built = []
    original = trainer_module.create_optimizer

    def spy(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(trainer_module, "create_optimizer", spy)
    train(cfg("epochs=1"), brightness_data, progress=False)
    assert len(built) == 1 and not built[0].defaults.get("fused")


@pytest.mark.slow
def test_compile_true_trains_within_tolerance_of_eager(brightness_data):
    """Inductor reorders reductions, so the runs part by float rounding: per epoch the training loss within 1%,
    the validation loss within 2% and the validation accuracy within one image of 32 (measured: 0.05%, 0.03%,
    equal). Dropout is off: compiled dropout draws its masks from inductor's own generator (seeded all the same),
    and the lr is moderate: at lr=3e-3 this tiny BatchNorm net amplifies rounding to 2% in six steps."""
    settings = ("epochs=3", "lr=1e-3", "dropout_scale=0", "precision=fp32")
    eager = train(cfg(*settings), brightness_data, progress=False).history
    compiled = train(cfg(*settings, "compile=true"), brightness_data, progress=False).history
    assert len(compiled) == len(eager) == 3
    for e, c in zip(eager, compiled, strict=True):
        assert c["train_loss"] == pytest.approx(e["train_loss"], rel=1e-2)
        assert c["val_loss"] == pytest.approx(e["val_loss"], rel=2e-2)
        assert abs(c["val_acc"] - e["val_acc"]) <= 1 / 32 + 1e-9


# --------------------------------------------------------------------------------------------------
# CUDA (skipped without it)
# --------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_steps_never_wait_for_the_host_and_use_a_fused_optimizer(brightness_data):
    run, state = trainer_module._setup(cfg("device=cuda", "augment=strong", "l2=1e-4", "epochs=2"), brightness_data)
    assert state.optimizer.defaults["fused"] is True
    trainer_module._train_steps(run, state, 0)  # warm-up: cuDNN and the allocator may sync the first time
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss_sum, correct = trainer_module._train_steps(run, state, 1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss_sum).item() and 0 <= correct.item() <= run.n_used


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compile_with_cuda_graphs_trains_like_eager(brightness_data):
    """bf16 on both sides; CUDA graphs replay the compiled kernels: the same tolerance as on CPU."""
    settings = ("device=cuda", "epochs=3", "lr=1e-3", "dropout_scale=0")
    eager = train(cfg(*settings), brightness_data, progress=False).history
    compiled = train(cfg(*settings, "compile=true"), brightness_data, progress=False).history
    for e, c in zip(eager, compiled, strict=True):
        assert c["train_loss"] == pytest.approx(e["train_loss"], rel=1e-2)
        assert abs(c["val_acc"] - e["val_acc"]) <= 1 / 32 + 1e-9


# --------------------------------------------------------------------------------------------------
# Memory isolation for trials sharing a GPU
# --------------------------------------------------------------------------------------------------


def test_gpu_memory_fraction_is_a_share_in_0_1():
    assert cfg().gpu_memory_fraction is None
    assert cfg("gpu_memory_fraction=0.25").gpu_memory_fraction == 0.25
    for bad in ("0", "1.5", "-0.1", "half"):
        with pytest.raises(ConfigError, match="gpu_memory_fraction"):
            cfg(f"gpu_memory_fraction={bad}")


def test_a_cuda_out_of_memory_error_in_a_step_ends_the_run_with_one_line_naming_what_to_change(
    brightness_data, monkeypatch
):
    """Simulated on CPU: the loss of a step raises torch's CUDA out-of-memory error, as a step on a full GPU does."""

    def out_of_memory(*_args, **_kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer_module, "_optimizer_step", out_of_memory)
    with pytest.raises(FerError) as err:
        train(cfg("gpu_memory_fraction=0.25", "batch_size=48", "epochs=1"), brightness_data, progress=False)
    message = str(err.value)
    assert "\n" not in message and err.value.__cause__ is None and err.value.__suppress_context__
    assert message.startswith("CUDA out of memory training fer_cnn_tiny at batch_size=48 within its ")
    assert "gpu_memory_fraction=0.25 of the GPU" in message
    assert message.endswith("; raise --gpus-per-trial (fewer trials per GPU) or lower batch_size")

    with pytest.raises(FerError, match=r"at batch_size=32(?: \(.*\))?; lower batch_size, or run fewer processes"):
        train(cfg("epochs=1"), brightness_data, progress=False)


def test_a_sweep_trial_with_a_fraction_of_a_gpu_caps_its_memory_at_that_fraction():
    from sweeps.driver import get_parser
    from sweeps.settings import SweepConfig

    def fraction(*argv: str):
        return SweepConfig.from_args(get_parser().parse_args(list(argv)), argv).gpu_memory_fraction

    assert fraction("--gpus-per-trial", "0.25") == 0.25
    assert fraction("--gpus-per-trial", "1") is None and fraction() is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_run_over_its_gpu_share_fails_alone_with_the_one_line_error(brightness_data):
    """A share far too small for resnet18 at batch 512 (a few MB of the GPU) must end in the FerError; the
    process's cap is set back afterwards so that the next test has the whole GPU."""
    total = torch.cuda.get_device_properties(0).total_memory
    share = 32 * 2**20 / total  # 32 MB
    try:
        with pytest.raises(FerError, match=r"within its gpu_memory_fraction=.* raise --gpus-per-trial"):
            train(
                cfg("device=cuda", "model=resnet18", "batch_size=512", f"gpu_memory_fraction={share}", "epochs=1"),
                brightness_data,
                progress=False,
            )
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
        torch.cuda.empty_cache()
