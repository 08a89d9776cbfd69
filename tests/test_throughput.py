"""FLOPs per image and GPU peaks (``fer_core.train.throughput``), what benchmarks/gpu_packing.py divides by."""

from __future__ import annotations

import torch

from fer_core.models import create_model
from fer_core.train.throughput import forward_flops_per_image, peak_tflops, train_flops_per_image


def test_flops_of_a_dense_layer_and_a_conv_are_twice_their_multiply_adds():
    dense = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1 * 4 * 4, 3))
    assert forward_flops_per_image(dense, (1, 4, 4)) == 2 * 16 * 3
    conv = torch.nn.Conv2d(2, 5, 3, padding=1)
    assert forward_flops_per_image(conv, (2, 6, 6)) == 2 * (5 * 6 * 6) * (2 * 3 * 3)
    assert train_flops_per_image(conv, (2, 6, 6)) == 3 * forward_flops_per_image(conv, (2, 6, 6))


def test_model_bplusplus_costs_the_issues_2_07_gflop_per_image_and_modes_are_kept():
    model = create_model("fer_cnn_bplusplus", num_classes=4, in_chans=1)
    model.train()
    flops = train_flops_per_image(model, (1, 48, 48))
    assert 2.0e9 < flops < 2.1e9
    assert model.training  # counted in eval mode, handed back in the mode it came


def test_known_gpus_have_their_dense_bf16_peak_and_unknown_ones_none():
    assert peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("NVIDIA L4") == 121.0
    assert peak_tflops("NVIDIA GeForce GTX 1080") is None
