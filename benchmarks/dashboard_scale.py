"""How the experiment page scales: fabricated 100 / 1,000 / 2,000-trial experiments, build time and page size.

Each experiment is written through the experiment store as a sweep writes it (``sweep.json``,
``trials.parquet``, ``epochs.parquet``): the default search space, sampled values drawn at random,
20-epoch budget, a mix of outcomes (completed, stopped by ASHA at its rungs, collapsed, diverged,
errored) and per-epoch curves that rise, peak and sometimes fall. Then ``fer dashboard build``'s
work is timed: reading the experiment, and building the page, by step (importance, figures, rest).

The baseline, in the same process on the same experiment: the page built with the importance fit on
every completed trial (``--importance-trials 0``; what the page did before the fit was subsampled).

    .venv/bin/python benchmarks/dashboard_scale.py                   # 100, 1000, 2000 trials
    .venv/bin/python benchmarks/dashboard_scale.py --trials 2000 --no-baseline
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from pathlib import Path

import dashboards.figures as figures_module
import dashboards.importance as importance_module
from dashboards.report import build_report
from experiment_store import DataRef, ExperimentStore, Outcome, SweepRecord
from sweeps.driver import DEFAULT_SPACE
from sweeps.experiment import load_experiment
from sweeps.results import epoch_rows, trial_rows
from sweeps.space import load_space

CLASSES = ["happy", "neutral", "sad", "surprise"]
MAX_EPOCHS = 20
RUNGS = (2, 6)  # ASHA rungs (grace 2, reduction factor 3)


def _sample(space, rng: random.Random) -> dict:
    values: dict = {}
    for p in space.params:
        if not p.active(values):
            continue
        if p.type == "categorical":
            values[p.name] = rng.choice(list(p.choices))
        elif p.log:
            values[p.name] = math.exp(rng.uniform(math.log(p.low), math.log(p.high)))
        else:
            v = rng.uniform(p.low, p.high)
            values[p.name] = int(round(v)) if p.type == "int" else v
    return values


def _trial(i: int, space, rng: random.Random) -> dict:
    config = _sample(space, rng)
    skill = rng.uniform(0.3, 0.7)
    fate = rng.random()
    epochs = MAX_EPOCHS
    if fate < 0.05:
        epochs = rng.choice(RUNGS)  # stopped by ASHA
    collapse = fate > 0.95
    history, best, best_epoch = [], 0.0, 0
    for e in range(1, epochs + 1):
        acc = skill * (1 - math.exp(-e / 4)) + rng.gauss(0, 0.01)
        if collapse and e > 8:
            acc -= 0.02 * (e - 8)
        if acc > best:
            best, best_epoch = acc, e
        row = {
            "epoch": e,
            "val_acc": acc,
            "val_loss": 1.4 - acc,
            "train_acc": acc + 0.05,
            "train_loss": 1.3 - acc,
            "lr": 1e-3,
            "epoch_time_s": 1.0,
            "timestamp": 1_790_000_000 + i * 100 + e,
            "trial_id": f"t{i:05d}",
        }
        row.update({f"val_recall_{c}": acc for c in CLASSES})
        history.append(row)
        if collapse and e >= 12:
            epochs = e
            break
    window = [h["val_acc"] for h in history[-3:]]
    status = "completed" if epochs == MAX_EPOCHS else "running"
    last = {
        "epoch": epochs,
        "score": sum(window) / len(window),
        "peak": best,
        "peak_epoch": best_epoch,
        "final": history[-1]["val_acc"],
        "trial_status": "collapsed" if collapse else status,
        "stop_reason": "val_acc fell 0.08 below its peak" if collapse else None,
    }
    errored = fate > 0.985
    return {
        "trial_id": f"t{i:05d}",
        "config": config,
        "last": last,
        "errored": errored,
        "finished": True,
        "time_s": float(epochs),
        "history": history,
    }


def fabricate(root: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    space = load_space(DEFAULT_SPACE)
    trials = [_trial(i, space, rng) for i in range(n)]
    store = ExperimentStore(str(root / f"scale-{n}"))
    store.write_tables(trial_rows(trials, MAX_EPOCHS), epoch_rows(trials))
    store.write_record(
        SweepRecord(
            name=f"scale-{n}",
            command=f"python benchmarks/dashboard_scale.py --trials {n}",
            data=DataRef(uri="runs/default/data", version="vbenchmark", classes=CLASSES, train=4000, val=500),
            space=space.to_dict(),
            base_config={"seed": 0, "epochs": MAX_EPOCHS},
            max_epochs=MAX_EPOCHS,
            space_file=DEFAULT_SPACE,
            started="2026-11-30T00:00:00Z",
            finished="2026-11-30T01:00:00Z",
            wall_s=3600.0,
        )
    )
    return Path(store.location.path)


class _Timer:
    """Wraps a module function and sums the seconds spent in it."""

    def __init__(self, module, name: str):
        self.module, self.name, self.fn, self.s, self.result = module, name, getattr(module, name), 0.0, None

    def __enter__(self):
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                self.result = self.fn(*a, **k)
                return self.result
            finally:
                self.s += time.perf_counter() - t

        setattr(self.module, self.name, timed)
        return self

    def __exit__(self, *exc):
        setattr(self.module, self.name, self.fn)


def build(path: Path, importance_trials: int | None) -> dict:
    import dashboards.report as report_module

    t0 = time.perf_counter()
    exp = load_experiment(path)
    t_read = time.perf_counter() - t0
    kwargs = {} if importance_trials is None else {"importance_trials": importance_trials}
    with _Timer(report_module, "param_importances") as imp:
        t1 = time.perf_counter()
        html = build_report(exp, **kwargs)
        t_build = time.perf_counter() - t1
    return {
        "read_s": t_read,
        "build_s": t_build,
        "importance_s": imp.s,
        "total_s": t_read + t_build,
        "page_mb": len(html.encode()) / 1e6,
        "importance": imp.result or [],
    }


def _largest_difference(a: list, b: list) -> float:
    """The largest difference of one parameter's importance between two fits of the same groups."""
    diffs = [
        abs(x.values.get(k, 0.0) - y.values.get(k, 0.0))
        for x, y in zip(a, b, strict=True)
        for k in set(x.values) | set(y.values)
    ]
    return max(diffs, default=0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 2000])
    ap.add_argument("--no-baseline", action="store_true", help="skip the page built with importance on every trial")
    args = ap.parse_args()
    _ = (figures_module, importance_module, Outcome)
    with tempfile.TemporaryDirectory() as tmp:
        build(fabricate(Path(tmp), 30, seed=1), None)  # warm-up: imports, plotly, optuna
        print(f"importance fit on at most {importance_module.MAX_TRIALS} trials per group (baseline: all)")
        print(
            f"{'trials':>6} {'epochs':>7} | {'read s':>7} {'build s':>8} {'importance s':>12} {'total s':>8} "
            f"{'page MB':>8} | {'baseline total s':>16} {'importance s':>12} {'ratio':>6} {'max imp. diff':>13}"
        )
        for n in args.trials:
            path = fabricate(Path(tmp), n)
            epochs = sum(1 for _ in ExperimentStore(str(path)).read_rows("epochs.parquet") or [])
            new = build(path, None)
            line = (
                f"{n:>6} {epochs:>7} | {new['read_s']:>7.2f} {new['build_s']:>8.2f} {new['importance_s']:>12.2f} "
                f"{new['total_s']:>8.2f} {new['page_mb']:>8.2f} |"
            )
            if not args.no_baseline:
                old = build(path, 0)
                diff = _largest_difference(new["importance"], old["importance"])
                ratio = old["total_s"] / new["total_s"]
                line += f" {old['total_s']:>16.2f} {old['importance_s']:>12.2f} {ratio:>5.1f}x {diff:>13.3f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
