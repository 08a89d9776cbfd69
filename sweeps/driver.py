"""The regularization sweep: which L2 / dropout / label smoothing / focal loss mix stops FER models collapsing?

Goal of the study: FER models overfit and then collapse (validation accuracy peaks, then falls in
late epochs). Find the regularization that maximizes the accuracy you *keep* - the mean validation
accuracy of the last epochs (``score``) - not the peak you passed on the way.

- Scientific hyperparameters (what the study is about): ``l2`` (Keras kernel penalty, log scale),
  ``dropout_scale``, ``loss`` (ce or focal), ``focal_gamma`` and ``focal_alpha`` (only when the loss
  is focal), ``label_smoothing``.
- Nuisance hyperparameters (searched so each regularizer is compared at its best): ``model``
  (registry names), ``lr``, ``augment``, ``batch_size``.
- Fixed: the space file's ``fixed`` keys (optimizer, schedule, class weights), the data set
  version, the seed, and the epoch budget ``--max-epochs`` (never tuned inside a study).

Search: Optuna TPE (seeded, define-by-run, so focal's parameters exist only for focal trials) with
ASHA on epochs and our collapse stopper; trials stopped early reach Optuna as *pruned* with their
per-epoch values (``sweeps.optuna_search``). Every epoch is checkpointed; failed trials are retried;
``--resume`` continues an interrupted experiment without re-running finished trials.

Launch::

    # no cluster: starts a local Ray on this machine, on the embedded synthetic data
    python sweeps/regularization.py

    # any Ray cluster (Ray 2.60 local clusters use token auth: RAY_AUTH_MODE=token)
    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python sweeps/regularization.py --data s3://bucket/fer2013/v1 --samples 64 --max-epochs 40 \\
        --gpus-per-trial 0.25 --space sweeps/spaces/regularization-gpu.yaml --storage s3://bucket/sweeps

    # continue an interrupted experiment
    python sweeps/regularization.py --name regularization-20261125-120000 --resume

Outputs in ``<storage>/<name>/``: Tune's experiment state and trial folders (checkpoints, results),
``trials.parquet`` (a row per trial), ``epochs.parquet`` (a row per trial-epoch), ``summary.txt``
and ``sweep.json`` (command, space, data version, outcome counts, best trial); ``wandb/``: a W&B run
per trial (job type ``sweep-trial``, run id = trial id; ``--resume`` continues it), see
``sweeps.wandb_logging``.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from pathlib import Path

from fer_core.errors import FerError
from fer_core.progress import say
from sweeps.wandb_logging import add_arguments as add_wandb_arguments

DEFAULT_DATA = "runs/default/data"
DEFAULT_SPACE = str(Path(__file__).resolve().parent / "spaces" / "regularization.yaml")
SMOKE = dict(samples=4, max_epochs=4, grace_period=1, collapse_grace=2, collapse_window=2, concurrency=2)


#: How the sweep was launched, as its record shows it (``fer sweep`` records ``fer sweep ...``).
SCRIPT = "python sweeps/regularization.py"
DESCRIPTION = "Regularization sweep on Ray Tune: Optuna TPE + ASHA + collapse stopping."


def get_parser(prog: str = SCRIPT) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog.removeprefix("python "), description=DESCRIPTION,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The sweep's arguments, for ``python sweeps/regularization.py`` and ``fer sweep`` alike."""
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="data set folder or URI from 'fer data ingest' (the default is synthesized if missing)")
    p.add_argument("--space", default=DEFAULT_SPACE, help="search space YAML")
    p.add_argument("--samples", type=int, default=12, help="number of trials (configurations)")
    p.add_argument("--max-epochs", type=int, default=20, help="epoch budget of a trial (ASHA's max_t)")
    p.add_argument("--grace-period", type=int, default=3, help="ASHA: epochs before a trial can be stopped")
    p.add_argument("--reduction-factor", type=int, default=3, help="ASHA: keep 1/rf of trials at each rung")
    p.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs per trial (also its torch threads)")
    p.add_argument("--gpus-per-trial", type=float, default=0, help="GPUs per trial; fractions pack trials on a GPU")
    p.add_argument("--concurrency", type=int, default=None,
                   help="max trials at once (default: what the cluster's CPUs/GPUs allow)")
    p.add_argument("--storage", default="runs/sweeps", help="experiment storage: local folder or URI (s3://, gs://)")
    p.add_argument("--name", default=None, help="experiment name (default: regularization-<date>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the experiment --name in --storage")
    p.add_argument("--extend", type=int, default=None, metavar="N",
                   help="add N trials to the finished experiment --name: a new Tune run on the same Optuna study, "
                        "so TPE sees every earlier trial (its launch's settings are kept)")
    p.add_argument("--optuna-storage", default=None, metavar="URL",
                   help="where the Optuna study lives (study name = experiment name): an SQLAlchemy URL "
                        "(sqlite:///..., postgresql://...), journal:/shared/file.log, or memory; default "
                        "sqlite:///<experiment>/optuna.db for local storage (required for URI storage)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing local experiment --name")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and of every trial's training")
    p.add_argument("--score-window", type=int, default=3, help="score = mean val acc of the last N epochs")
    p.add_argument("--collapse-margin", type=float, default=0.03,
                   help="collapse: stop when the recent mean val acc is this far below the trial's peak")
    p.add_argument("--collapse-grace", type=int, default=5, help="collapse: epochs before the rule applies")
    p.add_argument("--collapse-window", type=int, default=3, help="collapse: epochs in the recent mean")
    p.add_argument("--collapse-patience", type=int, default=1,
                   help="collapse: extra consecutive collapsed epochs before stopping")
    p.add_argument("--no-collapse-stop", action="store_true", help="record collapses but do not stop trials")
    p.add_argument("--search", choices=("tpe", "random"), default="tpe",
                   help="Optuna sampler: seeded TPE, or random search (a baseline)")
    p.add_argument("--startup-trials", type=int, default=None,
                   help="TPE: random trials before it models the space (default: samples/4, between 3 and "
                        "Optuna's 10, so a small study is not all start-up)")
    p.add_argument("--no-asha", action="store_true", help="no ASHA: every trial runs its full budget (a baseline)")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial (from its checkpoint)")
    add_wandb_arguments(p, runs="one run per trial, job type sweep-trial; --resume continues the trials' runs")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="trainer config key for every trial (below the space's fixed keys and sampled values)")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    p.add_argument("--smoke", action="store_true",
                   help=f"tiny sweep for tests and smoke checks: {SMOKE} unless given explicitly")


