"""W&B for every command that trains: sweep trials, ``fer confirm`` runs and ``fer retrain``, without the
API key ever leaving its place.

Runs: one W&B run per sweep trial (``job_type`` ``sweep-trial``, run id = the trial id), per
``fer confirm`` (trial, seed) run (``confirm``) and per ``fer retrain`` (``retrain``, with the exported
model as an artifact of type ``model``), all grouped by experiment name. A sweep resumed with
``--resume`` continues each unfinished trial's run (same id, ``resume="allow"``) instead of starting
a new one. Offline, W&B writes a new ``offline-run-<time>-<id>`` folder per process even for a resumed
run; both folders carry the same run id, and ``wandb sync`` uploads the folders of one run id in the
order they started, into that one run.

Where the files go: ``<target>/wandb`` (W&B adds its own ``wandb/`` below it), where the target is
the experiment (sweep, confirm) or the retrained model's folder (``--out``). A local experiment is
written directly. When the target is a storage URI (``s3://...``), or a folder that only appears
once the command succeeds (``fer retrain --out``), W&B writes into a temp folder on this node, and
at the end the files are moved into ``<target>/wandb`` or uploaded there (``RunFolder``), so they
are not lost with the node; if that fails, the temp folder is kept and named. The move waits until W&B
has written every finished run out (``sweeps.wandb_files``: that happens after ``run.finish()`` returns).

Where the key may live: the ``WANDB_API_KEY`` variable of the process that logs (the sweep's
logging actors on the driver's node; the driver of ``fer confirm``; ``fer retrain``), or the W&B
settings file ``wandb login`` writes (``~/.netrc``) on that node. It is never put in a trial config,
a run's config, a runtime environment or a file of the experiment.

Why the sweep's callback is wrapped: Ray's ``WandbLoggerCallback`` copies ``WANDB_API_KEY`` into the
runtime environment of its logging actor, and Ray's runtime-env agent then writes that environment,
key included, in plain text into its log under the Ray session folder (readable by anyone on the
node, and shown by the Ray dashboard) - in offline mode too. So:

- offline and disabled runs need no key: it is removed from this process's environment before Ray
  starts (a local Ray inherits this environment), and nothing passes it on;
- online runs start the logging actor without the key in its runtime environment; the actor (on
  the driver's node) reads it from that node's own environment or settings file. ``fer confirm``
  logs its runs from the driver: its Ray tasks send their epochs through a queue and never see W&B.

Mode: ``--wandb-mode`` when given; with ``auto``, ``WANDB_MODE`` from the environment when set
(``offline``, ``disabled``, ``online``), else online when a key is set and offline otherwise.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, cast

from fer_core.progress import say
from sweeps.wandb_files import wait_written

__all__ = [
    "resolve_mode",
    "prepare_environment",
    "make_callback",
    "add_arguments",
    "RunFolder",
    "RunLogger",
    "epoch_metrics",
    "KEY_VAR",
    "MODES",
    "JOB_SWEEP",
    "JOB_CONFIRM",
    "JOB_RETRAIN",
    "DEFAULT_PROJECT",
]

KEY_VAR = "WANDB_API_KEY"
MODES = ("auto", "offline", "online", "disabled")
DEFAULT_PROJECT = "fer-sweep"
#: W&B job types: what made a run.
JOB_SWEEP, JOB_CONFIRM, JOB_RETRAIN = "sweep-trial", "confirm", "retrain"
#: Sweep trials continue their run when resumed (a new one is made when none exists yet).
RESUME = "allow"
#: How long ``RunFolder.close`` waits for W&B to write out runs that have finished (``wandb_files``).
WRITE_TIMEOUT_S = 60.0
WandbMode = Literal["online", "offline", "disabled"]  # what resolve_mode returns
_ENV_MODES = {"offline": "offline", "dryrun": "offline", "disabled": "disabled", "online": "online", "run": "online"}


def resolve_mode(requested: str, env: Mapping[str, str] = os.environ) -> str:
    """The W&B mode a command runs in: online, offline or disabled (see the module doc)."""
    if requested != "auto":
        return requested
    from_env = _ENV_MODES.get(env.get("WANDB_MODE", "").strip().lower())
    if from_env:
        return from_env
    return "online" if env.get(KEY_VAR) else "offline"


def prepare_environment(mode: str) -> None:
    """Call before Ray starts: offline/disabled runs drop the key from this process's environment."""
    if mode in ("offline", "disabled"):
        os.environ.pop(KEY_VAR, None)
        os.environ["WANDB_MODE"] = mode


