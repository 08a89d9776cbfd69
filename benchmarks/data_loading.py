"""Ingest throughput, and loading a split from shards vs torchvision ImageFolder + PIL DataLoader.

    .venv/bin/python benchmarks/data_loading.py --n 4000

Both paths end with the same thing: every image of the train split as one float32 tensor
(N, 1, 48, 48) in [0, 1] plus its labels. The baseline decodes the very same PNG files with
PIL through ImageFolder + DataLoader (num_workers 0 and 2, the better one counts); ours reads the
Parquet shards (checksums verified) and converts in one vectorized op. Timings are the best of
--repeats runs in this process; the figure that matters is the printed ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("FER_NO_PROGRESS", "1")


def best_of(repeats: int, fn):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="synthetic images to generate")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="where to write (default: a temp folder)")
    args = ap.parse_args()

    import torch
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    from fer_core.data.ingest import IngestOptions, ingest
    from fer_core.data.loader import load_split
    from fer_core.data.synth import SynthConfig, generate, write_folders

    torch.set_num_threads(min(4, os.cpu_count() or 1))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fer-bench-"))
    raw = work / "raw"
    t0 = time.perf_counter()
    write_folders(generate(SynthConfig(n=args.n)), raw, overwrite=True)
    print(f"synth: {args.n} images written as PNG class folders in {time.perf_counter() - t0:.2f}s")

    for label, mis in (("ingest without mislabel search", False), ("ingest with mislabel search", True)):
        out = work / f"data-{int(mis)}"
        options = IngestOptions(src=str(raw), out=str(out), mislabels=mis, quiet=True, overwrite=True)
        t, manifest = best_of(1, lambda options=options: ingest(options))
        print(
            f"{label}: {t:.2f}s = {args.n / t:,.0f} images/s "
            f"(decode, hash, dedup, split{', out-of-fold model' if mis else ''}, write shards)"
        )
    data = work / "data-0"

    def ours():
        split = load_split(str(data), "train")
        x, y = split.tensors()
        return x.float().div_(255), y

    def ours_uint8():  # what the trainer consumes: uint8 on the device, floated per batch
        return load_split(str(data), "train").tensors()

    t_ours, (x_ours, y_ours) = best_of(args.repeats, ours)
    t_u8, _ = best_of(args.repeats, ours_uint8)
    train = load_split(str(data), "train")
    train_files = {i.split(":", 1)[1] for i in train.ids}

    folder = datasets.ImageFolder(
        str(raw), transform=transforms.Compose([transforms.Grayscale(1), transforms.ToTensor()])
    )
    idx = [k for k, (p, _) in enumerate(folder.samples) if Path(p).relative_to(raw).as_posix() in train_files]
    assert len(idx) == len(train), (len(idx), len(train))
    subset = Subset(folder, idx)

    def baseline(workers):
        xs, ys = [], []
        for xb, yb in DataLoader(subset, batch_size=64, shuffle=False, num_workers=workers):
            xs.append(xb)
            ys.append(yb)
        return torch.cat(xs), torch.cat(ys)

    results = {}
    for workers in (0, 2):
        results[workers], (x_base, _) = best_of(args.repeats, lambda workers=workers: baseline(workers))
    t_base = min(results.values())
    assert x_base.shape == x_ours.shape, (x_base.shape, x_ours.shape)
    same = torch.allclose(torch.sort(x_base.flatten(1).sum(1)).values, torch.sort(x_ours.flatten(1).sum(1)).values)
    print(f"train split: {len(train)} images, tensors {tuple(x_ours.shape)} (same pixels as baseline: {same})")
    print(f"  shards -> tensor (load_split + checksums + float):  {t_ours * 1000:8.1f} ms")
    for workers, t in results.items():
        print(f"  ImageFolder + PIL DataLoader, num_workers={workers}:   {t * 1000:8.1f} ms")
    print(f"  shards -> uint8 tensor (what the trainer holds):    {t_u8 * 1000:8.1f} ms")
    print(
        f"RATIO: shards -> float tensor is {t_base / t_ours:,.0f}x faster than the best ImageFolder DataLoader "
        f"(target >= 50x); shards -> uint8 tensor {t_base / t_u8:,.0f}x"
    )


if __name__ == "__main__":
    main()
