"""The sweep's settings: its command-line flags and ``SweepConfig``, the typed settings of one sweep.

``add_arguments`` defines the flags (``python sweeps/regularization.py`` and ``fer sweep`` alike);
``SweepConfig.from_args`` turns parsed flags into a frozen ``SweepConfig`` (``--smoke``'s presets
applied), ``to_dict`` is what ``sweep.json`` records as ``settings`` (credentials in URIs redacted)
and ``from_dict`` reads it back. A resume or an extension runs with its launch's settings except the
runtime ones (``SweepConfig.RUNTIME``: where and how it runs); ``SweepConfig.resumed`` applies that rule.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from fer_core.errors import FerError
from sweeps.wandb_logging import add_arguments as add_wandb_arguments

__all__ = ["SweepConfig", "add_arguments", "explicit", "DEFAULT_DATA", "DEFAULT_SAMPLES", "DEFAULT_SPACE", "SMOKE"]

DEFAULT_DATA = "runs/default/data"
DEFAULT_SPACE = str(Path(__file__).resolve().parent / "spaces" / "regularization.yaml")
DEFAULT_SAMPLES = 12  # --samples without --time-budget-s
#: The largest sweep --seed: Optuna's samplers need a 32-bit seed, offset by the trials an --extend adds.
MAX_SWEEP_SEED = 2**31 - 1
SMOKE = dict(samples=4, max_epochs=4, grace_period=1, collapse_grace=2, collapse_window=2, concurrency=2)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The sweep's arguments, for ``python sweeps/regularization.py`` and ``fer sweep`` alike."""
    p.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="data set folder or URI from 'fer data ingest' (the default is synthesized if missing)",
    )
    p.add_argument("--space", default=DEFAULT_SPACE, help="search space YAML")
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        help=f"number of trials (configurations); default {DEFAULT_SAMPLES}, or with --time-budget-s as many as the "
        "budget holds (Ray Tune's num_samples=-1: new trials start while one can still finish)",
    )
    p.add_argument(
        "--max-epochs",
        type=int,
        default=4,
        help="epoch budget of a trial (ASHA's max_t; its cosine schedule's length). Short by default: "
        "tune on short runs, then train the winner longer (fer retrain --epochs); a collapse study wants 30+",
    )
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a trial can be stopped")
    p.add_argument("--reduction-factor", type=int, default=3, help="ASHA: keep 1/rf of trials at each rung")
    p.add_argument(
        "--time-budget-s",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wall-clock budget of each run of the sweep (launch, --resume, --extend): when it is spent, "
        "trials in flight stop where they are and no new one starts (outcome 'out of time'); default: none",
    )
    p.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs per trial (also its torch threads)")
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        default=0,
        help="GPUs per trial; a fraction packs trials on a GPU, each capped at that share of its memory",
    )
    p.add_argument(
        "--pack",
        type=int,
        default=1,
        metavar="K",
        help="train K trials at a time as one batched network on each GPU (or CPU share): one pack per "
        "--gpus-per-trial/--cpus-per-trial share of the cluster, each slot a Tune trial; trials with another "
        "model or batch size wait for a pack of their own (1: every trial in its own process)",
    )
    p.add_argument(
        "--concurrency", type=int, default=None, help="max trials at once (default: what the cluster's CPUs/GPUs allow)"
    )
    p.add_argument("--storage", default="runs/sweeps", help="experiment storage: local folder or URI (s3://, gs://)")
    p.add_argument("--name", default=None, help="experiment name (default: regularization-<date>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the experiment --name in --storage")
    p.add_argument(
        "--extend",
        type=int,
        default=None,
        metavar="N",
        help="add N trials to the finished experiment --name: a new Tune run on the same Optuna study, "
        "so TPE sees every earlier trial (its launch's settings are kept)",
    )
    p.add_argument(
        "--optuna-storage",
        default=None,
        metavar="URL",
        help="where the Optuna study lives (study name = experiment name): an SQLAlchemy URL "
        "(sqlite:///..., postgresql://...), journal:/shared/file.log, or memory; default "
        "sqlite:///<experiment>/optuna.db for local storage (required for URI storage)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing local experiment --name")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and of every trial's training")
    p.add_argument("--score-window", type=int, default=3, help="score = mean val acc of the last N epochs")
    p.add_argument(
        "--collapse-margin",
        type=float,
        default=0.02,
        help="collapse: stop when the recent mean val acc is this far below its best earlier mean (0.02: checked on "
        "real FER2013 curves, README 'On real data')",
    )
    p.add_argument("--collapse-grace", type=int, default=5, help="collapse: epochs before the rule applies")
    p.add_argument("--collapse-window", type=int, default=3, help="collapse: epochs in the recent mean")
    p.add_argument(
        "--collapse-patience", type=int, default=1, help="collapse: extra consecutive collapsed epochs before stopping"
    )
    p.add_argument("--no-collapse-stop", action="store_true", help="record collapses but do not stop trials")
    p.add_argument(
        "--search",
        choices=("tpe", "random"),
        default="tpe",
        help="Optuna sampler: seeded TPE, or random search (a baseline)",
    )
    p.add_argument(
        "--startup-trials",
        type=int,
        default=None,
        help="TPE: random trials before it models the space (default: samples/4, between 3 and "
        "Optuna's 10, so a small study is not all start-up)",
    )
    p.add_argument("--no-asha", action="store_true", help="no ASHA: every trial runs its full budget (a baseline)")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial (from its checkpoint)")
    add_wandb_arguments(p, runs="one run per trial, job type sweep-trial; --resume continues the trials' runs")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="trainer config key for every trial (below the space's fixed keys and sampled values)",
    )
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    p.add_argument(
        "--smoke", action="store_true", help=f"tiny sweep for tests and smoke checks: {SMOKE} unless given explicitly"
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="Ray Tune's own progress tables and result boxes instead of the compact lines",
    )


