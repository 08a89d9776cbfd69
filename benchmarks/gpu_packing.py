"""GPU packing: N concurrent trial processes on one device, each a real ``train()``, and the share of peak.

    .venv/bin/python benchmarks/gpu_packing.py                               # CUDA: N = 1,2,4,8,16
    .venv/bin/python benchmarks/gpu_packing.py --device cuda --data runs/fer2013/data --compile
    .venv/bin/python benchmarks/gpu_packing.py --device cpu                  # small: ~1-2 minutes on 2 cores
    .venv/bin/python benchmarks/gpu_packing.py --device cpu --packed 4 --n-list 1   # K packed vs K sequential

For each model and each N in ``--n-list``, N plain subprocesses (no Ray: it runs from a bare checkout on
any GPU machine) each set up a ``fer_core.train.train()`` run on the same data, wait until all N are
ready, then train ``--epochs`` epochs at once. Printed per (model, N):

- per trial: the median training images/s of the epochs after the first (the first pays for CUDA
  kernel selection and the allocator's growth; with one epoch, that one), as ``train()`` measures it
  (the training pass: batch slicing, augmentation, forward, backward, optimizer; not validation);
- aggregate: the sum over the N trials, and the same as TFLOP/s and as a share of the GPU's dense bf16
  peak (``fer_core.train.throughput``: FLOPs per image from ``FlopCounterMode``, x3 for forward +
  backward; the peak from the table of known GPUs or ``--peak-tflops``; on CPU only with
  ``--peak-tflops``);
- memory per process: CUDA ``max_memory_reserved`` (what the caching allocator held; the CUDA
  context's few hundred MB come on top), or on CPU the peak resident set size.

With ``--packed K`` (a comma-separated list), each model also runs K trials (seeds and learning rates
differing) in one process two ways: one after another with ``train()`` ("K sequential"), and as one
batched network with ``fer_core.train.packed.train_packed`` ("K packed"); printed the same way, with the
aggregate images/s of the K trials (sequential: one trial's rate; packed: K x each trial's) and the
wall time of all K. ``--packed-modes packed`` skips the sequential run (on a GPU the 1-process row
already is the rate of trials run one at a time).

The data: the embedded synthetic faces (``fer data synth``; ``--images`` training images and an eighth
more for validation), drawn once by this script and handed to every trial, or ``--data DIR``, an
ingested data set (train and val splits). Every trial trains the model's preset recipe (Model B++'s for
the CNNs and resnet18: focal loss, label smoothing, L2, soft augmentation, Adam) with a constant lr and
no early stopping, so all trials do the same work; ``--set key=value`` adds trainer overrides.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GPU_MODELS = "fer_cnn_small,fer_cnn_bplusplus,resnet18"
CPU_MODELS = "fer_cnn_tiny,fer_cnn_small"
READY, GO, RESULT = "READY", "GO", "RESULT "


# --------------------------------------------------------------------------------------------------
# One trial process
# --------------------------------------------------------------------------------------------------


def trial_overrides(spec: dict) -> list[str]:
    """The trainer overrides of a benchmark trial (the same for every trial of a run but the seed)."""
    return [
        "preset=fer_cnn_bplusplus",
        f"model={spec['model']}",
        f"epochs={spec['epochs']}",
        f"batch_size={spec['batch_size']}",
        "lr_schedule=constant",
        "early_stopping_monitor=",
        "early_stopping_patience=",
        f"device={spec['device']}",
        f"seed={spec['seed']}",
        "checkpoint_every=0",
        *([f"threads={spec['threads']}"] if spec.get("threads") else []),
        *spec.get("overrides", []),
    ]


def load_data(spec: dict):
    from fer_core.train import TrainData, load_train_data

    if spec["data"] is not None:
        return load_train_data(spec["data"], splits=("train", "val"))
    arrays = np.load(spec["npz"])
    return TrainData(
        classes=list(arrays["classes"]),
        version="vbench",
        uri="synth",
        images={"train": arrays["x_train"], "val": arrays["x_val"]},
        labels={"train": arrays["y_train"], "val": arrays["y_val"]},
    )


def peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_reserved() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def steady_rate(history: list[dict]) -> float:
    """Median training images/s of the epochs after the first (the only one when there is one)."""
    rates = [h["images_per_s"] for h in history]
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def child(spec: dict) -> None:
    """Set up, say READY, wait for GO on stdin, train, print one RESULT line of JSON.

    ``spec["packed"]`` = K: train K trials, ``spec["mode"]`` "sequential" (one ``train()`` after another) or
    "packed" (``train_packed``); the history is the per-epoch aggregate images/s of the K."""
    from fer_core.train import load_config, train
    from fer_core.train.packed import train_packed

    data = load_data(spec)
    k = spec.get("packed")
    if k:
        configs = [
            load_config(
                overrides=[*trial_overrides({**spec, "seed": spec["seed"] + i}), f"lr={5e-4 * 2 ** (i % 3 - 1)}"]
            )
            for i in range(k)
        ]
    else:
        configs = [load_config(overrides=trial_overrides(spec))]
    if configs[0].device.startswith("cuda"):  # the CUDA context before GO, so the N processes' epochs overlap
        import torch

        torch.zeros(1, device=configs[0].device)
        torch.cuda.synchronize()
    print(READY, flush=True)
    sys.stdin.readline()
    started = time.time()
    if k and spec["mode"] == "packed":
        results = train_packed(configs, data)
        # every trial trained its images in the shared epoch time: the pack's rate is K times a trial's
        history = [{"images_per_s": k * h["images_per_s"]} for h in results[0].history]
    else:
        results = [train(c, data, progress=False) for c in configs]
        history = [
            {"images_per_s": statistics.median(r.history[e]["images_per_s"] for r in results)}
            for e in range(len(results[0].history))
        ]
    n = len(data.labels["train"])
    n_used = n - 1 if n % configs[0].batch_size == 1 else n  # train() leaves out a trailing batch of one image
    out = {
        "history": history,
        "images": n_used * sum(len(r.history) for r in results),  # every epoch of every trial, the first too
        "started": started,
        "ended": time.time(),
        "peak_mb": peak_memory_mb(configs[0].device),
    }
    print(RESULT + json.dumps(out), flush=True)


# --------------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------------


def run_concurrent(spec: dict, n: int) -> list[dict]:
    """Start ``n`` trial processes, release them together once all are set up, collect their results."""
    env = {**os.environ, "FER_NO_PROGRESS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = []
    for i in range(n):
        cmd = [sys.executable, __file__, "--child", json.dumps({**spec, "seed": spec["seed"] + i})]
        procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env))
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            if line != READY:
                raise SystemExit(f"a trial process failed to start (said {line!r}); see its error above")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(GO + "\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, _ = p.communicate()
            lines = [x for x in out.splitlines() if x.startswith(RESULT)]
            if p.returncode != 0 or not lines:
                raise SystemExit(f"a trial process failed (exit {p.returncode}); see its error above")
            results.append(json.loads(lines[-1][len(RESULT) :]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def synth_npz(images: int, seed: int, folder: str) -> str:
    from fer_core.data.synth import SynthConfig, generate

    s = generate(SynthConfig(n=images + images // 8, seed=seed))
    x, y = s.images[..., None], s.labels.astype(np.int64)
    path = os.path.join(folder, "synth.npz")
    np.savez(
        path,
        classes=np.array(s.classes),
        x_train=x[:images],
        y_train=y[:images],
        x_val=x[images:],
        y_val=y[images:],
    )
    return path


def model_flops(name: str, spec: dict) -> float:
    from fer_core.train import load_config
    from fer_core.train.throughput import train_flops_per_image
    from fer_core.train.trainer import build_model

    data = load_data(spec)
    cfg = load_config(overrides=trial_overrides({**spec, "model": name}))
    h, w, c = data.image_shape
    return train_flops_per_image(build_model(cfg, data.num_classes, c), (c, h, w))


def device_peak(device: str, given: float | None) -> tuple[str, float | None]:
    import torch

    if given is not None:
        return (torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"), given
    if not device.startswith("cuda"):
        return "cpu", None
    from fer_core.train.throughput import peak_tflops

    name = torch.cuda.get_device_name()
    return name, peak_tflops(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (cuda when available) | cuda | cuda:N | cpu")
    ap.add_argument("--models", default=None, help=f"comma-separated (default: {GPU_MODELS}; on CPU {CPU_MODELS})")
    ap.add_argument("--n-list", default=None, help="concurrent trial processes (default: 1,2,4,8,16; on CPU 1,2)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per trial (default: 3; on CPU 2)")
    ap.add_argument("--images", type=int, default=None, help="synthetic training images (default 20000; CPU 384)")
    ap.add_argument("--data", default=None, help="an ingested data set folder instead of synthetic faces")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's peak (default: from the table)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per trial (default: CPU cores / N)")
    ap.add_argument("--compile", action="store_true", help="trials train with compile=true (the packed ones too)")
    ap.add_argument("--packed", default=None, metavar="K[,K...]", help="also K trials packed vs K sequential")
    ap.add_argument(
        "--packed-modes",
        default="sequential,packed",
        help="which of the two --packed runs (sequential: K trials one after another, as the 1-process row)",
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra trainer overrides")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(json.loads(args.child))
        return
    modes = [m for m in args.packed_modes.split(",") if m]
    if not modes or set(modes) - {"sequential", "packed"}:
        raise SystemExit(f"--packed-modes {args.packed_modes!r}: give sequential, packed or both, comma-separated")

    import torch

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    cpu = device == "cpu"
    models = (args.models or (CPU_MODELS if cpu else GPU_MODELS)).split(",")
    n_list = [int(n) for n in (args.n_list or ("1,2" if cpu else "1,2,4,8,16")).split(",")]
    epochs = args.epochs or (2 if cpu else 3)
    images = args.images or (384 if cpu else 20000)
    gpu_name, peak = device_peak(device, args.peak_tflops)
    overrides = [*(["compile=true"] if args.compile else []), *args.set]

    with tempfile.TemporaryDirectory(prefix="fer-packing-") as tmp:
        spec = {
            "device": device,
            "epochs": epochs,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "data": args.data,
            "npz": None if args.data else synth_npz(images, args.seed, tmp),
            "overrides": overrides,
        }
        peak_txt = f"peak {peak:g} TFLOP/s" if peak else "no peak known (--peak-tflops)"
        print(
            f"device {device} ({gpu_name}, {peak_txt}); data {args.data or f'synthetic, {images} train images'}; "
            f"{epochs} epochs, batch {args.batch_size}{', compile' if args.compile else ''}; images/s: median "
            "of the epochs after the first"
        )
        print(
            f"{'model':<18} {'GFLOP/img':>9} {'trials':>14} {'per trial img/s':>16} {'aggregate img/s':>16} "
            f"{'TFLOP/s':>8} {'% peak':>7} {'MB/proc':>8} {'wall s':>7} {'overall img/s':>13}"
        )
        print(
            "(overall img/s: every image of every epoch of every trial over the whole wall time, first epochs and "
            "any start-up skew included: a lower bound on the aggregate)"
        )
        packed = [int(k) for k in args.packed.split(",")] if args.packed else []

        def row(name: str, flops: float, label: str, per: str, total: float, results: list[dict]) -> None:
            tflops = total * flops / 1e12
            share = f"{100 * tflops / peak:6.2f}%" if peak else f"{'-':>7}"
            wall = max(r["ended"] for r in results) - min(r["started"] for r in results)
            mem = max(r["peak_mb"] for r in results)
            overall = sum(r["images"] for r in results) / wall
            print(
                f"{name:<18} {flops / 1e9:>9.3f} {label:>14} {per:>16} {total:>16.0f} {tflops:>8.2f} {share} "
                f"{mem:>8.0f} {wall:>7.1f} {overall:>13.0f}",
                flush=True,
            )

        for name in models:
            flops = model_flops(name, spec)
            for n in n_list:
                threads = args.threads or max(1, (os.cpu_count() or 1) // n)
                results = run_concurrent({**spec, "model": name, "threads": threads}, n)
                rates = [steady_rate(r["history"]) for r in results]
                per = f"{statistics.median(rates):.0f} ({min(rates):.0f}-{max(rates):.0f})"
                row(name, flops, f"{n} process{'es' if n > 1 else ''}", per, sum(rates), results)
            for k in packed:
                threads = args.threads or (os.cpu_count() or 1)
                for mode in modes:
                    plain = {**spec, "model": name, "threads": threads}
                    results = run_concurrent({**plain, "packed": k, "mode": mode}, 1)
                    total = steady_rate(results[0]["history"])
                    per = f"{total / k:.0f}" if mode == "packed" else f"{total:.0f}"
                    row(name, flops, f"{k} {mode}", per, total, results)


if __name__ == "__main__":
    main()
