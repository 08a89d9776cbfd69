"""Sweep efficiency on the embedded data: what ASHA + collapse stopping saves, and what Ray Tune costs.

    .venv/bin/python benchmarks/sweep_efficiency.py                    # both parts, embedded data (~35 min)
    .venv/bin/python benchmarks/sweep_efficiency.py --part 1 --keep runs/bench   # keep the experiments
    .venv/bin/python benchmarks/sweep_efficiency.py --part 1 --keep runs/bench --reuse --reduction-factor 4
        # another ASHA setting against the same random baseline (only the changed side runs again)

Part 1 - search efficiency, same seed, same number of configurations, same space
(``sweeps/spaces/regularization.yaml``), both through ``sweeps/regularization.py``:
  (a) random search, every trial at the full epoch budget (``--search random --no-asha
      --no-collapse-stop``);
  (b) the default: Optuna TPE (start-up trials: samples/4, at least 3) + ASHA + collapse stopping.
Printed: epochs spent, wall time, and the best score (mean val acc of the last 3 epochs) among the
trials that ran the full budget - the trial a team would retrain. Target: (b) within 0.5 points of
(a)'s best for at most a third of (a)'s epochs. Two views of the same runs: over the same number of
configurations (each side's total epochs), and as a compute budget (the best full-budget score each side
had found after a third of (a)'s epochs, from the epochs' report times; and after how many epochs (b)
first came within 0.5 points of (a)'s final best). The first view charges (b) for every configuration
it was given, also after it found its best; the second is what a team with that budget would get.
One seed: a difference of a few tenths of a point is within the noise of one sweep (the val split of
the default data has ~380 images: one image is 0.26 points).

Part 2 - Ray Tune overhead: the same study (TPE sampler, successive halving on epochs with the same
grace period and reduction factor, the collapse rule, the same trainer and data, the same
parallelism: ``--concurrency`` trials at a time, one torch thread each) run by plain Optuna
(``study.optimize(n_jobs=concurrency)``) on this machine vs through Ray Tune. Printed: wall times and
their ratio, Tune's with and without Ray's start-up. Target: at most 1.15x.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweeps.driver import DEFAULT_DATA, DEFAULT_SPACE, ensure_default_data, run  # noqa: E402


def best_full_budget(exp_dir: Path, max_epochs: int) -> tuple[float, int, int]:
    rows = pq.read_table(exp_dir / "trials.parquet").to_pylist()
    full = [r for r in rows if r["epochs"] == max_epochs and r["score"] is not None]
    best = max((r["score"] for r in full), default=float("nan"))
    return best, sum(r["epochs"] for r in rows), len(full)


def anytime(exp_dir: Path, max_epochs: int) -> list[tuple[int, float]]:
    """(epochs spent so far, best full-budget score so far) each time the best improved, in report order.

    Read from Tune's trial folders (every epoch's result with its timestamp), so it also works on an
    experiment whose epochs.parquet predates the timestamp column.
    """
    from sweeps.live import read_tune_trials

    _, epochs = read_tune_trials(exp_dir, max_epochs)
    epochs.sort(key=lambda r: (r.get("timestamp") or 0, r.get("epoch") or 0))
    steps, best = [], float("-inf")
    for spent, r in enumerate(epochs, 1):
        if r.get("epoch") == max_epochs and r.get("score") is not None and r["score"] > best:
            best = r["score"]
            steps.append((spent, best))
    return steps


def part1(args, storage: Path) -> None:
    common = [
        "--data",
        args.data,
        "--samples",
        str(args.samples),
        "--max-epochs",
        str(args.max_epochs),
        "--seed",
        str(args.seed),
        "--storage",
        str(storage),
        "--wandb-mode",
        "disabled",
        "--concurrency",
        str(args.concurrency),
        "--grace-period",
        str(args.grace_period),
        "--reduction-factor",
        str(args.reduction_factor),
    ]
    out = {}
    for label, extra in (
        ("random, full budget", ["--search", "random", "--no-asha", "--no-collapse-stop"]),
        ("TPE + ASHA + collapse", []),
    ):
        name = "random" if "random" in label else "tpe-asha"
        if args.reuse and (storage / name / "sweep.json").is_file():
            meta = json.loads((storage / name / "sweep.json").read_text())
            ran = {k: meta["settings"].get(k) for k in ("samples", "max_epochs", "seed", "concurrency")}
            want = {
                "samples": args.samples,
                "max_epochs": args.max_epochs,
                "seed": args.seed,
                "concurrency": args.concurrency,
            }
            if name == "tpe-asha":
                ran.update(
                    grace_period=meta["settings"].get("grace_period"),
                    reduction_factor=meta["settings"].get("reduction_factor"),
                )
                want.update(grace_period=args.grace_period, reduction_factor=args.reduction_factor)
            if ran != want:
                raise SystemExit(f"--reuse: {storage / name} was run with {ran}, not {want}")
            print(f"reusing {storage / name} (its sweep.json matches these settings)")
            wall = meta["wall_s"]
        else:
            t0 = time.perf_counter()
            run([*common, "--name", name, *extra])
            wall = time.perf_counter() - t0
        best, epochs, n_full = best_full_budget(storage / name, args.max_epochs)
        out[label] = (best, epochs, wall, n_full)
    print(
        "\n== part 1: search efficiency "
        f"({args.samples} configurations, {args.max_epochs} epochs max, seed {args.seed}) =="
    )
    print(f"{'':<24} {'best score':>10} {'epochs':>7} {'wall':>8} {'full-budget trials':>19}")
    for label, (best, epochs, wall, n_full) in out.items():
        print(f"{label:<24} {best:>10.4f} {epochs:>7d} {wall:>7.0f}s {n_full:>19d}")
    (rb, re_, rw, _), (ab, ae, aw, _) = out.values()
    print(
        f"score difference (TPE+ASHA - random): {100 * (ab - rb):+.2f} points; "
        f"epochs ratio {ae / re_:.2f} (target <= 0.33); wall ratio {aw / rw:.2f}"
    )
    # the same runs seen as a compute budget: what had each found after N epochs?
    steps = {
        label: anytime(storage / ("random" if "random" in label else "tpe-asha"), args.max_epochs) for label in out
    }
    budget = re_ // 3
    print(f"best full-budget score found within a third of random's epochs ({budget}):")
    for label, st in steps.items():
        within = [b for spent, b in st if spent <= budget]
        print(f"  {label:<24} {max(within) if within else float('nan'):.4f}")
    reach = next((spent for spent, b in steps["TPE + ASHA + collapse"] if b >= rb - 0.005), None)
    print(
        "TPE + ASHA + collapse first came within 0.5 points of random's best "
        + (f"after {reach} epochs ({reach / re_:.2f} of random's {re_})" if reach else "never")
    )


def plain_optuna(args, data, space, max_epochs: int, n_trials: int) -> tuple[float, int]:
    import optuna

    from fer_core.train import train
    from sweeps.collapse import collapse_check
    from sweeps.trainable import score_of

    rule = dict(mode="max", grace_period=5, window=3, margin=0.03, patience=1, relative=False)
    base = {
        "data": args.data,
        "epochs": max_epochs,
        "seed": args.seed,
        "threads": 1,
        "device": "cpu",
        "data_version": data.version,
    }

    def objective(trial: optuna.Trial) -> float:
        values = space.sample(trial)
        cfg = space.config(values, base)
        history: list[float] = []

        def report(m, _ckpt):
            history.append(m["val_acc"])
            epochs_run.append(1)
            score = score_of(history, 3)
            trial.report(score, m["epoch"])
            if trial.should_prune() or collapse_check(history, **rule) == len(history):
                raise optuna.TrialPruned()

        train(cfg, data, report=report, progress=False)
        return score_of(history, 3)

    epochs_run: list[int] = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=args.seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(
            min_resource=args.grace_period, reduction_factor=args.reduction_factor
        ),
    )
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, n_jobs=args.concurrency)
    return time.perf_counter() - t0, len(epochs_run)


def part2(args, storage: Path) -> None:
    from fer_core.train import load_train_data
    from sweeps.space import load_space

    data = load_train_data(args.data)
    space = load_space(DEFAULT_SPACE)
    n, epochs = args.samples2, args.max_epochs2
    plain, plain_epochs = plain_optuna(args, data, space, epochs, n)
    t0 = time.perf_counter()
    meta = run(
        [
            "--data",
            args.data,
            "--samples",
            str(n),
            "--max-epochs",
            str(epochs),
            "--seed",
            str(args.seed),
            "--storage",
            str(storage),
            "--name",
            "overhead",
            "--wandb-mode",
            "disabled",
            "--concurrency",
            str(args.concurrency),
            "--grace-period",
            str(args.grace_period),
            "--reduction-factor",
            str(args.reduction_factor),
            "--num-cpus",
            str(args.concurrency),
        ]
    )
    tune_total = time.perf_counter() - t0
    tune_fit, tune_epochs = meta["wall_s"], meta["epochs_total"]
    print(
        f"\n== part 2: Ray Tune vs plain Optuna ({n} trials, {epochs} epochs max, "
        f"{args.concurrency} at a time, same trainer) =="
    )
    print(f"{'':<36} {'wall':>8} {'epochs':>7} {'s/epoch':>8}")
    print(
        f"{f'plain Optuna (n_jobs={args.concurrency})':<36} {plain:>7.1f}s {plain_epochs:>7d} "
        f"{plain / plain_epochs:>8.2f}"
    )
    print(f"{'Ray Tune fit()':<36} {tune_fit:>7.1f}s {tune_epochs:>7d} {tune_fit / tune_epochs:>8.2f}")
    print(f"{'Ray Tune incl. ray.init, data read':<36} {tune_total:>7.1f}s")
    print(
        f"wall ratio Tune/plain: {tune_fit / plain:.2f}x; per epoch: "
        f"{(tune_fit / tune_epochs) / (plain / plain_epochs):.2f}x (target <= 1.15). The two studies sample "
        "the same space with the same seed but prune on their own, so they may train different epochs."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("1", "2", "both"), default="both")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--samples", type=int, default=24)
    ap.add_argument("--max-epochs", type=int, default=15)
    ap.add_argument("--samples2", type=int, default=8)
    ap.add_argument("--max-epochs2", type=int, default=10)
    ap.add_argument("--grace-period", type=int, default=2, help="ASHA's grace period (epochs)")
    ap.add_argument("--reduction-factor", type=int, default=3, help="ASHA's reduction factor")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", help="keep the experiments in this folder (default: a temp folder)")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="with --keep: reuse an experiment already there when it was run with the same settings "
        "(the random baseline does not depend on the ASHA settings: try several against one)",
    )
    args = ap.parse_args()
    ensure_default_data(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        storage = Path(args.keep or tmp).resolve()
        if args.part in ("1", "both"):
            part1(args, storage)
        if args.part in ("2", "both"):
            part2(args, storage)


if __name__ == "__main__":
    main()