def explicit(argv: Sequence[str], flag: str) -> bool:
    """Whether ``flag`` was given on the command line ``argv`` (``--flag value`` or ``--flag=value``)."""
    return any(a == flag or a.startswith(flag + "=") for a in argv)


#: Settings a resume or an extension may change (where and how it runs); every other setting is the launch's.
RUNTIME_SETTINGS = (
    "address",
    "num_cpus",
    "concurrency",
    "max_failures",
    "wandb_mode",
    "wandb_project",
    "resume",
    "overwrite",
    "name",
    "storage",
    "extend",
    "verbose",
)
#: Of those, the ones a resume keeps from the launch unless it gives them again.
INHERITED_RUNTIME = ("num_cpus", "concurrency", "max_failures", "wandb_mode", "wandb_project")
#: Settings recorded with credentials in them redacted (URIs and addresses).
_REDACTED = ("data", "storage", "address")


@dataclass(frozen=True)
class SweepConfig:
    """Every setting of a sweep: one per flag of ``add_arguments`` (the flag's dest), in the order
    ``sweep.json``'s ``settings`` lists them (the flags' order, ``overrides`` last)."""

    data: str
    space: str
    samples: int | None  # None: until the time budget is spent (only with --time-budget-s)
    max_epochs: int
    grace_period: int
    reduction_factor: int
    time_budget_s: float | None
    cpus_per_trial: float
    gpus_per_trial: float
    pack: int
    concurrency: int | None
    storage: str
    name: str | None  # as given: None names the experiment by its start time
    resume: bool
    extend: int | None
    optuna_storage: str | None
    overwrite: bool
    seed: int
    score_window: int
    collapse_margin: float
    collapse_grace: int
    collapse_window: int
    collapse_patience: int
    no_collapse_stop: bool
    search: str
    startup_trials: int | None
    no_asha: bool
    max_failures: int
    wandb_project: str | None
    wandb_mode: str
    address: str | None
    num_cpus: int | None
    smoke: bool
    verbose: bool
    overrides: tuple[str, ...]  # --set KEY=VALUE, in order

    RUNTIME: ClassVar[tuple[str, ...]] = RUNTIME_SETTINGS
    INHERITED: ClassVar[tuple[str, ...]] = INHERITED_RUNTIME

    # --- building and recording --------------------------------------------------------------------
    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @staticmethod
    def flag(key: str) -> str:
        """The command-line flag of a setting."""
        return "--set" if key == "overrides" else "--" + key.replace("_", "-")

    @classmethod
    def from_args(cls, args: argparse.Namespace, argv: Sequence[str] = ()) -> SweepConfig:
        """The settings of parsed flags; with ``--smoke``, ``SMOKE``'s values for the flags ``argv`` does not give."""
        values = {key: getattr(args, key) for key in cls.keys()}
        values["overrides"] = tuple(values["overrides"] or ())
        if values["smoke"]:
            values.update({k: v for k, v in SMOKE.items() if not explicit(argv, cls.flag(k))})
        if values["samples"] is None and values["time_budget_s"] is None:
            values["samples"] = DEFAULT_SAMPLES
        return cls(**values)

    @classmethod
    def parse(cls, argv: Sequence[str], parser: argparse.ArgumentParser) -> SweepConfig:
        """``argv`` parsed by ``parser`` (built with ``add_arguments``), its flag combinations checked."""
        config = cls.from_args(parser.parse_args(list(argv)), argv)
        config.check_flags()
        return config

    @classmethod
    def defaults(cls) -> SweepConfig:
        p = argparse.ArgumentParser(add_help=False)
        add_arguments(p)
        return cls.from_args(p.parse_args([]))

    def to_dict(self) -> dict[str, Any]:
        """The settings as ``sweep.json`` records them: credentials in URIs redacted, ``overrides`` a list."""
        from fer_core.storage import redact

        out = {key: getattr(self, key) for key in self.keys()}
        out["overrides"] = list(self.overrides)
        for key in _REDACTED:
            if isinstance(out[key], str):
                out[key] = redact(out[key])
        return out

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any], base: SweepConfig | None = None) -> SweepConfig:
        """The settings a record holds; keys it lacks (an older record) are ``base``'s (default: the flags'
        defaults), keys this version does not know are ignored. Redacted values stay redacted."""
        values = {k: v for k, v in settings.items() if k in cls.keys()}
        if isinstance(values.get("overrides"), (list, tuple)):
            values["overrides"] = tuple(values["overrides"])
        return dataclasses.replace(base if base is not None else cls.defaults(), **values)

    # --- checks --------------------------------------------------------------------------------
    def check_flags(self) -> None:
        """``--resume``, ``--overwrite`` and ``--extend`` make sense together (before anything is read)."""
        if self.resume and not self.name:
            raise FerError("--resume needs --name: the experiment to continue (a folder in --storage)")
        if self.overwrite and self.resume:
            raise FerError("--overwrite and --resume contradict each other: pick one")
        if self.extend is not None:
            if not self.name or self.resume or self.overwrite:
                raise FerError(
                    "--extend N adds trials to the finished experiment --name (without --resume or --overwrite)"
                )
            if self.extend < 1:
                raise FerError(f"--extend: must be >= 1; got {self.extend}")

    def check_values(self) -> None:
        """Budgets and windows of at least one epoch, ASHA's grace within the budget (checked on the
        settings a resume runs with: the launch's)."""
        if self.samples is None and self.time_budget_s is None:
            raise FerError(
                f"--samples: without --time-budget-s a sweep needs a number of trials (default {DEFAULT_SAMPLES})"
            )
        for key in ("samples", "max_epochs", "grace_period", "score_window", "collapse_window"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise FerError(f"{self.flag(key)} must be >= 1; got {getattr(self, key)}")
        if self.time_budget_s is not None and not (math.isfinite(self.time_budget_s) and self.time_budget_s > 0):
            raise FerError(f"--time-budget-s must be a number of seconds > 0; got {self.time_budget_s}")
        if self.grace_period > self.max_epochs:
            raise FerError(f"--grace-period {self.grace_period} exceeds --max-epochs {self.max_epochs}")
        if self.pack < 1:
            raise FerError(f"--pack must be >= 1 (trials per pack; 1: no packing); got {self.pack}")
        if self.pack > 1:
            from sweeps.packed_trainable import pack_resources

            pack_resources(self.cpus_per_trial, self.gpus_per_trial, self.pack)  # raises when it leaves no CPU
        if not 0 <= self.seed <= MAX_SWEEP_SEED:  # Optuna's samplers take a 32-bit seed (+ the trials an --extend adds)
            raise FerError(f"--seed must be a whole number from 0 to {MAX_SWEEP_SEED}; got {self.seed}")
        if self.reduction_factor < 2:
            raise FerError(
                f"--reduction-factor must be >= 2 (ASHA keeps 1/factor of the trials at each rung); "
                f"got {self.reduction_factor}"
            )

    # --- resume ----------------------------------------------------------------------------------
    @property
    def continuing(self) -> bool:
        """A resume or an extension: the experiment exists and its launch's settings hold."""
        return self.resume or self.extend is not None

    def resumed(self, launch: Mapping[str, Any], argv: Sequence[str]) -> SweepConfig:
        """These settings with the launch's (``sweep.json``'s ``settings``) for everything a resume may not change.

        A runtime setting (``RUNTIME``) is this command's; of those, ``INHERITED`` ones are the
        launch's unless ``argv`` gives them again. Any other setting is the launch's: given on the
        resume's command line with another value, it is an error (the resumed trials would otherwise
        train with other settings than the ones they started with); recorded redacted, ``argv`` must
        give it again. Only the settings the record holds are decided here (an older record lacks some).
        """
        recorded = SweepConfig.from_dict(launch, base=self)
        out: dict[str, Any] = {}
        for key in self.keys():
            if key not in launch:
                continue
            value, flag = getattr(recorded, key), self.flag(key)
            given = explicit(argv, flag)
            if key in self.INHERITED and not given:
                out[key] = value
            if key in self.RUNTIME:
                continue
            if isinstance(value, str) and "***" in value:  # recorded with its secrets redacted: needs the real one
                if not given:
                    raise FerError(
                        f"{flag}: this experiment's launch used a location with credentials in it "
                        f"({value}); pass {flag} again to resume (better: credentials in the environment, "
                        "not the URI)"
                    )
                continue
            mine, theirs = _as_recorded(getattr(self, key)), _as_recorded(value)
            if given and mine != theirs:
                raise FerError(
                    f"{flag}: {mine!r} differs from this experiment's launch ({theirs!r}); "
                    f"a resume continues with the launch's settings - drop {flag}, "
                    "or start a new experiment with another --name"
                )
            out[key] = value
        return dataclasses.replace(self, **out)

    # --- what the settings mean for the trials ---------------------------------------------------
    @property
    def trials_to_run(self) -> int | None:
        """Trials this run adds: ``--extend``'s N, else ``--samples`` (None: as many as the time budget holds)."""
        return self.extend if self.extend is not None else self.samples

    @property
    def tpe_startup_trials(self) -> int:
        """TPE's random start-up trials: ``--startup-trials``, else samples/4 between 3 and Optuna's 10 (10 when
        the time budget decides the number of trials)."""
        if self.startup_trials is not None:
            return self.startup_trials
        return 10 if self.samples is None else min(10, max(3, self.samples // 4))

    @property
    def threads(self) -> int:
        """Torch threads of a trial: its whole CPUs, at least one."""
        return max(1, int(self.cpus_per_trial))

    @property
    def device(self) -> str:
        return "cuda" if self.gpus_per_trial > 0 else "cpu"

    @property
    def gpu_memory_fraction(self) -> float | None:
        """A trial's cap on its GPU's memory: its ``--gpus-per-trial`` when that is a fraction of a GPU."""
        return self.gpus_per_trial if 0 < self.gpus_per_trial < 1 else None

    @property
    def rules(self) -> dict:
        """The score and collapse rules every trial applies to its own history (``sweeps.trainable``)."""
        collapse = dict(
            mode="max",
            grace_period=self.collapse_grace,
            window=self.collapse_window,
            margin=self.collapse_margin,
            patience=self.collapse_patience,
            relative=False,
        )
        return {"score_window": self.score_window, "collapse": collapse}


def _as_recorded(value: Any) -> Any:
    """A setting's value as ``sweep.json`` holds it (``overrides``: a list), for comparing and for messages."""
    return list(value) if isinstance(value, tuple) else value
