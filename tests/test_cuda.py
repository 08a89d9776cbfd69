"""The trainer's CUDA path: bf16 autocast, channels_last, the split resident on the GPU or streamed from
pinned host memory, checkpoints that load on CPU, evaluation that agrees with CPU.

Skipped where there is no GPU (CI has none). On a GPU machine: ``pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from fer_core.train import load_config, train, trainer as trainer_module
from fer_core.train.data import DeviceSplit
from fer_core.train.evaluate import evaluate_model
from fer_core.train.trainer import load_checkpoint

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

GPU = ["model=fer_cnn_tiny", "batch_size=32", "eval_batch_size=64", "device=cuda"]


def cfg(*overrides):
    return load_config(overrides=[*GPU, *overrides])


class Interrupt(Exception):
    pass


def test_trains_in_bf16_channels_last_and_learns(brightness_data, tmp_path, monkeypatch):
    seen = {"dtypes": set(), "channels_last": set(), "devices": set()}
    build = trainer_module.build_model

    def spy(*args, **kwargs):  # record what the first conv sees and returns during training
        model = build(*args, **kwargs)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))

        def hook(_module, inputs, output):
            seen["dtypes"].add(output.dtype)
            seen["channels_last"].add(inputs[0].is_contiguous(memory_format=torch.channels_last))
            seen["devices"].add(output.device.type)

        conv.register_forward_hook(hook)
        return model

    monkeypatch.setattr(trainer_module, "build_model", spy)

    reports = []
    result = train(
        cfg("epochs=8", "lr=3e-3", "model_args.bn_momentum=0.3", "augment=soft"),
        brightness_data,
        report=lambda m, ckpt: reports.append(m),
        run_dir=tmp_path / "run",
    )
    assert result.status == "completed" and len(reports) == 8
    assert result.best_val_acc >= 0.6  # chance is 0.25
    assert seen == {"dtypes": {torch.bfloat16}, "channels_last": {True}, "devices": {"cuda"}}
    for m in reports:
        assert all(math.isfinite(m[k]) for k in ("train_loss", "val_loss", "val_acc", "val_macro_f1"))
    # master weights stay fp32; the checkpoint loads on a machine without a GPU
    assert all(p.dtype == torch.float32 and p.is_cuda for p in result.model.parameters())
    state = load_checkpoint(tmp_path / "run")
    weights = [v for v in state["model"].values() if torch.is_tensor(v)]
    assert weights and all(v.device.type == "cpu" for v in weights)


def test_fp32_on_request(brightness_data, monkeypatch):
    seen = set()
    build = trainer_module.build_model

    def spy(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
        return model

    monkeypatch.setattr(trainer_module, "build_model", spy)
    assert train(cfg("epochs=1", "precision=fp32"), brightness_data).status == "completed"
    assert seen == {torch.float32}


def test_streamed_split_gives_the_same_batches_as_the_resident_one(brightness_data):
    x, y = brightness_data.x("train"), brightness_data.y("train")
    dev = torch.device("cuda")
    resident = DeviceSplit(x, y, dev)
    streamed = DeviceSplit(x, y, dev, memory_fraction=0.0)  # nothing fits: pinned host memory
    assert resident.resident and not streamed.resident
    assert streamed.x.is_pinned() and streamed.index_device.type == "cpu"
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:40]
    xr, yr = resident.batch(idx.to(resident.index_device))
    xs, ys = streamed.batch(idx)
    assert xs.is_cuda and ys.is_cuda and xs.dtype == torch.uint8
    assert torch.equal(xr, xs) and torch.equal(yr, ys)


def test_resume_on_cuda_or_on_cpu(brightness_data, tmp_path):
    settings = ("epochs=4", "augment=soft", "lr_schedule=cosine", "warmup_epochs=1", "loss=focal")

    def stop_after_2(m, _ckpt):
        if m["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg(*settings), brightness_data, report=stop_after_2, run_dir=tmp_path / "run")
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    resumed = train(cfg(*settings), brightness_data, run_dir=tmp_path / "run", resume=tmp_path / "run" / "checkpoint")
    assert resumed.status == "completed" and [m["epoch"] for m in resumed.history] == [1, 2, 3, 4]
    # device is a runtime setting: a checkpoint written on the GPU continues on a CPU
    cpu = train(
        cfg(*settings, "device=cpu", "threads=1"),
        brightness_data,
        run_dir=tmp_path / "copy",
        resume=tmp_path / "copy" / "checkpoint",
    )
    assert cpu.status == "completed" and [m["epoch"] for m in cpu.history] == [1, 2, 3, 4]
    assert cpu.history[:2] == resumed.history[:2]
    assert next(cpu.model.parameters()).device.type == "cpu"


def test_evaluation_on_cuda_agrees_with_cpu(brightness_data):
    result = train(cfg("epochs=3", "lr=3e-3"), brightness_data)
    data = brightness_data
    model = result.model
    gpu = evaluate_model(model, data, "val", device="cuda", precision="fp32")
    cpu = evaluate_model(model, data, "val", device="cpu", precision="fp32")
    assert np.array_equal(gpu["confusion"], cpu["confusion"])
    assert gpu["loss"] == pytest.approx(cpu["loss"], rel=1e-4)
    bf16 = evaluate_model(model, data, "val", device="cuda")  # auto: bf16 on CUDA
    assert abs(bf16["accuracy"] - cpu["accuracy"]) <= 2 / len(data.y("val"))
