"""``confirm.parquet``: the runs of ``fer confirm`` (one row per trial and fresh seed) and their ranking.

``read_confirm`` reads the table of an experiment, ``summarize`` ranks its configurations by the mean
score over seeds (what ``fer export-best --by confirmed`` and the experiment page show),
``confirm_table`` is the table ``fer confirm`` writes.
"""

from __future__ import annotations

import math
import statistics

from fer_core.errors import FerError

from .store import CONFIRM_TABLE, ExperimentStore

__all__ = ["COLUMNS", "confirm_table", "read_confirm", "summarize"]

COLUMNS = ("trial_id", "seed", "score", "peak", "peak_epoch", "final", "epochs", "status", "time_s", "error")


def summarize(rows: list[dict]) -> list[dict]:
    """The ranking: one entry per trial_id (mean, std, min, max of its scores, n, failed), best first.

    Configurations without failed runs come first; within each group, by mean score, then trial id.
    """
    by_trial: dict[str, list[dict]] = {}
    for r in rows:
        by_trial.setdefault(r["trial_id"], []).append(r)
    out = []
    for trial_id, runs in by_trial.items():
        scores = [r["score"] for r in runs if isinstance(r.get("score"), (int, float)) and math.isfinite(r["score"])]
        out.append(
            {
                "trial_id": trial_id,
                "n": len(scores),
                "failed": len(runs) - len(scores),
                "mean": statistics.fmean(scores) if scores else None,
                "std": statistics.stdev(scores) if len(scores) > 1 else None,
                "min": min(scores) if scores else None,
                "max": max(scores) if scores else None,
                "seeds": sorted(int(r["seed"]) for r in runs),
            }
        )
    scored = [s for s in out if s["mean"] is not None]
    return sorted(scored, key=lambda s: (s["failed"] > 0, -s["mean"], s["trial_id"]))


def read_confirm(store, *, required: bool = True) -> list[dict] | None:
    """The rows of an experiment's ``confirm.parquet`` (``store``: an ``ExperimentStore`` or its URI).

    When ``fer confirm`` has not run: a clear error, or None with ``required=False``.
    """
    store = store if isinstance(store, ExperimentStore) else ExperimentStore(str(store))
    rows = store.read_rows(CONFIRM_TABLE)
    if rows is None and required:
        raise FerError(
            f"{store.file(CONFIRM_TABLE)} is missing: --by confirmed ranks the configurations re-trained "
            f"with fresh seeds; run 'fer confirm {store} --top 3 --seeds 3' first"
        )
    return rows


def confirm_table(rows: list[dict]):
    import pyarrow as pa

    schema = pa.schema(
        [
            ("trial_id", pa.string()),
            ("seed", pa.int64()),
            ("score", pa.float64()),
            ("peak", pa.float64()),
            ("peak_epoch", pa.int64()),
            ("final", pa.float64()),
            ("epochs", pa.int64()),
            ("status", pa.string()),
            ("time_s", pa.float64()),
            ("error", pa.string()),
        ]
    )
    return pa.Table.from_pylist([{k: r.get(k) for k in COLUMNS} for r in rows], schema=schema)
