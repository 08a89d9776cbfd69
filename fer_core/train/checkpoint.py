"""The trainer's two weight files, written and read here only.

- ``checkpoint/checkpoint.pt`` (``save_checkpoint`` / ``load_checkpoint``): everything an exact resume
  needs - model, optimizer and LR-schedule state, the config, the history, best-so-far and early-stopping
  state - tagged ``format: CHECKPOINT_FORMAT``. ``fer train --resume``, Tune's trial restore and
  ``fer evaluate --weights final`` read it.
- ``best.pt`` (the trainer, at the best val accuracy) and ``final.pt`` (``fer retrain``, the final weights)
  (``save_weights`` / ``load_weights``): ``model`` (the state dict), ``epoch``, ``val_acc``, ``config``
  (a plain dict), ``data_version`` and ``classes``. ``fer evaluate`` and ``fer retrain --weights best`` read it.

Both hold only tensors and plain data (dicts, lists, tuples, str, int, float, bool, None) and are read with
``torch.load(weights_only=True)``: a file holding any other object (a pickle that would run code when
loaded) is refused with a ``FerError``, as is a truncated or corrupt one.

    >>> state = load_checkpoint("runs/a")          # the run folder, checkpoint/ or checkpoint.pt
    >>> weights = load_weights("runs/a/best.pt")
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_bytes
from ..errors import FerError

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT",
    "BEST_FILE",
    "FINAL_FILE",
    "save_checkpoint",
    "load_checkpoint",
    "save_weights",
    "load_weights",
    "compact_state",
]

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
BEST_FILE = "best.pt"
FINAL_FILE = "final.pt"

#: Keys of ``best.pt`` / ``final.pt`` (and of every checkpoint) that readers rely on.
WEIGHTS_KEYS = ("model", "epoch", "config", "data_version", "classes")
#: Keys of ``checkpoint.pt`` that a resume relies on.
CHECKPOINT_KEYS = WEIGHTS_KEYS + (
    "format",
    "optimizer",
    "schedule",
    "history",
    "best_val_acc",
    "best_epoch",
    "es_best",
    "es_wait",
    "es_state",
)


def compact_state(state: dict) -> dict:
    """``state`` with every tensor that is a view into a larger storage copied out: ``torch.save`` writes a
    tensor's whole storage, so a packed trial's weights (views into K trials' stacked tensors) would
    otherwise carry all K. Other tensors are kept as they are (the same bytes as before)."""
    return {
        k: v.clone() if isinstance(v, torch.Tensor) and v.untyped_storage().nbytes() > _nbytes(v) else v
        for k, v in state.items()
    }


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _to_bytes(payload: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def save_checkpoint(
    folder: str | os.PathLike,
    *,
    epoch: int,
    model: torch.nn.Module,
    optimizer,
    schedule,
    config: dict,
    data_version: str,
    classes: list[str],
    history: list[dict],
    best_val_acc: float,
    best_epoch: int,
    es_best,
    es_wait: int,
    es_state: dict | None,
) -> Path:
    """Write ``folder/checkpoint.pt`` (atomically) for an exact resume after ``epoch``."""
    return write_bytes(
        Path(folder) / CHECKPOINT_FILE,
        _to_bytes(
            {
                "format": CHECKPOINT_FORMAT,
                "epoch": epoch,
                "model": compact_state(model.state_dict()),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "config": config,
                "data_version": data_version,
                "classes": list(classes),
                "history": history,
                "best_val_acc": best_val_acc,
                "best_epoch": best_epoch,
                "es_best": es_best,
                "es_wait": es_wait,
                "es_state": es_state,
            }
        ),
    )


def save_weights(
    path: str | os.PathLike,
    model: torch.nn.Module,
    *,
    epoch: int,
    val_acc,
    config: dict,
    data_version: str,
    classes: list[str],
) -> Path:
    """Write a ``best.pt`` / ``final.pt`` file (atomically): the model's weights and what evaluation needs."""
    return write_bytes(
        Path(path),
        _to_bytes(
            {
                "model": compact_state(model.state_dict()),
                "epoch": epoch,
                "val_acc": val_acc,
                "config": config,
                "data_version": data_version,
                "classes": list(classes),
            }
        ),
    )


def _safe_load(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, every failure turned into one ``FerError`` line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4" on a foreign pickle
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if _holds_objects(path, exc):
            raise FerError(
                f"{path}: not a fer-sweep {what}: it contains objects other than tensors and plain data; "
                "refusing to load it (it could run code). Use files written by fer-sweep "
                "(re-run training), and never load one from an untrusted source"
            ) from None
        raise FerError(
            f"{path}: {what} is truncated or corrupt ({_short(exc)}); re-run training or restore the file"
        ) from None
    except OSError as exc:
        raise FerError(
            f"{path}: cannot read the {what} ({exc.strerror or exc}); check the path and its permissions"
        ) from None
    except Exception as exc:  # noqa: BLE001 - zip/pickle readers raise RuntimeError, EOFError, KeyError, ...
        raise FerError(
            f"{path}: {what} is truncated or corrupt ({_short(exc)}); re-run training or restore the file"
        ) from None


#: Pickle opcodes that import or call something: what a file of tensors and plain data never needs outside
#: torch's own (allow-listed) rebuild functions.
_CODE_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"})


def _holds_objects(path: Path, exc: Exception) -> bool:
    """Whether ``torch.load(weights_only=True)`` refused ``path`` for importing or calling something, rather
    than for being damaged. torch names the refused global; a plain pickle (not torch's zip format) that
    it stops reading early is scanned for opcodes that import or call (``pickletools``: nothing is run)."""
    if "GLOBAL" in str(exc):
        return True
    try:
        if zipfile.is_zipfile(path):
            return False
        for op, _arg, _pos in pickletools.genops(path.read_bytes()):
            if op.name in _CODE_OPCODES:
                return True
    except Exception:  # noqa: BLE001 - a damaged pickle stops the scan: what was seen so far decides
        pass
    return False


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text.split(". ")[0]
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


def _check_payload(state: Any, path: Path, what: str, keys: tuple[str, ...]) -> dict:
    if not isinstance(state, dict):
        raise FerError(
            f"{path}: not a fer-sweep {what} (a {type(state).__name__}, not a mapping); "
            "use a file written by 'fer train'"
        )
    missing = [k for k in keys if k not in state]
    if missing:
        raise FerError(
            f"{path}: not a fer-sweep {what} (missing {', '.join(missing)}); use a file written by 'fer train'"
        )
    model = state["model"]
    if not isinstance(model, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in model.items()):
        raise FerError(f"{path}: not a fer-sweep {what} ('model' is not a state dict of tensors)")
    if not isinstance(state["config"], dict):
        raise FerError(f"{path}: not a fer-sweep {what} ('config' is not a mapping)")
    classes = state["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise FerError(f"{path}: not a fer-sweep {what} ('classes' is not a list of names)")
    if not isinstance(state["epoch"], int) or isinstance(state["epoch"], bool):
        raise FerError(f"{path}: not a fer-sweep {what} ('epoch' is not an integer)")
    return state


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint saved by ``train`` (``checkpoint.pt``, its folder, or the run folder), on CPU."""
    path = Path(path)
    if path.is_dir():  # a checkpoint folder, or a run folder holding checkpoint/
        path = path / CHECKPOINT_FILE if (path / CHECKPOINT_FILE).is_file() else path / "checkpoint" / CHECKPOINT_FILE
    if not path.is_file():
        raise FerError(f"{path}: no checkpoint there (expected a {CHECKPOINT_FILE} written by 'fer train')")
    state = _safe_load(path, "checkpoint")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise FerError(
            f"{path}: not a fer-sweep checkpoint (format {CHECKPOINT_FORMAT}); use a checkpoint written by 'fer train'"
        )
    state = _check_payload(state, path, "checkpoint", CHECKPOINT_KEYS)
    history = state["history"]
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise FerError(f"{path}: not a fer-sweep checkpoint ('history' is not a list of epochs' metrics)")
    if not 0 <= state["epoch"] == len(history):
        raise FerError(
            f"{path}: not a fer-sweep checkpoint (it is at epoch {state['epoch']} but holds {len(history)} epochs of "
            "history); use a checkpoint written by 'fer train'"
        )
    return state


def load_weights(path: str | os.PathLike) -> dict:
    """A ``best.pt`` / ``final.pt`` (or a ``checkpoint.pt``: it has the same keys), on CPU."""
    path = Path(path)
    if not path.is_file():
        raise FerError(f"{path}: not found (expected weights written by 'fer train' or 'fer retrain')")
    return _check_payload(_safe_load(path, "weights file"), path, "weights file", WEIGHTS_KEYS)
