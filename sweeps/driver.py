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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fer_core.errors import FerError
from fer_core.progress import say
from sweeps.ray_session import ray_session, trials_that_fit
from sweeps.settings import DEFAULT_DATA, DEFAULT_SPACE, SMOKE, SweepConfig, add_arguments

if TYPE_CHECKING:
    from experiment_store import ExperimentStore, SweepRecord

__all__ = [
    "run",
    "main",
    "get_parser",
    "add_arguments",
    "ensure_default_data",
    "SweepConfig",
    "DEFAULT_DATA",
    "DEFAULT_SPACE",
    "SMOKE",
    "SCRIPT",
    "DESCRIPTION",
]

#: How the sweep was launched, as its record shows it (``fer sweep`` records ``fer sweep ...``).
SCRIPT = "python sweeps/regularization.py"
DESCRIPTION = "Regularization sweep on Ray Tune: Optuna TPE + ASHA + collapse stopping."
NO_GPUS = "--gpus-per-trial > 0 but the Ray cluster has no GPUs; use --gpus-per-trial 0"


def get_parser(prog: str = SCRIPT) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog.removeprefix("python "),
        description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_arguments(p)
    return p


def ensure_default_data(uri: str) -> None:
    """Synthesize and ingest the embedded default data set when ``uri`` is the default and missing."""
    if uri != DEFAULT_DATA or (Path(uri) / "manifest.json").is_file():
        return
    from fer_core.data.ingest import IngestOptions, ingest
    from fer_core.data.synth import SUBJECT_PATTERN, SynthConfig, generate, write_folders

    raw = Path(uri).parent / "raw"
    say(f"no data at {uri}: synthesizing the embedded default data set into {raw} and ingesting it")
    write_folders(generate(SynthConfig()), raw, overwrite=True)
    ingest(IngestOptions(src=str(raw), out=uri, overwrite=True, group_by=SUBJECT_PATTERN))


def _storage_path(storage: str) -> str:
    return storage if "://" in storage else str(Path(storage).resolve())


@dataclass(frozen=True)
class _Experiment:
    """Where the sweep runs, and the launch a resume or an extension continues."""

    name: str
    storage: str  # as Tune gets it: the folder, or the URI as given (its query - endpoint options -
    # kept)
    local: bool  # a local path or file://: a folder on this machine
    store: ExperimentStore
    exists: bool
    launch: SweepRecord | None  # the continued experiment's sweep.json (None: new, or written by an older fer-sweep)


@dataclass(frozen=True)
class _Inputs:
    """What every trial gets, read and checked before Ray starts."""

    space: Any  # the search space (sweeps.space)
    data: Any  # the data set, read once for all trials (fer_core.train.load_train_data)
    base: dict  # trainer config under every trial: base < space fixed < its sampled values
    optuna_url: str  # where the Optuna study lives
    wandb_mode: str  # resolved: offline, online or disabled


@dataclass(frozen=True)
class _TuneRun:
    """This run's Tune pieces: what a new Tuner is built from (a restored one takes the trainable and callbacks)."""

    trainable: Any
    tune_config: Any
    run_config: Any
    callbacks: list
    wandb_runs: Any  # sweeps.wandb_logging.RunFolder, or None with W&B disabled
    searcher: Any  # sweeps.optuna_search.PruningOptunaSearch (Tune wraps it; the object is this one)
    budget: Any  # sweeps.time_budget.TimeBudget, or None without --time-budget-s
    samples: int | None  # trials this run adds (None: as many as the time budget holds)
    concurrency: int
    packs: dict  # the pack actors by name (--pack K > 1), stopped when the sweep ends
    more: bool  # an extension of an experiment that has trials