def add_arguments(p, *, runs: str, project: str | None = DEFAULT_PROJECT) -> None:
    """``--wandb-mode`` and ``--wandb-project`` (``runs``: what one run is; ``project``: the default, or None
    when the command takes the sweep's)."""
    p.add_argument(
        "--wandb-project",
        default=project,
        help=f"W&B project ({runs}, grouped by experiment)" + ("" if project else "; default: the sweep's project"),
    )
    p.add_argument(
        "--wandb-mode",
        default="auto",
        choices=MODES,
        help="auto: WANDB_MODE when set, else online when WANDB_API_KEY is set, else offline (files "
        "under <experiment or --out>/wandb); the key is never passed to Ray or written anywhere",
    )


@contextmanager
def _without_key() -> Iterator[None]:
    key = os.environ.pop(KEY_VAR, None)
    try:
        yield
    finally:
        if key is not None:
            os.environ[KEY_VAR] = key


# ----------------------------------------------------------------------------------------------
# Where the files go
# ----------------------------------------------------------------------------------------------


class RunFolder:
    """The folder W&B writes a command's runs into (``path``, its ``dir=``), and their place at the end.

    ``target``: the experiment or model folder (a path, URI or ``fer_core.storage.Location``); the
    runs belong in ``<target>/wandb``. ``direct``: the target is a local folder that exists while the
    command runs (a local experiment): W&B writes there. Otherwise W&B writes into a temp folder on
    this node, and ``close()`` moves (local) or uploads (URI) it into ``<target>/wandb``.
    """

    def __init__(self, target, *, direct: bool = True):
        from fer_core.storage import locate

        self.target = locate(target) if isinstance(target, (str, os.PathLike)) else target
        self.direct = direct and self.target.local
        if self.direct:
            self.path = Path(self.target.path, "wandb")
            self.path.mkdir(parents=True, exist_ok=True)
        else:
            self.path = Path(tempfile.mkdtemp(prefix="fer-wandb-"))

    @property
    def dest(self) -> str:
        """Where the runs end up (shown to the user; without secrets)."""
        return str(self.target.child("wandb"))

    def close(self, *, keep: bool = True) -> str:
        """Put the runs in ``<target>/wandb`` (``keep=False``: leave them where they are); where they are now."""
        if self.direct or not keep:
            return str(self.path)
        if not any(self.path.iterdir()):  # nothing was logged here (e.g. a resume with no trial left)
            self.path.rmdir()
            return self.dest
        unwritten = wait_written(self.path, timeout=WRITE_TIMEOUT_S)  # finish() returns before W&B writes them
        try:
            _drop_links(self.path)
            dest = self.target.child("wandb")
            if self.target.local:
                shutil.copytree(self.path, dest.path, dirs_exist_ok=True)
            else:
                dest.upload_dir(self.path)
        except Exception as exc:  # noqa: BLE001 - the runs stay on this node; the command's own work is done
            say(
                f"W&B: could not put the runs in {self.dest} ({type(exc).__name__}: {exc}); they are in {self.path} "
                "('wandb sync' uploads them from there)"
            )
            return str(self.path)
        if unwritten:  # copied as they are; the whole runs may still land here
            say(
                f"W&B: {len(unwritten)} run(s) were not written out within {WRITE_TIMEOUT_S:.0f} s (no exit record: "
                f"e.g. {unwritten[0].parent.name}); copied to {self.dest} as they were, kept in {self.path}"
            )
            return self.dest
        shutil.rmtree(self.path, ignore_errors=True)
        return self.dest


def _drop_links(folder: Path) -> None:
    """W&B's conveniences (``latest-run``, ``debug.log``) are links to a run folder: not copied."""
    for p in list(folder.rglob("*")):
        if p.is_symlink():
            p.unlink()


