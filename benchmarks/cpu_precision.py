"""CPU precision: ``train()`` in fp32 against bf16 autocast, same model, data, seed and threads.

    .venv/bin/python benchmarks/cpu_precision.py                          # plain CNN and fer_cnn_small, 1 and 2 threads
    .venv/bin/python benchmarks/cpu_precision.py --data runs/fer2013-4/data --epochs 3 --threads 2

Why: ``precision: auto`` trains in bf16 on CPUs with native bf16 (``fer_core/train/precision.py``). This
measures what that buys and what it costs on the machine at hand. For each model and thread count it runs
``--epochs`` epochs of the model's preset recipe (``fer_cnn_plain``'s: Adam, label smoothing, flips,
cosine) twice, fp32 then bf16, alternating ``--repeats`` times in this one process, and prints the
median training images/s (``train()``'s own ``images_per_s``: the training pass, not validation), the
ratio bf16 / fp32, and the val accuracy each run ends with (on the embedded synthetic faces by default,
``--data`` for an ingested set: accuracy after a few epochs is a sanity check; the real-face comparison
at full length is ``benchmarks/real_budget.py``'s plain CNN arm).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.trainer_overhead import make_data  # noqa: E402
from fer_core.train import load_config, load_train_data, train  # noqa: E402
from fer_core.train.precision import cpu_has_native_bf16  # noqa: E402


def run_once(model: str, precision: str, threads: int, epochs: int, data, seed: int) -> tuple[float, float]:
    """(median training images/s over the epochs, final val accuracy) of one seeded run."""
    cfg = load_config(
        overrides=[
            "preset=fer_cnn_plain",
            f"model={model}",
            f"epochs={epochs}",
            f"precision={precision}",
            f"threads={threads}",
            "device=cpu",
            f"seed={seed}",
        ]
    )
    with tempfile.TemporaryDirectory() as out:
        result = train(cfg, data, run_dir=out, progress=False)
    rates = [float(h["images_per_s"]) for h in result.history]
    return statistics.median(rates), float(result.history[-1]["val_acc"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="fer_cnn_plain,fer_cnn_small")
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    ap.add_argument("--n", type=int, default=2000, help="synthetic training images (val gets n/8 more)")
    ap.add_argument("--data", default=None, help="an ingested data set instead (train and val splits)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    data = load_train_data(args.data) if args.data else make_data(args.n, args.seed)
    print(
        f"CPU: native bf16 {'yes' if cpu_has_native_bf16() else 'no (bf16 is emulated)'}; "
        f"{len(data.labels['train'])} train images, {args.epochs} epochs, median of {args.repeats}"
    )
    head = ("model", "threads", "fp32 img/s", "bf16 img/s", "ratio", "val fp32", "val bf16")
    print(f"{head[0]:<16} " + " ".join(f"{h:>{w}}" for h, w in zip(head[1:], (7, 11, 11, 6, 9, 9), strict=True)))
    for model in args.models.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
            accs: dict[str, float] = {}
            for _ in range(args.repeats):
                for precision in ("fp32", "bf16"):
                    rate, acc = run_once(model, precision, threads, args.epochs, data, args.seed)
                    rates[precision].append(rate)
                    accs[precision] = acc
            fp32, bf16 = statistics.median(rates["fp32"]), statistics.median(rates["bf16"])
            print(
                f"{model:<16} {threads:>7} {fp32:>11.0f} {bf16:>11.0f} {bf16 / fp32:>5.2f}x "
                f"{100 * accs['fp32']:>8.1f}% {100 * accs['bf16']:>8.1f}%",
                flush=True,
            )


if __name__ == "__main__":
    main()