def run(argv: list[str] | None = None, prog: str = SCRIPT) -> dict:
    """Run the sweep given its command-line arguments; ``prog`` is the command recorded with them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = SweepConfig.parse(argv, get_parser(prog))
    cfg, exp = _locate(cfg, argv)
    inputs = _prepare(cfg, exp)
    if exp.local:
        # Epochs of small FER models take seconds, and num_to_keep=1 forces an experiment snapshot
        # after each checkpoint: cheap on a local disk (milliseconds), so Tune's warning is noise here.
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # A local Ray started here stays up until the process ends: a caller may run several sweeps on it.
    with ray_session(
        cfg.address, cfg.num_cpus, gpus_needed=cfg.gpus_per_trial, no_gpus=NO_GPUS, announce=True, stop=False
    ) as cluster:
        record = _sweep(cfg, argv, prog, exp, inputs, cluster)
    import gc

    gc.collect()  # the tuner and W&B's callback went with _sweep: W&B cleans up now, not at interpreter exit
    return record.to_dict()


def _locate(cfg: SweepConfig, argv: list[str]) -> tuple[SweepConfig, _Experiment]:
    """The experiment: new, replaced (--overwrite) or continued (--resume, --extend); a continued one runs
    with its launch's settings (``SweepConfig.resumed``). The settings' values are checked here."""
    from experiment_store import ExperimentStore
    from fer_core.safepaths import check_name, child
    from fer_core.storage import locate

    name = check_name(cfg.name or time.strftime("regularization-%Y%m%d-%H%M%S"))
    storage_loc = locate(_storage_path(cfg.storage))
    local = storage_loc.local
    storage = storage_loc.path if local else storage_loc.uri
    # local: a folder that must resolve inside the storage; a URI: its query stays at the end
    store = ExperimentStore(child(storage, name) if local else storage_loc.child(name))
    exists = store.exists()
    if exists and not cfg.continuing and not cfg.overwrite:
        raise FerError(f"{store} already exists; pass --resume to continue it or choose another --name")
    if cfg.continuing and not exists:
        raise FerError(
            f"{'--resume' if cfg.resume else '--extend'}: {store} does not exist; check --storage and --name"
        )
    launch = store.read_record() if cfg.continuing else None
    if cfg.extend is not None and (launch is None or not launch.finished):
        raise FerError(f"--extend: {store} has not finished (no complete sweep.json); finish it with --resume first")
    if launch is not None:
        cfg = cfg.resumed(launch.settings, argv)
    elif cfg.resume:
        say(
            f"{store} has no sweep.json (written by an older fer-sweep): resuming with the settings given now, "
            "which must be the launch's"
        )
    cfg.check_values()
    return cfg, _Experiment(name, storage, local, store, exists, launch)


def _prepare(cfg: SweepConfig, exp: _Experiment) -> _Inputs:
    """Everything that can fail fast, before Ray starts: the space, the storage, where the Optuna study
    lives, W&B's mode, and the data set (read once for all trials)."""
    from sweeps.space import load_space
    from sweeps.wandb_logging import prepare_environment, resolve_mode

    space = load_space(cfg.space)
    _check_storage(cfg, exp)
    optuna_url = _optuna_url(cfg, exp)
    _check_study(cfg, exp, optuna_url)
    wandb_mode = resolve_mode(cfg.wandb_mode)
    prepare_environment(wandb_mode)
    ensure_default_data(cfg.data)
    data, base = _read_data(cfg, exp, space)
    say("search space:\n  " + "\n  ".join(space.describe()))
    return _Inputs(space=space, data=data, base=base, optuna_url=optuna_url, wandb_mode=wandb_mode)


def _check_storage(cfg: SweepConfig, exp: _Experiment) -> None:
    """What --overwrite replaces must be a sweep experiment (checked now, removed only once every other
    check has passed); local storage must be writable."""
    from experiment_store import MARKERS
    from fer_core.safepaths import check_replaceable, check_writable

    if exp.exists and cfg.overwrite:
        if exp.local:
            check_replaceable(
                exp.store.location.path,
                kind="sweep experiment",
                markers=MARKERS,
                overwrite=True,
                protect=(cfg.data, cfg.space),
                flag="--name",
            )
        elif not (exp.store.has("sweep.json") or exp.store.has("tuner.pkl")):
            raise FerError(
                f"--name: {exp.store} is not a sweep experiment (no sweep.json or tuner.pkl), "
                "so --overwrite will not replace it; choose another --name"
            )
    if exp.local:
        check_writable(exp.storage, flag="--storage")