# ----------------------------------------------------------------------------------------------
# Sweep trials: Ray Tune's callback
# ----------------------------------------------------------------------------------------------

#: Trial results reach W&B's logging actor without the driver waiting (``_SendOnlyQueue``); False is Ray's
#: own blocking ``Queue.put`` (benchmarks/driver_result_processing.py compares the two).
SEND_WITHOUT_WAITING = True


class _SendOnlyQueue:
    """A ``ray.util.queue.Queue`` whose ``put`` does not wait for the queue actor's answer.

    Ray's W&B callback puts every result into a queue actor with ``Queue.put``, which blocks the Tune
    driver until the actor replies: the first put of each trial waits for a new actor process to
    start (1.6 s measured on a loaded 2-core machine), the others for a round trip. That was 92% of the
    driver's result processing and Tune's "Processing trial results took 1.4-3.4 s" warnings. The
    items are sent without waiting instead; one sender's calls to an actor run in the order sent, so
    the logging actor still sees the results, and the end marker, in order.
    """

    def __init__(self, queue):
        self._queue = queue

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        self._queue.actor.put_nowait.remote(item)  # unbounded queue: never full

    def __getattr__(self, name):
        return getattr(self._queue, name)


def make_callback(
    mode: str, *, project: str | None, group: str, exp_dir: str, runs_dir: str | os.PathLike | None = None
):
    """The Tune callback logging every trial to W&B in ``mode``; None when disabled.

    Runs go to ``runs_dir`` (default: ``<exp_dir>/wandb`` for a local experiment).
    """
    if mode == "disabled":
        return None
    from ray.air.integrations.wandb import WandbLoggerCallback

    class NodeCredentialsWandbLoggerCallback(WandbLoggerCallback):
        """Ray's W&B callback, except that the logging actor's runtime environment never holds the key, and
        that an interrupted sweep ends its runs at once."""

        def _start_logging_actor(self, trial, exclude_results, **wandb_init_kwargs):
            with _without_key():
                super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)
            queue = self._trial_queues.get(trial)
            if SEND_WITHOUT_WAITING and queue is not None and not isinstance(queue, _SendOnlyQueue):
                self._trial_queues[trial] = _SendOnlyQueue(queue)

        def __del__(self):
            # Ray's __del__ asks ray.is_initialized(); at interpreter exit the module may already be torn
            # down ("Exception ignored in ... __del__" printed after every sweep). The runs were ended by
            # on_experiment_end; nothing is left to do then.
            try:
                super().__del__()
            except (AttributeError, TypeError):
                pass

        def on_experiment_end(self, trials, **info):
            # An interrupted sweep (Ctrl+C) ends without ending its running trials: Ray's callback would
            # wait upload_timeout (30 min) for their logging actors, which wait for results that never
            # come. Tell them to finish now: they log the results still queued, then wandb.finish().
            for trial in list(self._trial_logging_futures):
                self._signal_logging_actor_stop(trial)
            super().on_experiment_end(trials, **info)

    # Ray's defaults are id=trial id, resume=False: the kwargs below replace resume (and add job_type).
    kwargs: dict[str, Any] = dict(
        project=project,
        group=group,
        log_config=True,
        mode=mode,
        excludes=["val_confusion"],
        job_type=JOB_SWEEP,
        resume=RESUME,
    )
    if runs_dir is None and "://" not in exp_dir:
        runs_dir = Path(exp_dir, "wandb")
    if runs_dir is not None:
        Path(runs_dir).mkdir(parents=True, exist_ok=True)
        kwargs["dir"] = str(runs_dir)
    say(
        f"W&B: project {project}, group {group}, job type {JOB_SWEEP}, mode {mode}"
        + (
            f" (runs under {kwargs.get('dir')}; 'wandb sync' uploads them)"
            if mode == "offline"
            else " (the API key is read on the node from WANDB_API_KEY or 'wandb login'; it is not passed on)"
        )
    )
    return NodeCredentialsWandbLoggerCallback(**kwargs)


