"""A running sweep's trials, from Ray Tune's own files in the experiment folder.

Every trial folder holds ``params.json`` (its sampled configuration) and ``result.json`` (one JSON
result per line, appended after each epoch). A trial is finished when its last result says
``done: true``; it errored when Tune wrote ``error.txt`` into its folder; otherwise it is
``running``. The rows come out in the same shape as ``trials.parquet`` / ``epochs.parquet``
(``sweeps.results.trial_rows`` / ``epoch_rows``), so the dashboard does not care which it read.
"""

from __future__ import annotations

__all__ = ["read_tune_trials"]


def read_tune_trials(store, max_epochs: int | None = None) -> tuple[list[dict], list[dict]] | None:
    """(trial rows, epoch rows) from the trial folders of ``store`` (an ``ExperimentStore``); None without any."""
    from sweeps.results import epoch_rows, trial_rows

    folders = store.trial_folders()
    if not folders:
        return None
    trials = []
    for folder in folders:
        params, results, errored = store.read_trial(folder)
        last = dict(results[-1]) if results else {}
        trial_id = str(last.get("trial_id") or folder)  # no result yet: the folder names it
        trials.append(
            {
                "trial_id": trial_id,
                "config": params,
                "last": last,
                "errored": errored,
                "finished": errored or bool(last.get("done")),
                "time_s": last.get("time_total_s"),
                "history": results,
            }
        )
    # Without sweep.json the epoch budget is unknown: the trainable's own "completed" status decides.
    return trial_rows(trials, max_epochs or 10**9), epoch_rows(trials)