def _check_study(cfg: SweepConfig, exp: _Experiment, url: str) -> None:
    """A new experiment gets a new study. In a shared ``--optuna-storage`` (the study is named after the
    experiment) a study of that name is another experiment's, or the one ``--overwrite`` replaces: its trials
    would seed this sweep's TPE, and a restore would FAIL its running trials. Refused, unless it is the study
    the replaced experiment's ``sweep.json`` names (``_sweep`` deletes it with the experiment)."""
    from fer_core.storage import redact
    from sweeps.optuna_storage import MEMORY, open_storage, study_trials

    if cfg.optuna_storage is None or url == MEMORY or cfg.continuing:
        return  # the default study lives in the (new) experiment folder; a continued one keeps its study
    n = study_trials(open_storage(url), exp.name)
    if n is None or _replaces_study(cfg, exp, url):
        return
    raise FerError(
        f"--optuna-storage {redact(url)}: already holds a study named {exp.name!r} ({n} trials) that is not this "
        f"experiment's (each experiment's study is named after it); choose another --name"
    )


def _replaces_study(cfg: SweepConfig, exp: _Experiment, url: str) -> bool:
    """--overwrite of an experiment whose ``sweep.json`` names its study in ``url``: that study goes with it."""
    from fer_core.storage import redact

    if not (cfg.overwrite and exp.exists):
        return False
    record = exp.store.read_record()
    return record is not None and record.optuna == {"storage": redact(url), "study": exp.name}


def _optuna_url(cfg: SweepConfig, exp: _Experiment) -> str:
    """Where the Optuna study lives: --optuna-storage, else a SQLite file in a local experiment."""
    from fer_core.storage import redact
    from sweeps.optuna_storage import MEMORY, check_storage, default_storage_url

    url = cfg.optuna_storage or default_storage_url(exp.store.location.path if exp.local else None)
    if url is None:
        raise FerError(
            f"--storage {redact(exp.storage)} is an object store, which cannot hold the Optuna study: pass "
            "--optuna-storage with an RDB URL (postgresql://user@host/db) or journal:/shared/path.log "
            "on a shared file system, or --optuna-storage memory to keep it inside Tune's state only"
        )
    if cfg.extend is not None and url == MEMORY:
        raise FerError(
            "--extend continues the experiment's Optuna study, but it was kept in memory "
            "(--optuna-storage memory); start a new experiment instead"
        )
    check_storage(url)  # its form; a journal file must be new, empty or an Optuna journal
    return url


def _read_data(cfg: SweepConfig, exp: _Experiment, space) -> tuple[Any, dict]:
    """The data set (a continued experiment's must be its launch's version) and the trainer config under
    every trial, checked with the space's fixed keys."""
    from fer_core.storage import redact
    from fer_core.train import load_train_data
    from fer_core.train.config import parse_overrides
    from sweeps.space import trial_config

    base = {
        **parse_overrides(list(cfg.overrides)),
        "data": cfg.data,
        "epochs": cfg.max_epochs,
        "seed": cfg.seed,
        "threads": cfg.threads,
        "device": cfg.device,
        "gpu_memory_fraction": cfg.gpu_memory_fraction,
    }
    say(f"reading {redact(cfg.data)} once for all trials")
    data = load_train_data(cfg.data, splits=("train", "val"))
    if exp.launch is not None and data.version != exp.launch.data.version:
        raise FerError(
            f"--data {redact(cfg.data)} is version {data.version}, but {exp.store} was launched on "
            f"{exp.launch.data.version}; resume it with the same data set"
        )
    base["data_version"] = data.version
    trial_config(base, space.fixed, {}, where="sweep base config")  # base + fixed valid on their own
    say(
        f"data {data.version}: {len(data.labels['train'])} train / {len(data.labels['val'])} val images, "
        f"classes {', '.join(data.classes)}"
    )
    return data, base


