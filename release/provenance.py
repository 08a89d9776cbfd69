"""The ``provenance:`` block of an exported config: where a trainer config came from.

The one owner of the block: its key (``KEY``, the name ``fer_core``'s config loader ignores:
``fer_core.train.config.PROVENANCE_KEY``), what goes in it (``build``: experiment, trial id, its
metrics, the sweep command, export time, ranking key), writing it into the YAML (``dump``) and
reading it back (``read``, ``is_export``). ``fer export-best`` writes it; ``fer retrain`` reads it
for the run folder's name, the model card and the W&B run.

    provenance:
      experiment: reg1
      trial_id: 3f2a_00007
      ranked_by: score
      ...
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import yaml

from fer_core.errors import FerError
from fer_core.train.config import PROVENANCE_KEY as KEY

__all__ = ["KEY", "METRIC_KEYS", "IDENTITY", "build", "dump", "read", "is_export", "identity"]

#: The trial's columns of ``trials.parquet`` the block records under ``metrics``.
METRIC_KEYS = ("score", "peak", "peak_epoch", "final", "drop_from_peak", "epochs", "outcome", "stop_reason", "time_s")
#: What names the trial a config came from (the W&B run and artifact of ``fer retrain``, the TorchScript file).
IDENTITY = ("experiment", "trial_id", "ranked_by")


def build(exp, pick: dict, by: str, *, exported_at: str | None = None) -> dict:
    """The block for ``pick`` (a ``release.export.best_trials`` entry) of the finished experiment ``exp``."""
    row, record = pick["row"], exp.record
    what = {
        "score": record.objective or f"score = mean val_acc of the last {exp.score_window} epochs",
        "final": "final = val_acc of the last epoch",
        "peak": "peak = best val_acc of any epoch",
        "confirmed": "mean score over fresh seeds (fer confirm, confirm.parquet)",
    }[by]
    out: dict[str, Any] = {
        "experiment": exp.name,
        "experiment_dir": exp.where,
        "trial_id": row["trial_id"],
        "ranked_by": by,
        "ranking": what,
        "rank": pick["rank"],
        "candidates": pick["candidates"],
        "metrics": {k: row.get(k) for k in METRIC_KEYS},
        "sampled": exp.sampled(row),
        "max_epochs": record.max_epochs,
        "score_window": exp.score_window,
        "sweep_command": record.command,
        "data": {"uri": record.data.uri, "version": record.data.version},
        "exported_at": exported_at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if pick.get("confirmed"):
        c = pick["confirmed"]
        out["confirmed"] = {k: c.get(k) for k in ("mean", "std", "min", "max", "n", "failed", "seeds")}
    return _plain(out)


def _plain(value):
    """YAML-safe plain values (numpy scalars and tuples from Arrow/pandas become Python ones)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dump(prov: dict) -> str:
    """The block as YAML, to follow the config's keys in the exported file."""
    return yaml.safe_dump({KEY: prov}, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)


def _block(doc) -> dict | None:
    block = doc.get(KEY) if isinstance(doc, dict) else None
    return block if isinstance(block, dict) else None


def read(path: str | os.PathLike) -> dict:
    """The block of a config file or URI ({} when there is none, or the file is unreadable: loading the
    config reports that)."""
    from fer_core.yamlio import read_yaml

    try:
        raw = read_yaml(path, "config file") or {}
    except FerError:
        return {}  # load_config has already reported an unreadable file
    return _block(raw) or {}


def is_export(path) -> bool:
    """Whether ``path`` (a file or ``Location``) is a config ``fer export-best`` wrote (a YAML mapping with
    a block naming a trial)."""
    try:
        doc = yaml.safe_load(path.read_text() if hasattr(path, "fs") else Path(path).read_text(encoding="utf-8"))
    except (FerError, OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    block = _block(doc)
    return block is not None and "trial_id" in block


def identity(prov: dict, *extra: str) -> dict:
    """The block's ``IDENTITY`` keys (and ``extra`` ones): which trial of which experiment, ranked how."""
    return {k: prov.get(k) for k in (*IDENTITY, *extra)}
