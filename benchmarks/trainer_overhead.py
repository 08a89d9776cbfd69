"""Trainer overhead: one epoch of ``train()`` vs a bare forward/backward/step loop over the same tensors.

    .venv/bin/python benchmarks/trainer_overhead.py                      # B++ and resnet18, CPU
    .venv/bin/python benchmarks/trainer_overhead.py --device cuda --n 20000 --models fer_cnn_bplusplus,resnet34

The bare loop is the limit on a given machine: the same model (same init), the same loss (B++'s
focal loss with label smoothing and class weights), optimizer and batches, with the Keras L2 penalty
written the naive way (added to the loss), and nothing else: no augmentation, no metrics, no
validation, no checkpoint. ``train()`` runs one full epoch of its loop with the same settings
(augmentation off, as in the bare loop): seeded permutation, on-device batch slicing, metric
accumulation, one validation pass over a val split of a tenth of the images, and a checkpoint.

Printed per model: the bare loop's time, ``train()``'s epoch time (from its own ``epoch_time_s``,
which covers training, validation and metrics) and the whole ``train()`` call (model construction,
data placement and the checkpoint write included), as ratios to the bare loop; medians of
``--repeats`` alternating runs in this one process. Target: the epoch within 1.10x of the bare loop.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_core.train import TrainData, load_config, train  # noqa: E402
from fer_core.train.trainer import build_loss, build_model, resolve_device  # noqa: E402


def make_data(n: int, seed: int) -> TrainData:
    from fer_core.data.synth import SynthConfig, generate

    s = generate(SynthConfig(n=n + n // 8, seed=seed))
    x, y = s.images[..., None], s.labels.astype(np.int64)
    return TrainData(
        classes=list(s.classes),
        version="vbench",
        uri="synth",
        images={"train": x[:n].copy(), "val": x[n:].copy()},
        labels={"train": y[:n].copy(), "val": y[n:].copy()},
    )


def bare_epoch(cfg, data: TrainData, device: torch.device) -> float:
    """Seconds for one epoch of the simplest correct loop."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.num_classes, data.image_shape[2]).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg, data.num_classes, data.counts("train")).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-7)
    x = data.x("train").to(device)
    y = data.y("train").to(device)
    kernels = model.l2_parameters(cfg.l2_scope) if cfg.l2 else []
    amp = device.type == "cuda"
    model.train()
    _sync(device)
    t0 = time.perf_counter()
    perm = torch.randperm(len(y), device=device)
    for i in range(0, len(y), cfg.batch_size):
        idx = perm[i : i + cfg.batch_size]
        xb = x[idx].float() / 255.0
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(xb)
        loss = loss_fn(logits.float(), y[idx])
        if kernels:
            loss = loss + cfg.l2 * sum(w.pow(2).sum() for w in kernels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="fer_cnn_bplusplus,resnet18")
    ap.add_argument("--n", type=int, default=768, help="training images (val gets n/8 more)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = make_data(args.n, args.seed)
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, {args.n} train / {len(data.labels['val'])} "
        f"val images, median of {args.repeats}"
    )
    print(f"{'model':<20} {'bare loop':>10} {'train() epoch':>14} {'ratio':>6} {'train() call':>13} {'ratio':>6}")
    for name in args.models.split(","):
        preset = ["preset=fer_cnn_bplusplus"] if name.startswith("fer_cnn") else ["preset=fer_cnn_bplusplus"]
        cfg = load_config(
            overrides=[
                *preset,
                f"model={name}",
                "epochs=1",
                "augment=none",
                "lr_schedule=constant",
                "early_stopping_monitor=",
                "early_stopping_patience=",
                f"device={args.device}",
                f"seed={args.seed}",
            ]
        )
        bare_epoch(cfg, data, device)  # warm-up (allocator, kernels)
        bare, epoch, call = [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.repeats):
                bare.append(bare_epoch(cfg, data, device))
                t0 = time.perf_counter()
                res = train(cfg, data, run_dir=Path(tmp) / f"r{r}", progress=False)
                call.append(time.perf_counter() - t0)
                epoch.append(res.history[0]["epoch_time_s"])
        b, e, c = (statistics.median(v) for v in (bare, epoch, call))
        print(f"{name:<20} {b:>9.2f}s {e:>13.2f}s {e / b:>5.2f}x {c:>12.2f}s {c / b:>5.2f}x")


if __name__ == "__main__":
    main()
