"""A running sweep's trials, from Ray Tune's own files in the experiment folder.

Every trial folder holds ``params.json`` (its sampled configuration) and ``result.json`` (one JSON
result per line, appended after each epoch). A trial is finished when its last result says
``done: true``; it errored when Tune wrote ``error.txt`` into its folder; otherwise it is
``running``. The rows come out in the same shape as ``trials.parquet`` / ``epochs.parquet``
(``sweeps.results.trial_rows`` / ``epoch_rows``), so the dashboard does not care which it read.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["read_tune_trials"]


def _results(path: Path) -> list[dict]:
    """The complete JSON lines of ``result.json`` (a line being written is skipped)."""
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return rows
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)           # Python's json reads the NaN Tune writes
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _params(folder: Path, results: list[dict]) -> dict:
    try:
        params = json.loads((folder / "params.json").read_text(encoding="utf-8"))
        if isinstance(params, dict):
            return params
    except (OSError, json.JSONDecodeError):
        pass
    return dict(results[-1].get("config") or {}) if results else {}


def read_tune_trials(exp_dir: str | Path, max_epochs: int | None = None) -> tuple[list[dict], list[dict]] | None:
    """(trial rows, epoch rows) from the trial folders in ``exp_dir``; ``None`` when it has none."""
    from sweeps.results import epoch_rows, trial_rows

    exp_dir = Path(exp_dir)
    folders = sorted(p for p in exp_dir.iterdir() if p.is_dir() and
                     ((p / "result.json").is_file() or (p / "params.json").is_file()))
    if not folders:
        return None
    trials = []
    for folder in folders:
        results = _results(folder / "result.json")
        last = dict(results[-1]) if results else {}
        errored = (folder / "error.txt").is_file()
        trial_id = str(last.get("trial_id") or folder.name)     # no result yet: the folder names it
        trials.append({"trial_id": trial_id, "config": _params(folder, results), "last": last,
                       "errored": errored, "finished": errored or bool(last.get("done")),
                       "time_s": last.get("time_total_s"), "history": results})
    # Without sweep.json the epoch budget is unknown: the trainable's own "completed" status decides.
    return trial_rows(trials, max_epochs or 10 ** 9), epoch_rows(trials)
