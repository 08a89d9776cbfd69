"""The capstone notebook's model ladder (0 -> A -> B -> C -> B+ -> B++ -> D), trained with its settings.

    fer ladder --data runs/default/data --out runs/ladder [--epochs 20] [--models a,bplusplus]

Each rung is ``config_from_preset("fer_cnn_<x>")``: the notebook's architecture and its training
recipe (optimizer, lr, schedule, L2, label smoothing, focal loss, augmentation, early stopping). The
table has the notebook's columns plus what the notebook could not see at a glance: the final epoch's
accuracy against the peak (collapse) and the train-val gap at the peak.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..atomic import write_text
from ..jsonio import dumps
from ..numbers import pct
from ..progress import say
from .config import config_from_preset, parse_overrides
from .data import TrainData, load_train_data
from .trainer import train

__all__ = ["LADDER", "run_ladder", "format_ladder", "select_rungs"]

#: (preset, label, key technique) in the notebook's order.
LADDER = (
    ("fer_cnn_0", "Model 0", "baseline (BN before ReLU, plateau lr)"),
    ("fer_cnn_a", "Model A", "clean stratified data"),
    ("fer_cnn_b", "Model B", "+ soft augmentation"),
    ("fer_cnn_c", "Model C", "+ strong L2 (1e-3, dense), cosine"),
    ("fer_cnn_bplus", "Model B+", "+ light L2, label smoothing"),
    ("fer_cnn_bplusplus", "Model B++", "+ focal loss"),
    ("fer_cnn_d", "Model D", "light L2 + smoothing, constant lr + plateau"),
)


def select_rungs(models: list[str] | None) -> list[tuple[str, str, str]]:
    if not models:
        return list(LADDER)
    by_key = {}
    for preset, label, tech in LADDER:
        for key in (preset, preset.removeprefix("fer_cnn_"), label.lower().removeprefix("model ").replace("+", "plus")):
            by_key[key] = (preset, label, tech)
    out = []
    for m in models:
        key = m.strip().lower().replace("+", "plus")
        if key not in by_key:
            from ..errors import FerError

            rungs = ", ".join(p.removeprefix("fer_cnn_") for p, _, _ in LADDER)
            raise FerError(f"--models: unknown rung {m!r}; rungs: {rungs}")
        out.append(by_key[key])
    return out


def run_ladder(
    data_uri: str,
    out_dir: str | Path,
    *,
    models: list[str] | None = None,
    epochs: int | None = None,
    overrides: Sequence[str] = (),
    data: TrainData | None = None,
    progress: bool | None = None,
) -> list[dict]:
    """Train each selected rung into ``out_dir/<preset>`` and return one summary row per rung."""
    rungs = select_rungs(models)
    extra = parse_overrides(overrides)
    if data is None:
        data = load_train_data(data_uri, splits=("train", "val"))
    rows = []
    out_dir = Path(out_dir)
    for i, (preset, label, tech) in enumerate(rungs, 1):
        values = {"data": str(data_uri), **extra}
        if epochs is not None:
            values["epochs"] = epochs
        cfg = config_from_preset(preset, **values)
        say(
            f"[{i}/{len(rungs)}] {label} ({preset}): {cfg.epochs} epochs, lr {cfg.lr:g}, loss {cfg.loss}, "
            f"l2 {cfg.l2:g}, augment {cfg.augment}"
        )
        result = train(cfg, data, run_dir=out_dir / preset, progress=progress)
        hist = result.history
        best = hist[result.best_epoch - 1] if hist and result.best_epoch else {}
        final = result.final
        rows.append(
            {
                "preset": preset,
                "model": label,
                "technique": tech,
                "status": result.status,
                "epochs": len(hist),
                "best_val_acc": result.best_val_acc,
                "best_epoch": result.best_epoch,
                "train_acc_at_best": best.get("train_acc"),
                "gap_at_best": (best["train_acc"] - best["val_acc"]) if best else None,
                "final_val_acc": final.get("val_acc"),
                "drop_from_peak": (result.best_val_acc - final["val_acc"]) if final else None,
            }
        )
    write_text(out_dir / "ladder.json", dumps(rows, indent=2) + "\n")
    write_text(out_dir / "ladder.md", format_ladder(rows) + "\n")
    return rows


def format_ladder(rows: list[dict]) -> str:
    """The notebook's "Final Results Summary" table, with peak vs final and the gap."""
    head = (
        "| Model | Validation Accuracy (peak) | Peak epoch | Train-val gap at peak | Final val acc "
        "| Drop from peak | Status | Key Technique |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    best = max((r["best_val_acc"] for r in rows), default=None)
    for r in rows:
        trophy = " (best)" if best is not None and r["best_val_acc"] == best and len(rows) > 1 else ""
        gap = pct(r["gap_at_best"], 1, sign=True)
        drop = "-" if r["drop_from_peak"] is None else f"{100 * r['drop_from_peak']:.2f} pts"
        lines.append(
            f"| {r['model']} | {pct(r['best_val_acc'])}{trophy} | {r['best_epoch']}/{r['epochs']} | {gap} "
            f"| {pct(r['final_val_acc'])} | {drop} | {r['status']} | {r['technique']} |"
        )
    return "\n".join(lines)
