"""Where the Tune driver spends its time processing trial results, with W&B logging on (offline).

Runs the same small sweep twice in this process (same seed, same data, a local Ray each time):
first the baseline - Ray's W&B callback putting each result into its queue actor and waiting for the
reply (what fer-sweep did before) - then fer-sweep's send-only queue
(``sweeps.wandb_logging._SendOnlyQueue``; ``SEND_WITHOUT_WAITING``). For each run it prints the
driver's time per part of result processing (Tune's ``_process_trial_results`` and, inside it,
each callback, the searcher, the scheduler), then the ratios. Tune warns "Processing trial results
took N s" above 0.5 s.

    .venv/bin/python benchmarks/driver_result_processing.py               # 6 trials x 8 epochs
    .venv/bin/python benchmarks/driver_result_processing.py --samples 12 --max-epochs 20
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time

import ray.tune.callback as tune_callback
import ray.tune.execution.tune_controller as tune_controller

import sweeps.wandb_logging as wandb_logging
from sweeps import asha, optuna_search
from sweeps.driver import DEFAULT_DATA, ensure_default_data, run

TIMES: dict[str, list[float]] = collections.defaultdict(list)


def _timed(owner, name: str, key: str) -> None:
    fn = getattr(owner, name)

    def wrap(self, *a, **k):
        t = time.perf_counter()
        try:
            return fn(self, *a, **k)
        finally:
            TIMES[key].append(time.perf_counter() - t)

    setattr(owner, name, wrap)


def _timed_hook(hook, key: str):
    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return hook(*a, **k)
        finally:
            TIMES[key].append(time.perf_counter() - t)

    return timed


def _instrument() -> None:
    _timed(tune_controller.TuneController, "_process_trial_results", "all result processing")
    _timed(optuna_search.PruningOptunaSearch, "on_trial_result", "searcher.on_trial_result")
    _timed(asha.ReplayingASHAScheduler, "on_trial_result", "scheduler.on_trial_result")
    init = tune_callback.CallbackList.__init__

    def timed_init(self, callbacks):
        init(self, callbacks)
        for c in callbacks:
            c.on_trial_result = _timed_hook(c.on_trial_result, f"{type(c).__name__}.on_trial_result")

    tune_callback.CallbackList.__init__ = timed_init


def _sweep(args, storage: str, name: str) -> dict[str, list[float]]:
    import ray

    TIMES.clear()
    run(
        [
            "--data",
            args.data,
            "--storage",
            storage,
            "--name",
            name,
            "--samples",
            str(args.samples),
            "--max-epochs",
            str(args.max_epochs),
            "--concurrency",
            "2",
            "--wandb-mode",
            "offline",
            "--seed",
            "0",
        ]
    )
    ray.shutdown()
    return {k: list(v) for k, v in TIMES.items()}


def _table(title: str, times: dict[str, list[float]]) -> None:
    print(f"\n{title}\n{'part':52s} {'calls':>5s} {'mean ms':>8s} {'max ms':>8s} {'total s':>8s}")
    for k, v in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        print(f"{k:52s} {len(v):5d} {1000 * sum(v) / len(v):8.1f} {1000 * max(v):8.1f} {sum(v):8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--max-epochs", type=int, default=8)
    args = ap.parse_args()
    ensure_default_data(args.data)
    _instrument()
    with tempfile.TemporaryDirectory() as tmp:
        wandb_logging.SEND_WITHOUT_WAITING = False  # baseline: Ray's blocking Queue.put
        try:
            base = _sweep(args, tmp, "baseline")
        finally:
            wandb_logging.SEND_WITHOUT_WAITING = True
        new = _sweep(args, tmp, "send-only")
    _table("baseline: Ray's W&B callback waits for its queue actor on every result", base)
    _table("fer-sweep: results sent to the queue actor without waiting", new)
    w = "NodeCredentialsWandbLoggerCallback.on_trial_result"
    for key in ("all result processing", w):
        b, n = sum(base.get(key, [0.0])), sum(new.get(key, [0.0]))
        print(f"{key}: {b:.2f} s -> {n:.2f} s ({b / n:.0f}x less)" if n else f"{key}: {b:.2f} s -> 0")
    print(
        f"slowest single result processing: {max(base['all result processing']):.2f} s -> "
        f"{max(new['all result processing']):.2f} s (Tune warns above 0.5 s)"
    )


if __name__ == "__main__":
    main()
