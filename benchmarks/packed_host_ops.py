"""Host work per training step: the tensor operations one ``train()`` step dispatches vs a packed step of K trials.

    .venv/bin/python benchmarks/packed_host_ops.py                                   # B++ and resnet18, K = 4, 16
    .venv/bin/python benchmarks/packed_host_ops.py --models fer_cnn_bplusplus --k-list 2,8,16

A FER trial on a GPU is launch-bound: its step time is the host's time to dispatch the step's operations,
not the GPU's time to run them (issue 14: B++ at ~8,000 images/s on an H200, as slow as a bare loop).
Packing K trials into one batched network helps exactly as much as it cuts the operations dispatched per
trial and step. This counts them, on any device (CPU here): every ATen operation that reaches the
dispatcher during the training steps (forward, backward, loss, augmentation, dropout masks, L2,
optimizer, metric sums) is seen by a ``TorchDispatchMode``, split into

- kernels: operations that compute (on CUDA each is at least one kernel launch);
- views and allocations: ``select``, ``view``, ``detach``, ... and ``empty``: no launch, but host time;
- syncs: ``_local_scalar_dense`` (``.item()``), a host wait on the device (there should be none).

The steps are counted as the difference between an epoch over ``2 x --images`` and one over ``--images``
training images (the same validation split), so setup, validation and bookkeeping cancel out. The
optimizer is built fused, as the trainer builds it on CUDA (torch's fused Adam/AdamW/SGD also run on
CPU), so the counts are those of a CUDA step; ``--as-on-cpu`` counts the CPU trainer's per-parameter loop
instead. Printed per model: ``train()``'s step, then each packed K's step, per step and per trial-step,
and the ratio of ``train()``'s operations per step to the pack's per trial-step (the most packing can
gain on a launch-bound GPU; 1.00x: no gain). Deterministic: the counts do not depend on the machine.
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_core.train import (  # noqa: E402
    TrainData,
    load_config,
    train,
    trainer as trainer_module,  # noqa: E402
)
from fer_core.train.packed import train_packed  # noqa: E402

NO_LAUNCH = {"aten.empty", "aten.empty_strided", "aten.empty_like"}
SYNC = {"aten._local_scalar_dense"}


class OpCount(TorchDispatchMode):
    """Counts the ATen operations dispatched while active, by kind."""

    def __init__(self):
        super().__init__()
        self.kinds: collections.Counter[str] = collections.Counter()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        kind = "sync" if name in SYNC else "view" if func.is_view or name in NO_LAUNCH else "kernel"
        self.kinds[kind] += 1
        self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def make_data(n_train: int, n_val: int, seed: int) -> Callable[[int], TrainData]:
    from fer_core.data.synth import SynthConfig, generate

    s = generate(SynthConfig(n=2 * n_train + n_val, seed=seed))
    x, y = s.images[..., None], s.labels.astype(np.int64)

    def data(n: int) -> TrainData:
        return TrainData(
            classes=list(s.classes),
            version="vbench",
            uri="synth",
            images={"train": x[:n], "val": x[2 * n_train :]},
            labels={"train": y[:n], "val": y[2 * n_train :]},
        )

    return data


def config(model: str, seed: int, batch_size: int, device: str):
    """B++'s recipe (focal loss, label smoothing, class weights, L2, soft augmentation, dropout, Adam)."""
    return load_config(
        overrides=[
            "preset=fer_cnn_bplusplus",
            f"model={model}",
            "epochs=1",
            f"batch_size={batch_size}",
            "lr_schedule=constant",
            "early_stopping_monitor=",
            "early_stopping_patience=",
            f"device={device}",
            f"seed={seed}",
            "checkpoint_every=0",
            "precision=fp32",
        ]
    )


def step_counts(run: Callable[[int], object], images: int, steps: int) -> tuple[dict, dict]:
    """Operations per step (by kind, and by name): the epoch over 2x ``images`` minus the one over ``images``."""
    small, large = OpCount(), OpCount()
    with small:
        run(images)
    with large:
        run(2 * images)
    kinds = {k: (large.kinds[k] - small.kinds[k]) / steps for k in ("kernel", "view", "sync")}
    ops = {k: (large.ops[k] - small.ops[k]) / steps for k in large.ops}
    return kinds, ops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="fer_cnn_bplusplus,resnet18")
    ap.add_argument("--k-list", default="4,16", help="pack sizes K (comma-separated)")
    ap.add_argument("--images", type=int, default=64, help="training images of the shorter epoch (x batch size)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--as-on-cpu", action="store_true", help="count the CPU trainer's optimizer (not fused)")
    ap.add_argument("--top", type=int, default=0, help="also print the N most frequent operations per row")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.images < args.batch_size or args.images % args.batch_size:
        raise SystemExit(f"--images {args.images}: give a multiple of --batch-size ({args.batch_size})")
    ks = [int(k) for k in args.k_list.split(",")]
    if not ks or min(ks) < 1:
        raise SystemExit(f"--k-list {args.k_list!r}: give pack sizes >= 1, comma-separated")
    if not args.as_on_cpu:
        build = trainer_module._build_optimizer

        def fused_build(cfg, model, *, steps_per_epoch, fused=False):
            return build(cfg, model, steps_per_epoch=steps_per_epoch, fused=True)

        trainer_module._build_optimizer = fused_build  # as the trainer builds it on CUDA
    data = make_data(2 * args.images, 64, args.seed)
    steps = args.images // args.batch_size
    print(
        f"device {args.device}; optimizer {'as on CPU' if args.as_on_cpu else 'fused (as on CUDA)'}; "
        f"batch {args.batch_size}; operations dispatched per training step (the difference of two epochs)"
    )
    print(
        f"{'model':<18} {'step':>12} {'kernels':>8} {'views':>7} {'syncs':>6} {'all/trial-step':>15} {'vs train()':>10}"
    )
    for name in args.models.split(","):
        cfgs = [config(name, args.seed + i, args.batch_size, args.device) for i in range(max(ks))]
        base = None
        for k in [1, *ks]:
            label = "train()" if k == 1 else f"packed K={k}"

            def run(n: int, k: int = k, cfgs: list = cfgs) -> object:
                return train(cfgs[0], data(n), progress=False) if k == 1 else train_packed(cfgs[:k], data(n))

            kinds, ops = step_counts(run, args.images, steps)
            per = sum(kinds.values()) / k
            base = base or per
            print(
                f"{name:<18} {label:>12} {kinds['kernel'] / k:>8.0f} {kinds['view'] / k:>7.0f} "
                f"{kinds['sync'] / k:>6.1f} {per:>15.0f} {base / per:>9.2f}x",
                flush=True,
            )
            if args.top:
                top = sorted(ops.items(), key=lambda kv: -kv[1])[: args.top]
                print("    " + ", ".join(f"{op.removeprefix('aten.')} {n / k:.1f}" for op, n in top))
    print("(kernels, views, syncs: per trial and step; vs train(): train()'s operations per step / the row's)")


if __name__ == "__main__":
    main()
