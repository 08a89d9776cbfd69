"""``precision``: auto is bf16 on CUDA and on CPUs with native bf16, fp32 elsewhere; training follows it."""

from __future__ import annotations

import pytest
import torch

from fer_core.train import load_config, precision as precision_mod, train
from fer_core.train.precision import autocast_dtype, cpu_has_native_bf16

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
TINY = ["model=fer_cnn_tiny", "batch_size=32", "eval_batch_size=64", "device=cpu", "threads=1", "epochs=2"]


@pytest.fixture
def native_bf16(monkeypatch):
    """Set what the CPU reports (both probes), with the cached answer cleared before and after."""

    def set_to(avx512_bf16: bool, amx: bool) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        precision_mod.cpu_has_native_bf16.cache_clear()

    yield set_to
    precision_mod.cpu_has_native_bf16.cache_clear()


def test_explicit_precisions_hold_on_every_device():
    for device in (CPU, CUDA):
        assert autocast_dtype("bf16", device) is torch.bfloat16
        assert autocast_dtype("fp32", device) is None
    assert autocast_dtype("auto", CUDA) is torch.bfloat16


@pytest.mark.parametrize("avx512_bf16, amx, want", [(True, False, True), (False, True, True), (False, False, False)])
def test_auto_on_cpu_is_bf16_only_where_the_cpu_has_it(native_bf16, avx512_bf16, amx, want):
    native_bf16(avx512_bf16, amx)
    assert cpu_has_native_bf16() is want
    assert autocast_dtype("auto", CPU) is (torch.bfloat16 if want else None)


def test_a_cpu_run_trains_in_the_precision_auto_resolves_to(brightness_data):
    """Auto gives exactly the bf16 run on a CPU with native bf16 and exactly the fp32 run elsewhere; the two
    differ (autocast reaches the model) but learn alike."""
    runs = {
        p: train(load_config(overrides=[*TINY, f"precision={p}"]), brightness_data, progress=False)
        for p in ("auto", "fp32", "bf16")
    }
    losses = {p: [h["train_loss"] for h in r.history] for p, r in runs.items()}
    assert losses["fp32"] != losses["bf16"]
    assert losses["auto"] == losses["bf16" if cpu_has_native_bf16() else "fp32"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)
