"""How much of a GPU a training run uses: FLOPs per image and the GPU's dense bf16 peak.

    >>> flops = train_flops_per_image(build_model(cfg, 4, 1), (1, 48, 48))   # forward x 3
    >>> share = images_per_s * flops / (peak_tflops("NVIDIA H200") * 1e12)

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass (convolutions
and matrix products, 2 per multiply-add; elementwise work is not counted, as in the usual MFU figure)
and multiplied by 3 for forward + backward (the backward pass computes two products per forward one:
the gradients of the input and of the weights). Measured this way Model B++ costs ~2.07 GFLOP per
48x48 image forward + backward.

``PEAK_TFLOPS`` holds the dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets of a
few GPUs; an unknown GPU has no entry, and a caller takes ``--peak-tflops`` from the user instead.
"""

from __future__ import annotations

import torch

__all__ = ["PEAK_TFLOPS", "peak_tflops", "forward_flops_per_image", "train_flops_per_image"]

#: Dense bf16 tensor-core peak in TFLOP/s, by a substring of ``torch.cuda.get_device_name()``, checked in
#: this order (the first that matches wins, so "H100 PCIe" comes before "H100").
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of the GPU called ``device_name`` (as CUDA names it), or None when unknown."""
    for key, tflops in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def forward_flops_per_image(model: torch.nn.Module, image_shape: tuple[int, int, int], *, batch: int = 8) -> float:
    """FLOPs of one forward pass per image of shape ``(C, H, W)``, counted on CPU in eval mode.

    The model is left as it was (mode and weights); the count does not depend on its device or values.
    """
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(batch, *image_shape, device=device)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / batch


def train_flops_per_image(model: torch.nn.Module, image_shape: tuple[int, int, int]) -> float:
    """FLOPs of one training step per image: 3 x the forward pass (forward, input and weight gradients)."""
    return 3.0 * forward_flops_per_image(model, image_shape)