# ----------------------------------------------------------------------------------------------
# fer confirm and fer retrain: runs logged from this process
# ----------------------------------------------------------------------------------------------


def epoch_metrics(metrics: Mapping) -> dict:
    """The numbers of one epoch's trainer metrics that W&B plots (no confusion matrix, no text)."""
    return {
        k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def artifact_name(*parts: str) -> str:
    """A W&B artifact name from ``parts`` (letters, digits, ``-``, ``_`` and ``.`` only)."""
    return re.sub(r"[^\w.-]+", "-", "-".join(p for p in parts if p)).strip("-")[:128] or "artifact"


class RunLogger:
    """W&B runs of one command (``job_type``), grouped by ``group``, files in ``RunFolder(target, direct=)``.

    ``fer confirm`` starts one run per (trial, seed) (several at once), ``fer retrain`` one. Nothing
    is written before the first ``start``; with mode ``disabled`` every method is a no-op and
    ``start`` returns None. ``close()`` at the end finishes what is left and puts the files in place.
    """

    def __init__(self, mode: str, *, project: str, group: str, job_type: str, target, direct: bool = True):
        self.mode, self.project, self.group, self.job_type = mode, project, group, job_type
        self.target, self.direct = target, direct
        self.folder: RunFolder | None = None
        self.runs: list = []

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def start(self, *, name: str, config: dict, tags: Iterable[str] = ()):
        """A new run (or None when disabled)."""
        if not self.enabled:
            return None
        import wandb

        if self.folder is None:
            self.folder = RunFolder(self.target, direct=self.direct)
            where = (
                str(self.folder.path)
                if self.folder.direct
                else f"{self.folder.path} on this node, then {self.folder.dest}"
            )
            say(
                f"W&B: project {self.project}, group {self.group}, job type {self.job_type}, mode {self.mode}"
                + (
                    f" (runs under {where}; 'wandb sync' uploads them)"
                    if self.mode == "offline"
                    else " (the API key is read here from WANDB_API_KEY or 'wandb login')"
                )
            )

        run = wandb.init(
            project=self.project,
            group=self.group,
            job_type=self.job_type,
            name=name,
            config=config,
            tags=list(tags),
            dir=str(self.folder.path),
            mode=cast(WandbMode, self.mode),
            reinit="create_new",
            settings=wandb.Settings(console="off", silent=True, save_code=False, x_disable_stats=True),
        )
        self.runs.append(run)
        return run

    @staticmethod
    def log_epoch(run, metrics: Mapping) -> None:
        if run is not None:
            run.log(epoch_metrics(metrics), step=int(metrics["epoch"]))

    @staticmethod
    def log_files(
        run, *, name: str, type: str, folder: str | os.PathLike, files: Iterable[str], metadata: dict | None = None
    ) -> list[str]:
        """Log the ``files`` of ``folder`` that exist as one artifact; the names logged."""
        if run is None:
            return []
        import wandb

        present = [f for f in files if Path(folder, f).is_file()]
        art = wandb.Artifact(artifact_name(name), type=type, metadata=metadata or {})
        for f in present:
            art.add_file(str(Path(folder, f)), name=f)  # copied into W&B's staging area now
        run.log_artifact(art)
        return present

    def finish(self, run, summary: Mapping | None = None, *, failed: bool = False) -> None:
        """Set the run's summary (``None`` values left out) and finish it (``failed``: exit code 1)."""
        if run is None:
            return
        if summary:
            run.summary.update({k: v for k, v in summary.items() if v is not None})
        run.finish(exit_code=1 if failed else 0)
        if run in self.runs:
            self.runs.remove(run)

    def close(self, *, ok: bool = True) -> str | None:
        """Finish any run still open and put the files in place (``ok=False``: they stay on this node).

        Returns where the files are (None when no run was started)."""
        if self.folder is None:
            return None
        for run in list(self.runs):  # runs left open by an error or an interruption
            try:
                self.finish(run, failed=True)
            except Exception:  # noqa: BLE001 - closing the others and placing the files matters more
                self.runs.remove(run)
        where = self.folder.close(keep=ok)
        say(f"W&B: {self.job_type} runs in {where}")
        return where