def _sweep(cfg: SweepConfig, argv: list[str], prog: str, exp: _Experiment, inputs: _Inputs, cluster: dict):
    """On a started Ray: replace the old experiment (--overwrite), set Tune up, record the launch, fit, and
    write the outputs; the record."""
    if exp.exists and cfg.overwrite:
        replaced_study = cfg.optuna_storage is not None and _replaces_study(cfg, exp, inputs.optuna_url)
        say(f"--overwrite: removing the previous experiment {exp.store}")
        exp.store.location.delete()
        if replaced_study:
            import optuna

            from fer_core.storage import redact
            from sweeps.optuna_storage import open_storage

            optuna.delete_study(study_name=exp.name, storage=open_storage(inputs.optuna_url))
            say(f"--overwrite: removed its Optuna study {exp.name} from {redact(inputs.optuna_url)}")
    tune_run = _tune_run(cfg, exp, inputs, cluster)
    try:
        launch = exp.launch if exp.launch is not None else _new_launch(cfg, argv, prog, exp, inputs)
        t0 = time.time()
        tuner = _tuner(cfg, exp, inputs, tune_run)
        try:
            grid = tuner.fit()
        finally:
            if tune_run.wandb_runs is not None and not tune_run.wandb_runs.direct:
                say(f"W&B: runs in {tune_run.wandb_runs.close()}")
    finally:
        if tune_run.packs:
            from sweeps.packed_trainable import stop_packs

            stop_packs(tune_run.packs)
    wall = time.time() - t0
    cut = _budget_cut(cfg, tune_run)
    return _write_outputs(cfg, argv, prog, exp.store, launch, inputs.space, grid, wall, cut)


def _budget_cut(cfg: SweepConfig, tune_run: _TuneRun) -> set[str]:
    """The trials the spent time budget stopped, by folder name (none when it was not spent); their Optuna twins
    are told that they ended."""
    budget = tune_run.budget
    if budget is None or not budget.spent:
        return set()
    cut = budget.cut
    tune_run.searcher.end_unfinished()
    say(
        f"--time-budget-s {cfg.time_budget_s:g}: spent; {len(cut)} trial(s) stopped where they were "
        "(outcome 'out of time'; only completed trials can be exported)"
    )
    return cut


def _tune_run(cfg: SweepConfig, exp: _Experiment, inputs: _Inputs, cluster: dict) -> _TuneRun:
    """The trainable (the data in Ray's object store), search, scheduler, stoppers and callbacks of this run."""
    from ray import tune
    from ray.tune.stopper import CombinedStopper

    from sweeps.collapse import ReportedCollapseStopper
    from sweeps.time_budget import TimeBudget
    from sweeps.trainable import fer_trainable

    previous = (exp.store.read_rows("trials.parquet") or []) if cfg.extend is not None else []
    samples = cfg.trials_to_run  # None: new trials start while the time budget has room for one
    concurrency = cfg.concurrency
    fits = trials_that_fit(cluster, cfg.cpus_per_trial, cfg.gpus_per_trial)
    packs: dict = {}
    if cfg.pack > 1:
        from sweeps.pack_actor import TRIAL_CPUS
        from sweeps.packed_trainable import pack_resources, packed_trainable, packs_for, start_packs

        resources = pack_resources(cfg.cpus_per_trial, cfg.gpus_per_trial, cfg.pack)
        wanted = samples if samples is not None else fits * cfg.pack  # open count: every pack full
        count, concurrency = packs_for(fits, wanted, cfg.pack, cfg.concurrency)
        packs = start_packs(exp.name, count, cfg.pack, inputs.data, resources)
        say(
            f"--pack {cfg.pack}: {count} pack(s) of {cfg.pack} trials, each on {resources['num_gpus']:g} GPU(s) "
            f"and {resources['num_cpus']:g} CPU(s); {concurrency} trials at a time"
        )
        trainable = tune.with_resources(
            tune.with_parameters(
                packed_trainable, packs=list(packs), base=inputs.base, fixed=inputs.space.fixed, rules=cfg.rules
            ),
            {"cpu": TRIAL_CPUS, "gpu": 0},
        )
    else:
        if concurrency is None:
            concurrency = max(1, min(fits, samples if samples is not None else fits))
        trainable = tune.with_resources(
            tune.with_parameters(
                fer_trainable, data=inputs.data, base=inputs.base, fixed=inputs.space.fixed, rules=cfg.rules
            ),
            {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial},
        )
    budget = TimeBudget(cfg.time_budget_s) if cfg.time_budget_s is not None else None
    searcher = _searcher(cfg, exp, inputs, previous, budget)
    scheduler = _scheduler(cfg)
    # The trainable applies the collapse rule to each trial's whole (checkpointed) history: no driver state.
    stoppers: list = [] if cfg.no_collapse_stop else [ReportedCollapseStopper()]
    wandb_runs, callbacks = _callbacks(cfg, exp, inputs.wandb_mode)
    if packs:
        from sweeps.packed_trainable import PackLeaver

        callbacks.append(PackLeaver(list(packs)))
    if budget is not None:
        stoppers.append(budget.stopper)
        callbacks.append(budget.tracker)
    if not cfg.verbose:
        from sweeps.console import CompactReporter

        callbacks.append(
            CompactReporter(
                samples=samples, max_epochs=cfg.max_epochs, concurrency=concurrency, params=inputs.space.names
            )
        )
    run_config = tune.RunConfig(
        name=exp.name,
        storage_path=exp.storage,
        stop=CombinedStopper(*stoppers) if stoppers else None,
        failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=callbacks,
        verbose=_tune_verbosity(cfg),
    )
    tune_config = tune.TuneConfig(
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=samples if samples is not None else -1,  # -1: Tune's "until the searcher or a stopper ends it"
        max_concurrent_trials=concurrency,
        metric="score",
        mode="max",
    )
    return _TuneRun(
        trainable=trainable,
        tune_config=tune_config,
        run_config=run_config,
        callbacks=callbacks,
        wandb_runs=wandb_runs,
        searcher=searcher,
        budget=budget,
        samples=samples,
        concurrency=concurrency,
        packs=packs,
        more=bool(previous),
    )


