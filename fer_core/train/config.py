"""The trainer's configuration: one flat, validated dataclass, from code defaults, a YAML file and overrides.

Precedence (as timm and the torchvision references): code defaults < a model preset's training
settings (``preset: fer_cnn_bplusplus``, the capstone notebook's recipe for that model) < the YAML
file < ``--set key=value`` overrides. The resolved config is written next to every run
(``config.yaml``) and stored in every checkpoint, so a run can always be reproduced.

    >>> cfg = load_config("train.yaml", overrides=["lr=3e-4", "loss=focal", "focal_gamma=1.5"])
    >>> cfg.lr, cfg.loss
    (0.0003, 'focal')

Every field is a sweepable knob with a flat name; an unknown key is an error that names the valid
keys (and the closest one), a bad value is an error that names the key and the rule.

The two L2s are named distinctly: ``l2`` is the Keras ``kernel_regularizer=l2(x)`` penalty
``l2 * sum(w**2)`` over conv/dense kernels added to the loss (what the notebook's 1e-3 vs 1e-4
means); ``weight_decay`` is decoupled decay (AdamW), applied by the optimizer.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..errors import FerError
from ..validate import KEY, check_int, check_number, is_real
from ..yamlio import read_yaml

__all__ = [
    "TrainConfig",
    "ConfigError",
    "load_config",
    "resolve_config",
    "parse_overrides",
    "config_from_preset",
    "dump_config",
    "RUNTIME_KEYS",
    "IGNORED_KEYS",
    "PROVENANCE_KEY",
]


class ConfigError(FerError, ValueError):
    """A config file, key or value that cannot be used; the message names it and says why."""


LOSSES = ("ce", "focal")
AUGMENTS = ("none", "flip", "soft", "strong")  # fer_core.train.augment's presets
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step", "plateau")
CLASS_WEIGHTS = ("none", "balanced")
SAMPLERS = ("shuffle", "weighted")
DEVICES = ("auto", "cpu", "cuda")
#: ``cuda:N``: N a GPU index as torch reads it (decimal, no sign or leading zero; torch keeps it in 8 bits).
CUDA_INDEX = re.compile(r"cuda:(0|[1-9][0-9]{0,2})", re.ASCII)
MAX_CUDA_INDEX = 127
#: The largest seed: a signed 64-bit int (torch.manual_seed takes it; the trainer's epoch seeds stay below it).
MAX_SEED = 2**63 - 1
#: The largest batch size, epoch count or patience: far above any real run, and small enough that every
#: count derived from it (steps, images seen) stays a 64-bit integer.
MAX_COUNT = 1_000_000
#: The most CPU threads torch may be given.
MAX_THREADS = 4096
PRECISIONS = ("auto", "fp32", "bf16")
L2_SCOPES = ("all", "all_but_classifier", "dense")

#: Top-level keys of a config file that are not trainer keys and that the loader skips (each must hold a
#: mapping): ``provenance``, where ``fer export-best`` records where a config came from
#: (``release.provenance`` writes and reads it under this name).
PROVENANCE_KEY = "provenance"
IGNORED_KEYS = (PROVENANCE_KEY,)

#: Keys that change how a run executes, not what it computes: they may differ on resume.
RUNTIME_KEYS = frozenset(
    {"device", "precision", "threads", "eval_batch_size", "checkpoint_every", "compile", "gpu_memory_fraction"}
)


@dataclass
class TrainConfig:
    """Everything one training run needs. Field comments give the meaning; validation is in ``check``."""

    # data
    data: str = "runs/default/data"  # data set folder or URI (file://, s3://, gs://) from `fer data ingest`
    data_version: str | None = None  # refuse data whose manifest version differs (None: any)
    # model (any registered name: `fer_core.models.list_models()`)
    model: str = "fer_cnn_bplusplus"
    model_args: dict = field(default_factory=dict)  # extra keyword arguments for the model builder
    dropout_scale: float = 1.0  # multiplies every dropout rate of the model
    weights_path: str | None = None  # local weights file for torchvision backbones (never downloaded)
    freeze_base: bool = False  # train only the head of a torchvision backbone
    # loss
    loss: str = "ce"  # ce | focal
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0  # focal only
    focal_alpha: Any = None  # focal only: None, a scalar, or one value per class
    class_weight: str = "balanced"  # none | balanced (sklearn's n / (k * count), from the train split)
    sampler: str = "shuffle"  # shuffle | weighted (class-balanced sampling with replacement)
    # regularization
    l2: float = 0.0  # Keras-style kernel penalty l2 * sum(w**2), added to the loss
    l2_scope: str = "all"  # all | all_but_classifier | dense
    weight_decay: float = 0.0  # decoupled weight decay (adamw; coupled for sgd)
    augment: str = "none"  # none | flip (horizontal flips) | soft (the notebook's) | strong
    # optimization
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    batch_size: int = 64
    epochs: int = 30
    lr_schedule: str = "constant"  # constant | cosine | step | plateau
    warmup_epochs: float = 0.0  # linear warmup before the schedule
    cosine_alpha: float = 0.0  # cosine: final lr = cosine_alpha * lr
    step_size: int = 10  # step: epochs between decays
    step_gamma: float = 0.1  # step: decay factor
    plateau_monitor: str = "val_loss"  # plateau: metric watched (Keras ReduceLROnPlateau)
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    plateau_min_lr: float = 1e-6
    early_stopping_monitor: str | None = None  # e.g. val_acc: stop when it has not improved ...
    early_stopping_patience: int | None = None  # ... for this many epochs (best weights restored)
    # divergence (a non-finite training loss always stops the run as diverged, at once)
    diverge_factor: float = 5.0  # 0 (off) or > 1: also stop as diverged when the train loss is above this
    # x ln(K) (K classes; ln(K) is a uniform guess's loss), or above ln(K) and
    # this x its best (lowest) epoch loss so far ...
    diverge_patience: int = 2  # ... for this many epochs in a row. On real FER2013 faces (4 classes,
    # fer_cnn_small, Adam/SGD lr 1e-3..0.5) runs that learn stay below
    # 1.8 x ln(K); Adam at lr=1 sits at chance with 5-9 x ln(K): caught
    # runtime
    seed: int = 0
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on cuda and on CPUs with native bf16, else fp32) | fp32 | bf16
    threads: int | None = None  # torch CPU threads (None: torch's default)
    eval_batch_size: int = 1024
    checkpoint_every: int = 1  # epochs between checkpoints (0: none)
    compile: bool = False  # torch.compile the model (on CUDA with CUDA graphs; see trainer._compiled)
    gpu_memory_fraction: float | None = None  # CUDA: cap this process's memory at this share of the GPU, (0, 1]

    # ------------------------------------------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def recorded(self) -> dict:
        """``to_dict()`` as files, logs and W&B keep it: the data URI without its secrets (``storage.redact``;
        credentials come from the environment, as the README says)."""
        from ..storage import redact

        return {**self.to_dict(), "data": redact(self.data)}

    def replace(self, **changes) -> TrainConfig:
        return resolve_config({**self.to_dict(), **changes})

    def check(self) -> TrainConfig:
        """Validate every value (types coerced where lossless); raises ``ConfigError`` naming the key."""
        from ..losses import is_loss
        from ..models import is_model, list_models

        _choice(self, "loss", LOSSES)
        if not is_loss(self.loss):
            raise ConfigError(f"loss: {self.loss!r} is not a registered loss")
        _choice(self, "augment", AUGMENTS)
        _choice(self, "optimizer", OPTIMIZERS)
        _choice(self, "lr_schedule", SCHEDULES)
        _choice(self, "class_weight", CLASS_WEIGHTS)
        _choice(self, "sampler", SAMPLERS)
        _choice(self, "precision", PRECISIONS)
        _choice(self, "l2_scope", L2_SCOPES)
        if not isinstance(self.model, str) or not is_model(self.model):
            close = difflib.get_close_matches(str(self.model), list_models(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"model: unknown model {self.model!r}{hint}; registered: {', '.join(list_models())}")
        if not _is_device(self.device):
            raise ConfigError(
                f"device: must be auto, cpu, cuda or cuda:N (N a GPU index, 0 to {MAX_CUDA_INDEX}); got {self.device!r}"
            )
        for key in ("data",):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ConfigError(f"{key}: must be a non-empty path or URI; got {getattr(self, key)!r}")
        if not isinstance(self.model_args, dict):
            raise ConfigError(f"model_args: must be a mapping of keyword arguments; got {self.model_args!r}")
        _number(self, "lr", low=0.0, low_open=True)
        _number(self, "label_smoothing", low=0.0, high=1.0, high_open=True)
        _number(self, "focal_gamma", low=0.0)
        _number(self, "dropout_scale", low=0.0)
        _number(self, "l2", low=0.0)
        _number(self, "weight_decay", low=0.0)
        _number(self, "momentum", low=0.0, high=1.0, high_open=True)
        _number(self, "warmup_epochs", low=0.0)
        _number(self, "cosine_alpha", low=0.0, high=1.0)
        _number(self, "step_gamma", low=0.0, low_open=True, high=1.0)
        _number(self, "plateau_factor", low=0.0, low_open=True, high=1.0, high_open=True)
        _number(self, "plateau_min_lr", low=0.0)
        _integer(self, "batch_size", low=1, high=MAX_COUNT)
        _integer(self, "epochs", low=1, high=MAX_COUNT)
        _integer(self, "step_size", low=1, high=MAX_COUNT)
        _integer(self, "plateau_patience", low=0, high=MAX_COUNT)
        _integer(self, "seed", low=0, high=MAX_SEED)
        _integer(self, "eval_batch_size", low=1, high=MAX_COUNT)
        _integer(self, "checkpoint_every", low=0, high=MAX_COUNT)
        _number(self, "diverge_factor", low=0.0)
        if 0 < self.diverge_factor <= 1:
            raise ConfigError(
                f"diverge_factor: must be 0 (off) or > 1 (a multiple of a uniform guess's loss; "
                f"default 5); got {self.diverge_factor!r}"
            )
        _integer(self, "diverge_patience", low=1, high=MAX_COUNT)
        if self.threads is not None:
            _integer(self, "threads", low=1, high=MAX_THREADS)
        if self.early_stopping_patience is not None:
            _integer(self, "early_stopping_patience", low=1, high=MAX_COUNT)
        if (self.early_stopping_monitor is None) != (self.early_stopping_patience is None):
            raise ConfigError(
                "early_stopping_monitor and early_stopping_patience go together: set both "
                "(e.g. early_stopping_monitor=val_acc early_stopping_patience=10) or neither"
            )
        for key in ("freeze_base", "compile"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{key}: must be true or false; got {getattr(self, key)!r}")
        if self.gpu_memory_fraction is not None:
            _number(self, "gpu_memory_fraction", low=0.0, low_open=True, high=1.0)
        if self.focal_alpha is not None:
            values = self.focal_alpha if isinstance(self.focal_alpha, (list, tuple)) else [self.focal_alpha]
            if not values or not all(_is_finite(v) and v >= 0 for v in values):
                raise ConfigError(
                    f"focal_alpha: must be null, a number >= 0, or a list of numbers >= 0 "
                    f"(one per class); got {self.focal_alpha!r}"
                )
            if isinstance(self.focal_alpha, (list, tuple)):
                self.focal_alpha = [float(v) for v in self.focal_alpha]
            else:
                self.focal_alpha = float(self.focal_alpha)
        if self.optimizer == "adam" and self.weight_decay > 0:
            raise ConfigError(
                "weight_decay: adam has no decoupled weight decay; use optimizer=adamw, "
                "or the Keras-style coupled penalty l2=..."
            )
        return self


def _choice(cfg: TrainConfig, key: str, choices: Iterable[str]) -> None:
    value = getattr(cfg, key)
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(choices)}; got {value!r}")


def _is_finite(value) -> bool:
    """A real number that is finite as a float (an int too large for a float is not)."""
    if not is_real(value):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _number(cfg, key, **bounds) -> None:
    value = getattr(cfg, key)
    if is_real(value) and not _is_finite(value):  # check_number's float() overflows on a huge int
        raise ConfigError(KEY.format(key=key, rule="a finite number", value=value))
    setattr(cfg, key, check_number(value, key, error=ConfigError, template=KEY, quote_float=True, **bounds))


def _integer(cfg, key, *, low=None, high=None) -> None:
    value = check_int(getattr(cfg, key), key, low=low, kind=int, whole_floats=True, error=ConfigError, template=KEY)
    if high is not None and value > high:
        raise ConfigError(KEY.format(key=key, rule=f"<= {high}", value=value))
    setattr(cfg, key, value)


def _is_device(value) -> bool:
    """auto, cpu, cuda or cuda:N with N a GPU index torch can hold."""
    if not isinstance(value, str):
        return False
    if value in DEVICES:
        return True
    index = CUDA_INDEX.fullmatch(value)
    return index is not None and int(index.group(1)) <= MAX_CUDA_INDEX


# ----------------------------------------------------------------------------------------------
# Building a config
# ----------------------------------------------------------------------------------------------


def _unknown_key_error(key: str, where: str) -> ConfigError:
    valid = TrainConfig.keys() + ["preset"]
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint}; valid keys: {', '.join(valid)}")


def preset_settings(name: str) -> dict:
    """The capstone notebook's training settings for a ladder model, as config keys.

    ``early_stopping_monitor`` becomes our metric name (``val_acc``), unused ``None`` settings are
    left at the config defaults, and ``model`` is set to the preset.
    """
    from ..models import PRESET_DEFAULTS

    if not isinstance(name, str):
        raise ConfigError(f"preset: must be a preset name; got {name!r}; presets: {', '.join(PRESET_DEFAULTS)}")
    if name not in PRESET_DEFAULTS:
        raise ConfigError(f"preset: unknown preset {name!r}; presets: {', '.join(PRESET_DEFAULTS)}")
    rename = {"val_accuracy": "val_acc"}
    out: dict[str, Any] = {"model": name}
    for key, value in PRESET_DEFAULTS[name].items():
        if value is None or key == "checkpoint_monitor":
            continue
        if key in ("plateau_monitor", "early_stopping_monitor"):
            value = rename.get(value, value)
        out[key] = value
    return out


def resolve_config(raw: dict, *, where: str = "config") -> TrainConfig:
    """A validated ``TrainConfig`` from a mapping (a YAML document, possibly with ``preset``)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping of key: value, got {type(raw).__name__}")
    raw = dict(raw)
    base: dict[str, Any] = {}
    preset = raw.pop("preset", None)
    if preset is not None:
        base = preset_settings(preset)
    valid = set(TrainConfig.keys())
    for key in raw:
        if key not in valid:
            raise _unknown_key_error(str(key), where)
    try:
        cfg = TrainConfig(**{**base, **raw})
    except TypeError as exc:  # pragma: no cover - keys were checked above
        raise ConfigError(f"{where}: {exc}") from None
    return cfg.check()


