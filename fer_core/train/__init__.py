"""The fer-sweep trainer: one PyTorch loop for every registered model and loss.

    >>> from fer_core.train import load_config, train
    >>> cfg = load_config("train.yaml", overrides=["lr=3e-4"])
    >>> result = train(cfg, run_dir="runs/my-run", report=lambda metrics, checkpoint: print(metrics["val_acc"]))

Modules: ``config`` (the validated ``TrainConfig``, YAML + ``--set``), ``data`` (splits as uint8
tensors on the device), ``augment`` (batched on-device augmentation presets), ``optim`` (optimizers
and per-step schedules with warmup), ``metrics`` (confusion matrix, macro-F1, reports),
``trainer`` (``train``), ``packed`` (K trials of one architecture as one batched network),
``throughput`` (FLOPs per image, GPU peaks), ``evaluate`` (test-split evaluation of a run), ``ladder``
(the notebook's model ladder).
"""

import importlib

# Lazy (PEP 562): ``import fer_core.train.cli`` (what ``fer --help`` needs) must not import torch.
_EXPORTS = {
    "config": ("ConfigError", "TrainConfig", "config_from_preset", "dump_config", "load_config", "resolve_config"),
    "data": ("TrainData", "load_train_data"),
    "trainer": ("EPOCH_METRICS", "TrainResult", "load_checkpoint", "train"),
}
_OWNER = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "TrainConfig",
    "ConfigError",
    "load_config",
    "resolve_config",
    "config_from_preset",
    "dump_config",
    "TrainData",
    "load_train_data",
    "train",
    "TrainResult",
    "load_checkpoint",
    "EPOCH_METRICS",
]


def __getattr__(name: str):
    if name not in _OWNER:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_OWNER[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