def _searcher(cfg: SweepConfig, exp: _Experiment, inputs: _Inputs, previous: list[dict], budget=None):
    """Optuna (seeded TPE, or random search) on the experiment's study; with a time budget, it starts no trial
    that the budget left cannot finish."""
    import optuna

    from sweeps.optuna_search import PruningOptunaSearch
    from sweeps.optuna_storage import open_storage
    from sweeps.trainable import ran_to_the_end

    # An extension's sampler continues from the study's trials; a seed offset by their number keeps it
    # from replaying the launch's random draws (the start-up trials, random search).
    seed = cfg.seed + len(previous)
    if exp.local:
        Path(exp.store.location.path).mkdir(parents=True, exist_ok=True)  # where the default SQLite study goes
    sampler = (
        optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.tpe_startup_trials)
        if cfg.search == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    return PruningOptunaSearch(
        space=inputs.space.define_by_run,
        metric="score",
        mode="max",
        sampler=sampler,
        study_name=exp.name,
        storage=open_storage(inputs.optuna_url),
        # The space's ``start`` trials run first, at launch only. Building a searcher enqueues them in the
        # (persistent) study, so a resume's or an extension's searcher must not: the study has them already.
        points_to_evaluate=[dict(p) for p in inputs.space.start] if not (previous or cfg.resume) else None,
        max_t=cfg.max_epochs,
        time_attr="training_iteration",
        is_complete=ran_to_the_end,
        may_start=_room_check(budget, cfg.max_epochs) if budget is not None else None,
    )


def _room_check(budget, epochs: int):
    """The searcher's "may a new trial start?": the budget has room for ``epochs`` more epochs; says so once."""

    def may_start() -> bool:
        if budget.room_for(epochs):
            return True
        if not budget.spent and not may_start.said:  # type: ignore[attr-defined]
            say(f"--time-budget-s: no room left for another {epochs}-epoch trial; the running ones finish")
            may_start.said = True  # type: ignore[attr-defined]
        return False

    may_start.said = False  # type: ignore[attr-defined]
    return may_start


def _scheduler(cfg: SweepConfig):
    """ASHA on epochs, or None with --no-asha (built either way: it checks its settings)."""
    from sweeps.asha import ReplayingASHAScheduler

    scheduler = ReplayingASHAScheduler(
        time_attr="training_iteration",
        max_t=cfg.max_epochs,
        grace_period=cfg.grace_period,
        reduction_factor=cfg.reduction_factor,
    )
    return None if cfg.no_asha else scheduler


def _tune_verbosity(cfg: SweepConfig) -> int:
    """Ray Tune's own output: its tables and result boxes with ``--verbose``, else nothing (the compact lines
    of ``sweeps.console`` instead). Tune's newer output engine prints its header boxes even at verbosity 0,
    so without ``--verbose`` the driver uses the classic one, which is silent at 0."""
    if not cfg.verbose:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    return 1 if cfg.verbose else 0


