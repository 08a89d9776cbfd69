"""A finished (or interrupted) sweep as tables: ``trials.parquet``, ``epochs.parquet`` and a printed summary.

``trials.parquet`` has a row per trial: ``trial_id``, every sampled hyperparameter (``config/<key>``),
``outcome`` (``experiment_store.Outcome``: completed, stopped by ASHA, collapsed, early_stopped, diverged,
errored, out of time, running),
``stop_reason``, ``peak``, ``peak_epoch``, ``final``, ``score``, ``epochs`` and ``time_s``; in a packed sweep
(``--pack K``) also ``pack_id``, ``pack_slot`` and ``pack_device``: which trials shared a GPU.
``epochs.parquet`` has a row per trial-epoch with every metric the trainer reported.
This module makes the rows; ``experiment_store`` writes and reads the files.
"""

from __future__ import annotations

import math
from typing import Any

from experiment_store.outcome import Outcome
from fer_core.numbers import fmt

#: Where a packed trial trained (``--pack K``; ``sweeps.pack_actor``): in its results and in trials.parquet.
PACK_FIELDS = ("pack_id", "pack_slot", "pack_device")

__all__ = ["PACK_FIELDS", "trial_rows", "epoch_rows", "latest_attempt", "format_summary", "classify"]

# Result keys Tune adds that the tables do not need.
# Tune's bookkeeping left out of epochs.parquet; ``timestamp`` (when the epoch was reported, Unix seconds)
# stays: it orders epochs across trials (what a sweep had found after N epochs of compute).
_TUNE_NOISE = {
    "done",
    "should_checkpoint",
    "node_ip",
    "hostname",
    "pid",
    "date",
    "experiment_tag",
    "checkpoint_dir_name",
    "time_since_restore",
    "iterations_since_restore",
    "time_this_iter_s",
}


def classify(
    last: dict, *, errored: bool, max_epochs: int, finished: bool = True, out_of_time: bool = False
) -> tuple[Outcome, str]:
    """(outcome, reason) of a trial from its last result (its ``trial_status`` is the trainer's status);
    ``out_of_time``: the sweep's time budget stopped it (``sweeps.time_budget``)."""
    if errored:
        return Outcome.ERRORED, "the trial raised an error (see its error.txt in the experiment folder)"
    status = last.get("trial_status")
    if status == "diverged":
        return Outcome.DIVERGED, str(last.get("message", "non-finite training loss"))
    epochs = int(last.get("epoch") or 0)
    ran_all = status == "completed" or epochs >= max_epochs
    note = f"; {last['collapse_reason']} (not stopped)" if last.get("collapsed") else ""
    if out_of_time and not ran_all and status != "early_stopped":  # it had not ended: no rule stopped it
        if not epochs:
            return Outcome.OUT_OF_TIME, "not started before the sweep's time budget ran out"
        return Outcome.OUT_OF_TIME, f"the sweep's time budget ran out after epoch {epochs} of {max_epochs}{note}"
    if last.get("collapsed") and not ran_all:
        return Outcome.COLLAPSED, str(last.get("collapse_reason", ""))
    if status == "early_stopped":
        return Outcome.EARLY_STOPPED, "the trainer's own early stopping"
    if ran_all:
        return Outcome.COMPLETED, f"ran all {max_epochs} epochs{note}"
    if not finished:
        return Outcome.RUNNING, f"at epoch {epochs}"
    return Outcome.STOPPED, f"stopped after epoch {epochs} of {max_epochs} (below its rung's cutoff)"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def trial_rows(trials: list[dict], max_epochs: int) -> list[dict]:
    """``trials``: dicts with trial_id, config, last (result), errored, finished, time_s and optionally
    out_of_time (the sweep's time budget stopped it)."""
    rows = []
    packed = any(PACK_FIELDS[0] in (t.get("last") or {}) for t in trials)
    for t in trials:
        last = t.get("last") or {}
        outcome, reason = classify(
            last,
            errored=t.get("errored", False),
            max_epochs=max_epochs,
            finished=t.get("finished", True),
            out_of_time=t.get("out_of_time", False),
        )
        epochs = int(last.get("epoch") or 0)
        if last.get("trial_status") == "diverged":
            epochs = max(epochs - 1, 0)
        row = {
            "trial_id": t["trial_id"],
            "outcome": outcome.value,
            "stop_reason": reason,
            "score": _clean(last.get("score")),
            "peak": _clean(last.get("peak")),
            "peak_epoch": last.get("peak_epoch"),
            "final": _clean(last.get("final")),
            "drop_from_peak": _clean(
                (last["peak"] - last["final"])
                if isinstance(last.get("peak"), float) and isinstance(last.get("final"), float)
                else None
            ),
            "epochs": epochs,
            "time_s": _clean(t.get("time_s")),
        }
        if packed:  # --pack K: where the trial trained (its last epoch's pack, slot and device)
            row.update({k: last.get(k) for k in PACK_FIELDS})
        for k, v in sorted((t.get("config") or {}).items()):
            row[f"config/{k}"] = v
        rows.append(row)
    return rows


def epoch_rows(trials: list[dict]) -> list[dict]:
    """One row per trial-epoch; a trial retried from an older checkpoint keeps only its latest attempt.

    When a node dies after a trial reported epoch 5 but before its epoch-5 checkpoint was kept, Tune
    restores epoch 3 and the trial reports 4 and 5 again: those reports supersede the lost ones.
    """
    rows = []
    for t in trials:
        for r in latest_attempt(t.get("history") or []):
            row = {"trial_id": t["trial_id"]}
            row.update(
                {
                    k: _clean(v)
                    for k, v in r.items()
                    if k not in _TUNE_NOISE and not k.startswith("config/") and k != "config"
                }
            )
            rows.append(row)
    return rows


def latest_attempt(history: list[dict]) -> list[dict]:
    """``history`` (results in the order reported) without the reports a restart superseded."""
    kept: list[dict] = []
    for r in history:
        epoch = r.get("epoch")
        if isinstance(epoch, (int, float)):
            while kept and isinstance(kept[-1].get("epoch"), (int, float)) and kept[-1]["epoch"] >= epoch:
                kept.pop()
        kept.append(r)
    return kept


def format_summary(rows: list[dict], top: int = 10, keys: list[str] | None = None) -> str:
    """Outcome counts and the top trials by score (``rows``: ``trial_rows``), as a text table."""
    counts = {o.value: sum(r.get("outcome") == o for r in rows) for o in Outcome}
    lines = [f"{len(rows)} trials: " + ", ".join(f"{n} {o}" for o, n in counts.items() if n)]
    ranked = sorted((r for r in rows if r.get("score") is not None), key=lambda r: -r["score"])[:top]
    if not ranked:
        lines.append("no trial reported a score")
        return "\n".join(lines)
    keys = keys or [k for k in rows[0] if k.startswith("config/")][:6]
    head = ["trial", "score", "peak", "@", "final", "epochs", "outcome"] + [k.removeprefix("config/") for k in keys]
    table = [head]
    for r in ranked:
        cells = [
            r["trial_id"],
            f"{r['score']:.4f}",
            fmt(r["peak"]),
            str(r.get("peak_epoch") or "-"),
            fmt(r["final"]),
            str(r["epochs"]),
            r["outcome"],
        ]
        for k in keys:
            cells.append(fmt(r.get(k), 3, spec="g"))
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines.append(f"top {len(ranked)} by score (mean val acc of the last epochs):")
    for j, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