def _explicit(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def ensure_default_data(uri: str) -> None:
    """Synthesize and ingest the embedded default data set when ``uri`` is the default and missing."""
    if uri != DEFAULT_DATA or (Path(uri) / "manifest.json").is_file():
        return
    from fer_core.data.ingest import IngestOptions, ingest
    from fer_core.data.synth import SynthConfig, generate, write_folders

    raw = Path(uri).parent / "raw"
    say(f"no data at {uri}: synthesizing the embedded default data set into {raw} and ingesting it")
    write_folders(generate(SynthConfig()), raw, overwrite=True)
    ingest(IngestOptions(src=str(raw), out=uri, overwrite=True))


def _storage_path(storage: str) -> str:
    return storage if "://" in storage else str(Path(storage).resolve())


#: Settings a resume or an extension may change (where and how it runs); every other setting is the launch's.
RUNTIME_SETTINGS = ("address", "num_cpus", "concurrency", "max_failures", "wandb_mode", "wandb_project", "resume",
                    "overwrite", "name", "storage", "extend")
#: Of those, the ones a resume keeps from the launch unless it gives them again.
INHERITED_RUNTIME = ("num_cpus", "concurrency", "max_failures", "wandb_mode", "wandb_project")


def _resume_settings(args, argv: list[str], launch: dict) -> argparse.Namespace:
    """``args`` with the launch's settings (``sweep.json``'s ``settings``) for everything a resume may not change.

    A setting given on the resume's command line that differs from the launch's is an error: the
    resumed trials would otherwise train with other settings than the ones they started with.
    """
    defaults = vars(get_parser().parse_args([]))
    out = dict(vars(args))
    for key, value in launch.items():
        if key not in defaults:
            continue
        flag = "--" + key.replace("_", "-")
        if key in INHERITED_RUNTIME and not _explicit(argv, flag):
            out[key] = value
        if key in RUNTIME_SETTINGS:
            continue
        if key == "overrides":
            flag = "--set"
        given = _explicit(argv, flag)
        if isinstance(value, str) and "***" in value:     # recorded with its secrets redacted: needs the real one
            if not given:
                raise FerError(f"{flag}: this experiment's launch used a location with credentials in it ({value}); "
                               f"pass {flag} again to resume (better: credentials in the environment, not the URI)")
            continue
        if given and out[key] != value:
            raise FerError(f"{flag}: {out[key]!r} differs from this experiment's launch ({value!r}); a resume continues "
                           f"with the launch's settings - drop {flag}, or start a new experiment with another --name")
        out[key] = value
    return argparse.Namespace(**out)


def _launch_record(args, argv: list[str], prog: str, name: str, store, space, data, base: dict):
    """The record written when the sweep starts (its results are added when it ends)."""
    import getpass

    from experiment_store import DataRef, SweepRecord, experiment_dir_of
    from fer_core.storage import redact

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = None
    settings = {k: v for k, v in vars(args).items() if k != "overrides"} | {"overrides": args.overrides}
    for key in ("data", "storage", "address"):
        if isinstance(settings.get(key), str):
            settings[key] = redact(settings[key])
    return SweepRecord(
        name=name, experiment_dir=experiment_dir_of(store),
        command=_command(prog, argv),
        data=DataRef(uri=redact(args.data), version=data.version, classes=list(data.classes),
                     train=len(data.labels["train"]), val=len(data.labels["val"])),
        space=space.to_dict(), space_file=args.space,
        base_config={**base, "data": redact(args.data)},  # a trial's config = base < space fixed < its sampled values
        max_epochs=args.max_epochs, score_window=args.score_window, settings=settings,
        objective=f"score = mean val_acc of the last {args.score_window} epochs (max)",
        user=user, started=_now())


def _command(prog: str, argv: list[str]) -> str:
    """The command line as recorded: credentials in URIs redacted."""
    from fer_core.storage import redact

    return " ".join([prog, *(shlex.quote(redact(a)) for a in argv)])


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def run(argv: list[str] | None = None, prog: str = SCRIPT) -> dict:
    """Run the sweep given its command-line arguments; ``prog`` is the command recorded with them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_parser(prog).parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            if not _explicit(argv, "--" + key.replace("_", "-")):
                setattr(args, key, value)
    if args.resume and not args.name:
        raise FerError("--resume needs --name: the experiment to continue (a folder in --storage)")
    if args.overwrite and args.resume:
        raise FerError("--overwrite and --resume contradict each other: pick one")
    if args.extend is not None:
        if not args.name or args.resume or args.overwrite:
            raise FerError("--extend N adds trials to the finished experiment --name (without --resume or --overwrite)")
        if args.extend < 1:
            raise FerError(f"--extend: must be >= 1; got {args.extend}")

    # --- where: the experiment, and what a resume continues ------------------------------------
    from experiment_store import MARKERS, ExperimentStore
    from fer_core.safepaths import check_name, check_replaceable, check_writable, child
    from fer_core.storage import locate, redact

    name = check_name(args.name or time.strftime("regularization-%Y%m%d-%H%M%S"))
    storage_loc = locate(_storage_path(args.storage))
    local = storage_loc.local                     # a local path or file://: a folder on this machine
    # storage as Tune gets it: the folder, or the URI as given (its query - endpoint options - kept)
    storage = storage_loc.path if local else storage_loc.uri
    # local: a folder that must resolve inside the storage; a URI: its query stays at the end
    store = ExperimentStore(child(storage, name) if local else storage_loc.child(name))
    exists = store.exists()
    continuing = args.resume or args.extend is not None
    if exists and not continuing and not args.overwrite:
        raise FerError(f"{store} already exists; pass --resume to continue it or choose another --name")
    if continuing and not exists:
        raise FerError(f"{'--resume' if args.resume else '--extend'}: {store} does not exist; check --storage and --name")
    launch = store.read_record() if continuing else None
    if args.extend is not None and (launch is None or not launch.finished):
        raise FerError(f"--extend: {store} has not finished (no complete sweep.json); finish it with --resume first")
    if launch is not None:
        args = _resume_settings(args, argv, launch.settings)
    elif args.resume:
        say(f"{store} has no sweep.json (written by an older fer-sweep): resuming with the settings given now, "
            "which must be the launch's")
    for flag in ("samples", "max_epochs", "grace_period", "score_window", "collapse_window"):
        if getattr(args, flag) < 1:
            raise FerError(f"--{flag.replace('_', '-')} must be >= 1; got {getattr(args, flag)}")
    if args.grace_period > args.max_epochs:
        raise FerError(f"--grace-period {args.grace_period} exceeds --max-epochs {args.max_epochs}")

    # --- everything that can fail fast, before Ray starts ------------------------------------
    from fer_core.train.config import parse_overrides
    from sweeps.space import load_space, trial_config
    from sweeps.wandb_logging import prepare_environment, resolve_mode

    space = load_space(args.space)
    if exists and args.overwrite:      # checked now, removed only once every other check has passed
        if local:
            check_replaceable(store.location.path, kind="sweep experiment", markers=MARKERS, overwrite=True,
                              protect=(args.data, args.space), flag="--name")
        elif not (store.has("sweep.json") or store.has("tuner.pkl")):
            raise FerError(f"--name: {store} is not a sweep experiment (no sweep.json or tuner.pkl), so --overwrite "
                           "will not replace it; choose another --name")
    if local:
        check_writable(storage, flag="--storage")
    from sweeps.optuna_storage import MEMORY, default_storage_url, open_storage

    optuna_url = args.optuna_storage or default_storage_url(store.location.path if local else None)
    if optuna_url is None:
        raise FerError(f"--storage {redact(storage)} is an object store, which cannot hold the Optuna study: pass "
                       "--optuna-storage with an RDB URL (postgresql://user@host/db) or journal:/shared/path.log "
                       "on a shared file system, or --optuna-storage memory to keep it inside Tune's state only")
    if args.extend is not None and optuna_url == MEMORY:
        raise FerError("--extend continues the experiment's Optuna study, but it was kept in memory "
                       "(--optuna-storage memory); start a new experiment instead")
    wandb_mode = resolve_mode(args.wandb_mode)
    prepare_environment(wandb_mode)
    ensure_default_data(args.data)
    from fer_core.train import load_train_data

    threads = max(1, int(args.cpus_per_trial))
    base = {**parse_overrides(args.overrides), "data": args.data, "epochs": args.max_epochs, "seed": args.seed,
            "threads": threads, "device": "cuda" if args.gpus_per_trial > 0 else "cpu"}
    say(f"reading {redact(args.data)} once for all trials")
    data = load_train_data(args.data, splits=("train", "val"))
    if launch is not None and data.version != launch.data.version:
        raise FerError(f"--data {redact(args.data)} is version {data.version}, but {store} was launched on "
                       f"{launch.data.version}; resume it with the same data set")
    base["data_version"] = data.version
    trial_config(base, space.fixed, {}, where="sweep base config")     # base + fixed valid on their own
    say(f"data {data.version}: {len(data.labels['train'])} train / {len(data.labels['val'])} val images, "
        f"classes {', '.join(data.classes)}")
    say("search space:\n  " + "\n  ".join(space.describe()))

    # --- Ray --------------------------------------------------------------------------------------
    import optuna
    import ray
    from ray import tune
    from ray.tune.stopper import CombinedStopper

    from sweeps.asha import ReplayingASHAScheduler
    from sweeps.collapse import ReportedCollapseStopper
    from sweeps.optuna_search import PruningOptunaSearch
    from sweeps.trainable import fer_trainable, ran_to_the_end
    from sweeps.wandb_logging import RunFolder, make_callback

    if local:
        # Epochs of small FER models take seconds, and num_to_keep=1 forces an experiment snapshot
        # after each checkpoint: cheap on a local disk (milliseconds), so Tune's warning is noise here.
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    startup = args.startup_trials if args.startup_trials is not None else min(10, max(3, args.samples // 4))
    address = args.address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    cluster = ray.cluster_resources()
    say(f"Ray cluster: {cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs, "
        f"{len([n for n in ray.nodes() if n['Alive']])} node(s)")
    if args.gpus_per_trial > 0 and cluster.get("GPU", 0) == 0:
        raise FerError("--gpus-per-trial > 0 but the Ray cluster has no GPUs; use --gpus-per-trial 0")
    if exists and args.overwrite:
        say(f"--overwrite: removing the previous experiment {store}")
        store.location.delete()
    previous = (store.read_rows("trials.parquet") or []) if args.extend is not None else []
    samples = args.extend if args.extend is not None else args.samples
    concurrency = args.concurrency
    if concurrency is None:
        by_cpu = int(cluster.get("CPU", 1) // max(args.cpus_per_trial, 1e-9))
        by_gpu = int(cluster.get("GPU", 0) // args.gpus_per_trial) if args.gpus_per_trial > 0 else by_cpu
        concurrency = max(1, min(by_cpu, by_gpu, samples))

    collapse_rule = dict(mode="max", grace_period=args.collapse_grace, window=args.collapse_window,
                         margin=args.collapse_margin, patience=args.collapse_patience, relative=False)
    rules = {"score_window": args.score_window, "collapse": collapse_rule}
    trainable = tune.with_resources(
        tune.with_parameters(fer_trainable, data=data, base=base, fixed=space.fixed, rules=rules),
        {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})

    # An extension's sampler continues from the study's trials; a seed offset by their number keeps it
    # from replaying the launch's random draws (the start-up trials, random search).
    seed = args.seed + len(previous)
    if local:
        Path(store.location.path).mkdir(parents=True, exist_ok=True)      # where the default SQLite study goes
    searcher = PruningOptunaSearch(space=space.define_by_run, metric="score", mode="max",
                                   sampler=(optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
                                            if args.search == "tpe" else optuna.samplers.RandomSampler(seed=seed)),
                                   study_name=name, storage=open_storage(optuna_url),
                                   max_t=args.max_epochs, time_attr="training_iteration",
                                   is_complete=ran_to_the_end)
    scheduler = ReplayingASHAScheduler(time_attr="training_iteration", max_t=args.max_epochs,
                                       grace_period=args.grace_period, reduction_factor=args.reduction_factor)
    # The trainable applies the collapse rule to each trial's whole (checkpointed) history: no driver state.
    stoppers = [] if args.no_collapse_stop else [ReportedCollapseStopper()]
    # W&B files: <experiment>/wandb; for an experiment on an object store, a folder on this node first,
    # uploaded into the experiment when the sweep ends (so they do not die with the head node)
    wandb_runs = RunFolder(store.location) if wandb_mode != "disabled" else None
    callbacks = [cb for cb in [make_callback(wandb_mode, project=args.wandb_project, group=name,
                                             exp_dir=store.location.path if local else store.uri,
                                             runs_dir=wandb_runs.path if wandb_runs else None)]
                 if cb is not None]
    run_config = tune.RunConfig(
        name=name, storage_path=storage,
        stop=CombinedStopper(*stoppers) if stoppers else None,
        failure_config=tune.FailureConfig(max_failures=args.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=callbacks, verbose=1)
    if args.no_asha:
        scheduler = None
    tune_config = tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=samples,
                                  max_concurrent_trials=concurrency, metric="score", mode="max")
    if launch is None:
        launch = _launch_record(args, argv, prog, name, store, space, data, base)
        launch.optuna = {"storage": redact(optuna_url), "study": name}
        if not args.resume:
            store.write_record(launch)             # the launch's settings, for the dashboard and a resume
    t0 = time.time()
    if args.resume:
        say(f"resuming {store}: finished trials are kept, unfinished ones continue from their checkpoints")
        for note in store.repair_tune_state():
            say(f"--resume: {note}")
        tuner = tune.Tuner.restore(store.location.uri if not local else store.location.path, trainable=trainable,
                                   resume_errored=True, restart_errored=False)
        _use_callbacks(tuner, callbacks)
    else:
        say(f"experiment {store}: {samples} {'more ' if previous else ''}trials x up to {args.max_epochs} epochs, "
            f"{concurrency} at a time; Optuna study {name} in {redact(optuna_url)}")
        tuner = tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)
        store.keep_tune_state_copy()
    try:
        grid = tuner.fit()
    finally:
        if wandb_runs is not None and not wandb_runs.direct:
            say(f"W&B: runs in {wandb_runs.close()}")
    wall = time.time() - t0
    record = _write_outputs(args, argv, prog, store, launch, space, grid, wall)
    del tuner, grid, run_config, callbacks      # W&B's callback cleans up now, not at interpreter exit
    import gc
    gc.collect()
    return record.to_dict()


def _use_callbacks(tuner, callbacks: list) -> None:
    """A restored Tuner runs with this command's callbacks, not the ones pickled at launch.

    ``Tuner.restore`` brings back the launch's ``RunConfig``, callbacks included: its W&B callback
    would log with the launch's mode, project and folder (a temp folder on a head node that may be
    gone) and, for an experiment launched before runs were resumable, start new W&B runs. With this
    run's callback every resumed trial continues its run (same id, ``resume="allow"``), in the
    mode and project given now (``--wandb-mode`` and ``--wandb-project`` may change on a resume).
    """
    internal = getattr(tuner, "_local_tuner", None)          # None under Ray Client (not used here)
    run_config = internal.get_run_config() if internal is not None else None
    if run_config is None or not hasattr(run_config, "callbacks"):
        say("--resume: this Ray version's Tuner keeps the launch's callbacks (W&B logs as at launch)")
        return
    run_config.callbacks = list(callbacks)


def _history(result) -> list[dict]:
    try:
        df = result.metrics_dataframe
    except Exception:  # noqa: BLE001 - a trial that never reported has no dataframe
        df = None
    if df is None or len(df) == 0:
        return [result.metrics] if result.metrics else []
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in df.to_dict("records")]


def _write_outputs(args, argv, prog, store, launch, space, grid, wall):
    """The tables, the summary and the record (the launch's, with what the sweep found) in the experiment."""
    from dataclasses import replace

    from experiment_store import EPOCHS, TRIALS
    from sweeps.results import epoch_rows, format_summary, trial_rows

    trials = []
    for result in grid:
        last = dict(result.metrics or {})
        trials.append({"trial_id": last.get("trial_id") or Path(str(result.path)).name, "config": result.config,
                       "last": last, "errored": result.error is not None, "finished": True,
                       "time_s": last.get("time_total_s"), "history": _history(result)})
    rows, epochs = trial_rows(trials, args.max_epochs), epoch_rows(trials)
    # Trials of earlier runs of this experiment that this run did not touch (an extension's launch) stay.
    ran = {r["trial_id"] for r in rows}
    rows = [r for r in store.read_rows(TRIALS) or [] if r["trial_id"] not in ran] + rows
    epochs = [r for r in store.read_rows(EPOCHS) or [] if r["trial_id"] not in ran] + epochs
    summary = format_summary(rows, keys=[f"config/{k}" for k in space.names][:7])
    best = max((r for r in rows if r.get("score") is not None), key=lambda r: r["score"], default=None)
    record = replace(
        launch, trials=len(rows), outcomes={o: sum(r["outcome"] == o for r in rows) for o in {r["outcome"] for r in rows}},
        epochs_total=int(sum(r["epochs"] for r in rows)), compute_s=float(sum(r["time_s"] or 0 for r in rows)),
        best=best, finished=_now(), wall_s=launch.wall_s if launch.wall_s is not None else wall,
        resumes=list(launch.resumes))
    if args.resume or args.extend is not None:     # keeps the launch's command and wall time; records itself
        record.resumes.append({"command": _command(prog, argv),
                               "wall_s": wall, "finished": record.finished})
    store.write_results(rows, epochs, summary, record)
    print(summary)
    print(f"{record.epochs_total} epochs in {wall:.0f}s; outputs in {store} "
          "(trials.parquet, epochs.parquet, summary.txt, sweep.json)")
    return record


def main(argv: list[str] | None = None, prog: str = SCRIPT) -> int:
    from fer_core.errors import run_reporting_errors

    return run_reporting_errors(prog.removeprefix("python ").rsplit("/", 1)[-1], lambda: run(argv, prog) and 0,
                                interrupted="continue with --resume --name <experiment>")
