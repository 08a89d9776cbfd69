"""Confirm a sweep's winners with fresh seeds: ``fer confirm EXPERIMENT_DIR --top 3 --seeds 3``.

A sweep picks its best trial on one seed's noise, so the winner's score is optimistic (the winner's
curse) and the runners-up may be as good. This re-trains the top K configurations (by score among
the trials that ran their full budget, as ``fer export-best`` ranks them) from scratch with N fresh
seeds each, on the Ray cluster, and ranks them by their mean score with its spread.

Seeds: the sweep trained every trial with seed ``s`` (``--seed``, in ``sweep.json``'s base config);
confirmation run ``i`` (0-based) uses seed ``s + 1000 + i`` - never the sweep's own seed, the same
seeds for every configuration (a paired comparison), and the same again on a rerun.

Everything else is the trial's exact config (data version, epochs, threads, device), and a run's
score is the sweep's: the mean val accuracy of the last ``score_window`` epochs. There is no
early stopping here: every run trains the full budget.

Parallelism: one Ray task per (configuration, seed), each asking for the sweep's CPUs (and GPUs)
per trial; the data set is read once by the driver and put in Ray's object store, so every task on
a node maps the same memory. With no ``--address`` (and no ``RAY_ADDRESS``) a local Ray is started
and stopped afterwards.

Launch::

    fer confirm runs/sweeps/reg1 --top 3 --seeds 3
    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m fer_cli confirm runs/sweeps/reg1 --top 3 --seeds 3

W&B: one run per (configuration, seed), job type ``confirm``, grouped by the experiment's name like
its trials (config, per-epoch metrics, the run's score as summary); offline by default, files under
``<experiment>/wandb`` (``sweeps.wandb_logging``: ``--wandb-mode``, ``--wandb-project``). The runs
are logged by this driver: the Ray tasks send their epochs through a queue and never see W&B or its key.

Outputs (in the experiment folder, each written atomically): ``confirm.parquet``, a row per
(trial, seed): trial_id, seed, score, peak, peak_epoch, final, epochs, status, time_s, error; and
``confirm.json``: settings and the ranking (trial_id, mean, std, min, max, n, failed, sweep score).
``std`` is the sample standard deviation (ddof=1; null with one seed). A configuration whose run
diverged or errored ranks below every configuration without failures. ``fer export-best --by
confirmed`` exports from it.
"""

from __future__ import annotations

import argparse
import math
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiment_store import CONFIRM_COLUMNS as COLUMNS, confirm_table, read_confirm, summarize
from fer_core.errors import FerError
from fer_core.numbers import fmt
from fer_core.progress import say
from fer_core.storage import redact

__all__ = ["confirm", "confirm_seeds", "summarize", "read_confirm", "add_arguments", "SEED_OFFSET"]

#: Confirmation seeds are ``sweep seed + SEED_OFFSET + i``.
SEED_OFFSET = 1000


def confirm_seeds(sweep_seed: int, n: int) -> list[int]:
    """The ``n`` fresh seeds for a sweep trained with ``sweep_seed``."""
    return [sweep_seed + SEED_OFFSET + i for i in range(n)]


def train_seed(trial_id: str, seed: int, config: dict, data, score_window: int, epochs=None) -> dict:
    """Train one configuration with one seed (a Ray task); a row of ``confirm.parquet``.

    ``epochs``: a queue (``ray.util.queue.Queue``) that gets ``(trial_id, seed, metrics)`` after every
    epoch, for the driver's W&B run; None: nothing is sent.
    """
    from fer_core.train import resolve_config, train
    from sweeps.trainable import score_of
    from sweeps.wandb_logging import epoch_metrics

    def report(metrics: dict, _checkpoint) -> None:
        epochs.put((trial_id, seed, epoch_metrics(metrics)))

    t0 = time.perf_counter()
    row = {
        "trial_id": trial_id,
        "seed": seed,
        "score": None,
        "peak": None,
        "peak_epoch": None,
        "final": None,
        "epochs": 0,
        "status": "errored",
        "time_s": None,
        "error": None,
    }
    try:
        cfg = resolve_config({**config, "seed": seed}, where=f"trial {trial_id} seed {seed}")
        result = train(cfg, data, progress=False, report=report if epochs is not None else None)
    except Exception as exc:  # noqa: BLE001 - one failed run is recorded, not fatal to the others
        row.update(error=f"{type(exc).__name__}: {exc}", time_s=time.perf_counter() - t0)
        return row
    values = [h["val_acc"] for h in result.history]
    if values:
        peak_epoch = max(range(len(values)), key=lambda i: (values[i], -i)) + 1
        row.update(peak=values[peak_epoch - 1], peak_epoch=peak_epoch, final=values[-1])
    score = score_of(values, score_window)
    row.update(
        score=score if result.status != "diverged" and math.isfinite(score) else None,
        epochs=len(values),
        status=result.status,
        time_s=time.perf_counter() - t0,
        error=result.message if result.status == "diverged" else None,
    )
    return row