def config_from_preset(name: str, **overrides) -> TrainConfig:
    """The notebook's recipe for ladder model ``name`` with ``overrides`` on top (``fer ladder``)."""
    return resolve_config({"preset": name, **overrides}, where=f"preset {name}")


def parse_overrides(items: Iterable[str]) -> dict:
    """``["lr=1e-3", "model_args.filters=[32,64]"]`` -> a dict; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value (e.g. --set lr=3e-4)")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc.problem})") from None
        except ValueError as exc:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
            raise ConfigError(f"--set {key}=...: value cannot be read ({exc})") from None
        if isinstance(value, str) and _looks_numeric(value):
            value = float(value)  # YAML 1.1 reads "1e-3" as a string
        head, dot, sub = key.partition(".")
        if dot:
            if head != "model_args":
                raise ConfigError(f"--set {item!r}: only model_args.<name> may be dotted")
            out.setdefault("model_args", {})[sub] = value
        else:
            if head not in TrainConfig.keys() and head != "preset":
                raise _unknown_key_error(head, "--set")
            out[head] = value
    return out


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity")


def load_config(path: str | os.PathLike | None = None, *, overrides: Iterable[str] = (), **values) -> TrainConfig:
    """Code defaults < preset < YAML file ``path`` < ``values`` < ``overrides`` (``key=value`` strings).

    A top-level mapping under one of ``IGNORED_KEYS`` (``provenance:``, which ``fer export-best`` writes) is ignored.
    """
    raw: dict[str, Any] = {}
    where = "config"
    if path is not None:
        from ..safepaths import is_uri
        from ..storage import redact

        path = path if is_uri(path) else Path(path)
        where = redact(path)
        raw = read_yaml(path, "config file", ConfigError) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: must be a YAML mapping of key: value")
        raw = _drop_ignored(raw, path)
        raw = {k: (float(v) if isinstance(v, str) and _looks_numeric(v) and k != "data" else v) for k, v in raw.items()}
    raw.update(values)
    extra = parse_overrides(overrides)
    if "model_args" in extra and isinstance(raw.get("model_args"), dict):
        extra["model_args"] = {**raw["model_args"], **extra["model_args"]}
    raw.update(extra)
    return resolve_config(raw, where=where)


def _drop_ignored(raw: dict, path: str | os.PathLike) -> dict:
    """``raw`` without its ``IGNORED_KEYS`` blocks (the ``provenance:`` that ``fer export-best`` writes).

    Such a block records where a config came from (experiment, trial, metrics); it is not a trainer
    key, so it is checked to be a mapping and otherwise ignored.
    """
    for key in IGNORED_KEYS:
        if key in raw and not isinstance(raw[key], dict):
            raise ConfigError(
                f"{path}: {key}: must be a mapping (what 'fer export-best' writes); got {type(raw[key]).__name__}"
            )
    return {k: v for k, v in raw.items() if k not in IGNORED_KEYS}


def dump_config(cfg: TrainConfig) -> str:
    """The config as YAML, keys in field order (what ``config.yaml`` and ``export-best`` write), secrets redacted."""
    return yaml.safe_dump(cfg.recorded(), sort_keys=False, default_flow_style=None)
