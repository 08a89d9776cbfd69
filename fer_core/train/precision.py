"""Which dtype a run computes in: ``precision: auto | fp32 | bf16`` for a device.

    >>> autocast_dtype("auto", torch.device("cuda"))   # torch.bfloat16
    >>> autocast_dtype("auto", torch.device("cpu"))    # torch.bfloat16 on a CPU with native bf16, else None

``auto`` is bf16 autocast on CUDA and on CPUs that compute bf16 natively (AVX512-BF16 or AMX: Intel Cooper
Lake / Sapphire Rapids and later, AMD Zen 4 and later), fp32 elsewhere: on a CPU without those
instructions bf16 is emulated and slower than fp32. Measured on this project's 2-core AMD EPYC (Zen 4)
(``benchmarks/cpu_precision.py``): the plain CNN trains 1.7x as fast in bf16; on FER2013 its 12-minute
run got 33 epochs instead of 19 and ended a point higher (README "On real data"). Weights and optimizer
state stay fp32 (autocast runs convolutions and matrix products in bf16), so ``fp32`` and ``bf16`` runs
of one config differ only in rounding. ``auto`` resolves per machine: a config that must give the same numbers on
every CPU sets ``precision: fp32``.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["autocast_dtype", "cpu_has_native_bf16"]


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles), as PyTorch's CPU backend sees it."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``, or None for fp32 (see the module docstring)."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and (device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())):
        return torch.bfloat16
    return None