def format_ranking(ranking: list[dict], sweep_scores: dict[str, float | None]) -> str:
    head = ["rank", "trial", "mean", "std", "min", "max", "n", "failed", "sweep score"]
    table = [head]
    for i, r in enumerate(ranking, 1):
        table.append(
            [
                str(i),
                r["trial_id"],
                _f(r["mean"]),
                _f(r["std"]),
                _f(r["min"]),
                _f(r["max"]),
                str(r["n"]),
                str(r["failed"]),
                _f(sweep_scores.get(r["trial_id"])),
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _f(v) -> str:
    return fmt(v, strict=True)


@dataclass(frozen=True)
class _Plan:
    """What a confirmation runs: the picked trials' configs, the fresh seeds, and each run's resources."""

    exp: Any  # the experiment (release.export.load_experiment)
    top: int  # configurations asked for (``picked`` may hold fewer)
    picked: list[dict]  # the best completed trials' rows of trials.parquet, best first
    configs: dict  # trial_id -> its exact TrainConfig, in ``picked``'s order
    sweep_seed: int
    seeds: list[int]
    cpus: float  # per run
    gpus: float
    settings: dict  # the sweep's settings (sweep.json)

    @property
    def first(self):
        return next(iter(self.configs.values()))


def confirm(
    exp_dir: str | Path,
    *,
    top: int = 3,
    seeds: int = 3,
    concurrency: int | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_task: float | None = None,
    gpus_per_task: float | None = None,
    command: str | None = None,
    wandb_mode: str = "auto",
    wandb_project: str | None = None,
) -> dict:
    """Re-train the top ``top`` completed trials of ``exp_dir`` with ``seeds`` fresh seeds each; see the module doc."""
    from sweeps.ray_session import ray_session, trials_that_fit
    from sweeps.wandb_logging import DEFAULT_PROJECT, JOB_CONFIRM, RunLogger, prepare_environment, resolve_mode

    _check_counts(top, seeds, concurrency)
    plan = _plan(exp_dir, top, seeds, cpus_per_task, gpus_per_task)
    mode = resolve_mode(wandb_mode)
    prepare_environment(mode)  # before Ray starts: offline and disabled runs drop the key
    data = _read_data(plan)
    project = wandb_project or plan.settings.get("wandb_project") or DEFAULT_PROJECT  # the sweep's, by default
    no_gpus = (
        f"the sweep's trials ran on GPUs ({plan.gpus:g} per trial, device={plan.first.device}) but this Ray "
        "cluster has none; pass the address of a cluster with GPUs (--address)"
    )
    with ray_session(address, num_cpus, gpus_needed=plan.gpus, no_gpus=no_gpus) as cluster:
        t0 = time.time()
        tracker = RunLogger(
            mode, project=project, group=plan.exp.name, job_type=JOB_CONFIRM, target=plan.exp.store.location
        )
        limit = concurrency or max(1, trials_that_fit(cluster, plan.cpus))
        rows, where = _train_all(plan, data, limit, tracker)
    wandb = (
        {"mode": mode, "project": project, "group": plan.exp.name, "job_type": JOB_CONFIRM, "runs": where}
        if where
        else None
    )
    return _write_results(plan, rows, command=command, wall_s=time.time() - t0, wandb=wandb)


def _check_counts(top, seeds, concurrency) -> None:
    for flag, value in (("--top", top), ("--seeds", seeds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FerError(f"{flag}: must be an integer >= 1; got {value!r}")
    if concurrency is not None and concurrency < 1:
        raise FerError(f"--concurrency: must be >= 1; got {concurrency!r}")


def _plan(exp_dir, top: int, seeds: int, cpus_per_task: float | None, gpus_per_task: float | None) -> _Plan:
    """The top ``top`` completed trials by score, their seeds, and each run's CPUs and GPUs (default: the sweep's)."""
    from fer_core.safepaths import check_writable
    from release.export import load_experiment, rank_trials

    exp = load_experiment(exp_dir)
    if exp.store.local:  # results go there: fail now, not after the training
        check_writable(exp.store.location.path, flag="EXPERIMENT_DIR")
    ranked = rank_trials(exp.trials, "score")
    if not ranked:
        from release.export import no_finished_trial

        raise no_finished_trial(exp)
    picked = ranked[:top]
    if len(picked) < top:
        say(f"only {len(picked)} completed trial(s) in {exp.name}; confirming {len(picked)}, not {top}")
    configs = {r["trial_id"]: exp.config(r) for r in picked}
    first = next(iter(configs.values()))
    record = exp.record  # a finished experiment: load_experiment(finished=True) read it
    sweep_seed = int((record.base_config if record else {}).get("seed", first.seed))
    settings = dict(record.settings) if record else {}
    cpus = float(cpus_per_task or settings.get("cpus_per_trial") or first.threads or 1)
    gpus = float(gpus_per_task if gpus_per_task is not None else settings.get("gpus_per_trial") or 0)
    return _Plan(
        exp=exp,
        top=top,
        picked=picked,
        configs=configs,
        sweep_seed=sweep_seed,
        seeds=confirm_seeds(sweep_seed, seeds),
        cpus=cpus,
        gpus=gpus,
        settings=settings,
    )


def _read_data(plan: _Plan):
    """The data set of the trials (their recorded version), read once for all runs."""
    from fer_core.train import load_train_data

    first = plan.first
    say(f"reading {redact(first.data)} once for all runs")
    return load_train_data(first.data, expected_version=first.data_version, splits=("train", "val"))


def _train_all(plan: _Plan, data, limit: int, tracker) -> tuple[list[dict], str | None]:
    """Every (trial, seed) run as a Ray task, at most ``limit`` at once, each with a W&B run that this driver
    logs; the rows in the order the runs finished, and where the W&B runs are (``tracker.close()``)."""
    import ray

    rows: list[dict] = []
    epochs = None  # the queue of the tasks' epochs, for W&B
    try:
        jobs = [(tid, s) for tid in plan.configs for s in plan.seeds]
        cpus, gpus = plan.cpus, plan.gpus
        say(
            f"confirming {len(plan.configs)} configuration(s) of {plan.exp.name} x {len(plan.seeds)} seeds "
            f"({', '.join(map(str, plan.seeds))}): {len(jobs)} runs, up to {limit} at a time, "
            f"{cpus:g} CPU{'s' if cpus != 1 else ''}" + (f" + {gpus:g} GPU" if gpus else "") + " each"
        )
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(train_seed)
        data_ref = ray.put(data)  # read once; every task on a node maps the same memory
        if tracker.enabled:
            from ray.util.queue import Queue

            epochs = Queue(actor_options={"num_cpus": 0})
        runs: dict[tuple, object] = {}  # (trial_id, seed) -> its W&B run
        job_of: dict = {}
        pending: list = []
        queue = list(jobs)
        while queue or pending:
            while queue and len(pending) < limit:
                tid, s = queue.pop(0)
                runs[(tid, s)] = tracker.start(name=f"{tid}-seed{s}", config=_wandb_config(plan, tid, s))
                ref = task.remote(tid, s, plan.configs[tid].to_dict(), data_ref, plan.exp.score_window, epochs)
                job_of[ref] = (tid, s)
                pending.append(ref)
            done, pending = ray.wait(pending, num_returns=1, timeout=1.0 if epochs is not None else None)
            _log_epochs(epochs, tracker, runs)
            if not done:
                continue
            row = ray.get(done[0])
            rows.append(row)
            tracker.finish(
                runs.get(job_of.pop(done[0])), {k: row.get(k) for k in COLUMNS[2:]}, failed=row["score"] is None
            )
            say(f"[{len(rows)}/{len(jobs)}] trial {row['trial_id']} seed {row['seed']}: " + _outcome(row))
    finally:
        where = tracker.close()  # runs an error or an interrupt left open are marked failed
        if epochs is not None:
            epochs.shutdown()
    return rows, where


def _wandb_config(plan: _Plan, trial_id: str, seed: int) -> dict:
    """A run's W&B config: the trial's config with this seed, and the trial's sweep score."""
    return {
        **plan.configs[trial_id].recorded(),
        "seed": seed,
        "trial_id": trial_id,
        "sweep_score": next(p.get("score") for p in plan.picked if p["trial_id"] == trial_id),
    }


def _log_epochs(epochs, tracker, runs: dict) -> None:
    """The epochs the tasks have sent so far, into their W&B runs."""
    if epochs is not None and epochs.qsize():
        for tid, seed, metrics in epochs.get_nowait_batch(epochs.qsize()):
            tracker.log_epoch(runs.get((tid, seed)), metrics)


def _outcome(row: dict) -> str:
    if row["score"] is None:
        return f"{row['status']}: {row['error']}"
    return (
        f"score {_f(row['score'])} (peak {_f(row['peak'])} at epoch {row['peak_epoch']}, "
        f"final {_f(row['final'])}, {row['epochs']} epochs, {row['time_s']:.1f}s)"
    )


def _write_results(plan: _Plan, rows: list[dict], *, command: str | None, wall_s: float, wandb: dict | None) -> dict:
    """Rank the configurations by their runs, write confirm.parquet and confirm.json, print the ranking; the meta."""
    if all(r["score"] is None for r in rows):
        raise FerError(
            f"every confirmation run failed; the first: trial {rows[0]['trial_id']} seed "
            f"{rows[0]['seed']}: {rows[0]['error']}"
        )
    exp, picked = plan.exp, plan.picked
    rows.sort(key=lambda r: (list(plan.configs).index(r["trial_id"]), r["seed"]))
    ranking = summarize(rows)
    sweep_scores = {r["trial_id"]: r.get("score") for r in picked}
    for i, r in enumerate(ranking, 1):
        r.update(
            rank=i,
            sweep_score=sweep_scores.get(r["trial_id"]),
            sweep_rank=[p["trial_id"] for p in picked].index(r["trial_id"]) + 1,
        )
    meta = {
        "experiment": exp.name,
        "experiment_dir": exp.where,
        "command": command,
        "top": plan.top,
        "seeds": plan.seeds,
        "seed_rule": f"sweep seed {plan.sweep_seed} + {SEED_OFFSET} + i",
        "ranked_from": "score among completed trials (as fer export-best --by score)",
        "score": f"mean val_acc of the last {exp.score_window} epochs, per run; ranked by its mean over seeds",
        "std": "sample standard deviation (ddof=1)",
        "cpus_per_task": plan.cpus,
        "gpus_per_task": plan.gpus,
        "wall_s": wall_s,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wandb": wandb,
        "ranking": ranking,
    }
    exp.store.write_confirm(confirm_table(rows), meta)
    seeds = ", ".join(map(str, plan.seeds))
    print(f"{exp.name}: top {len(plan.configs)} configuration(s) re-trained with seeds {seeds}, ranked by mean score:")
    print(format_ranking(ranking, sweep_scores))
    print(
        f"wrote {exp.store.file('confirm.parquet')} ({len(rows)} runs) and confirm.json; "
        f"export the winner with: fer export-best {shlex.quote(exp.where)} --by confirmed --out best.yaml"
    )
    return meta


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``fer confirm`` and ``python -m fer_cli confirm``."""
    p.add_argument("experiment", metavar="EXPERIMENT_DIR", help="a finished sweep's folder (<storage>/<name>)")
    p.add_argument(
        "--top",
        type=int,
        default=3,
        help="configurations to confirm: the best K completed trials by score (default: 3)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=3,
        help=f"fresh seeds per configuration: sweep seed + {SEED_OFFSET} + 0..N-1 (default: 3)",
    )
    p.add_argument(
        "--concurrency", type=int, default=None, help="max runs at once (default: what the cluster's CPUs allow)"
    )
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    p.add_argument(
        "--cpus-per-task",
        type=float,
        default=None,
        help="CPUs per run (default: the sweep's --cpus-per-trial, which is also its torch threads)",
    )
    p.add_argument("--gpus-per-task", type=float, default=None, help="GPUs per run (default: the sweep's)")
    from sweeps.wandb_logging import add_arguments as add_wandb_arguments

    add_wandb_arguments(p, runs="one run per configuration and seed, job type confirm", project=None)


def run_confirm(args, command: str | None = None) -> int:
    confirm(
        args.experiment,
        top=args.top,
        seeds=args.seeds,
        concurrency=args.concurrency,
        address=args.address,
        num_cpus=args.num_cpus,
        cpus_per_task=args.cpus_per_task,
        gpus_per_task=args.gpus_per_task,
        command=command,
        wandb_mode=args.wandb_mode,
        wandb_project=args.wandb_project,
    )
    return 0