def _callbacks(cfg: SweepConfig, exp: _Experiment, wandb_mode: str) -> tuple[Any, list]:
    """W&B's folder (None when disabled) and Tune's callbacks."""
    from sweeps.wandb_logging import RunFolder, make_callback

    # W&B files: <experiment>/wandb; for an experiment on an object store, a folder on this node first,
    # uploaded into the experiment when the sweep ends (so they do not die with the head node)
    wandb_runs = RunFolder(exp.store.location) if wandb_mode != "disabled" else None
    callbacks = [
        cb
        for cb in [
            make_callback(
                wandb_mode,
                project=cfg.wandb_project,
                group=exp.name,
                exp_dir=exp.store.location.path if exp.local else exp.store.uri,
                runs_dir=wandb_runs.path if wandb_runs else None,
            )
        ]
        if cb is not None
    ]
    return wandb_runs, callbacks


def _new_launch(cfg: SweepConfig, argv: list[str], prog: str, exp: _Experiment, inputs: _Inputs):
    """The launch's record, written now (for the dashboard and a resume) unless this resumes an experiment
    that has none (an older fer-sweep's): that one is written when the sweep ends."""
    from fer_core.storage import redact

    launch = _launch_record(cfg, argv, prog, exp.name, exp.store, inputs.space, inputs.data, inputs.base)
    launch.optuna = {"storage": redact(inputs.optuna_url), "study": exp.name}
    if not cfg.resume:
        exp.store.write_record(launch)  # the launch's settings, for the dashboard and a resume
    return launch


def _tuner(cfg: SweepConfig, exp: _Experiment, inputs: _Inputs, tune_run: _TuneRun):
    """A new Tuner, or (--resume) the experiment's, restored with this command's callbacks."""
    from ray import tune

    from fer_core.storage import redact

    if cfg.resume:
        say(f"resuming {exp.store}: finished trials are kept, unfinished ones continue from their checkpoints")
        for note in exp.store.repair_tune_state():
            say(f"--resume: {note}")
        tuner = tune.Tuner.restore(
            exp.store.location.uri if not exp.local else exp.store.location.path,
            trainable=tune_run.trainable,
            resume_errored=True,
            restart_errored=False,
        )
        _use_callbacks(tuner, tune_run.callbacks, _tune_verbosity(cfg), tune_run.run_config.stop)
        return tuner
    trials = (
        f"{tune_run.samples} {'more ' if tune_run.more else ''}trials"
        if tune_run.samples is not None
        else f"trials while --time-budget-s {cfg.time_budget_s:g} has room for one"
    )
    say(
        f"experiment {exp.store}: {trials} x up to {cfg.max_epochs} epochs, {tune_run.concurrency} at a time; "
        f"Optuna study {exp.name} in {redact(inputs.optuna_url)}"
    )
    tuner = tune.Tuner(tune_run.trainable, tune_config=tune_run.tune_config, run_config=tune_run.run_config)
    exp.store.keep_tune_state_copy()
    return tuner


def _launch_record(cfg: SweepConfig, argv: list[str], prog: str, name: str, store, space, data, base: dict):
    """The record written when the sweep starts (its results are added when it ends)."""
    import getpass

    from experiment_store import DataRef, SweepRecord, experiment_dir_of
    from fer_core.storage import redact

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = None
    return SweepRecord(
        name=name,
        experiment_dir=experiment_dir_of(store),
        command=_command(prog, argv),
        data=DataRef(
            uri=redact(cfg.data),
            version=data.version,
            classes=list(data.classes),
            train=len(data.labels["train"]),
            val=len(data.labels["val"]),
        ),
        space=space.to_dict(),
        space_file=cfg.space,
        base_config={**base, "data": redact(cfg.data)},  # a trial's config = base < space fixed < its sampled values
        max_epochs=cfg.max_epochs,
        score_window=cfg.score_window,
        settings=cfg.to_dict(),
        objective=f"score = mean val_acc of the last {cfg.score_window} epochs (max)",
        user=user,
        started=_now(),
    )


def _command(prog: str, argv: list[str]) -> str:
    """The command line as recorded: credentials in URIs redacted."""
    from fer_core.storage import redact

    return " ".join([prog, *(shlex.quote(redact(a)) for a in argv)])


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _use_callbacks(tuner, callbacks: list, verbose: int | None = None, stop: Any = None) -> None:
    """A restored Tuner runs with this command's callbacks and stoppers (``stop``), not the ones pickled at launch.

    ``Tuner.restore`` brings back the launch's ``RunConfig``, callbacks included: its W&B callback
    would log with the launch's mode, project and folder (a temp folder on a head node that may be
    gone) and, for an experiment launched before runs were resumable, start new W&B runs. With this
    run's callback every resumed trial continues its run (same id, ``resume="allow"``), in the
    mode and project given now (``--wandb-mode`` and ``--wandb-project`` may change on a resume).
    """
    internal = getattr(tuner, "_local_tuner", None)  # None under Ray Client (not used here)
    run_config = internal.get_run_config() if internal is not None else None
    if run_config is None or not hasattr(run_config, "callbacks"):
        say("--resume: this Ray version's Tuner keeps the launch's callbacks (W&B logs as at launch)")
        return
    run_config.callbacks = list(callbacks)
    run_config.stop = stop  # the same rules (the launch's settings), with this run's time budget
    if verbose is not None:
        run_config.verbose = verbose


def _history(result) -> list[dict]:
    try:
        df = result.metrics_dataframe
    except Exception:  # noqa: BLE001 - a trial that never reported has no dataframe
        df = None
    if df is None or len(df) == 0:
        return [result.metrics] if result.metrics else []
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in df.to_dict("records")
    ]


def _write_outputs(
    cfg: SweepConfig, argv, prog, store, launch, space, grid, wall, cut: frozenset[str] | set[str] = frozenset()
):
    """The tables, the summary and the record (the launch's, with what the sweep found) in the experiment;
    ``cut``: the trial folder names of the trials the time budget stopped."""
    from dataclasses import replace

    from experiment_store import EPOCHS, TRIALS
    from sweeps.results import epoch_rows, format_summary, trial_rows

    trials = []
    for result in grid:
        last = dict(result.metrics or {})
        trial_id = last.get("trial_id") or Path(str(result.path)).name
        trials.append(
            {
                "trial_id": trial_id,
                "config": result.config,
                "last": last,
                "errored": result.error is not None,
                "finished": True,
                "time_s": last.get("time_total_s"),
                "history": _history(result),
                "out_of_time": Path(str(result.path)).name in cut,
            }
        )
    rows, epochs = trial_rows(trials, cfg.max_epochs), epoch_rows(trials)
    # Trials of earlier runs of this experiment that this run did not touch (an extension's launch) stay.
    ran = {r["trial_id"] for r in rows}
    rows = [r for r in store.read_rows(TRIALS) or [] if r["trial_id"] not in ran] + rows
    epochs = [r for r in store.read_rows(EPOCHS) or [] if r["trial_id"] not in ran] + epochs
    summary = format_summary(rows, keys=[f"config/{k}" for k in space.names][:7])
    best = max((r for r in rows if r.get("score") is not None), key=lambda r: r["score"], default=None)
    record = replace(
        launch,
        trials=len(rows),
        outcomes={o: sum(r["outcome"] == o for r in rows) for o in {r["outcome"] for r in rows}},
        epochs_total=int(sum(r["epochs"] for r in rows)),
        compute_s=float(sum(r["time_s"] or 0 for r in rows)),
        best=best,
        finished=_now(),
        wall_s=launch.wall_s if launch.wall_s is not None else wall,
        resumes=list(launch.resumes),
    )
    if cfg.continuing:  # keeps the launch's command and wall time; records itself
        record.resumes.append({"command": _command(prog, argv), "wall_s": wall, "finished": record.finished})
    store.write_results(rows, epochs, summary, record)
    print(summary)
    print(
        f"{record.epochs_total} epochs in {wall:.0f}s; outputs in {store} "
        "(trials.parquet, epochs.parquet, summary.txt, sweep.json)"
    )
    return record


def main(argv: list[str] | None = None, prog: str = SCRIPT) -> int:
    from fer_core.errors import run_reporting_errors

    return run_reporting_errors(
        prog.removeprefix("python ").rsplit("/", 1)[-1],
        lambda: run(argv, prog) and 0,
        interrupted="continue with --resume --name <experiment>",
    )
