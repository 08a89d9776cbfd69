"""A trial's outcome in a sweep experiment: the ``outcome`` column of ``trials.parquet``.

``Outcome`` is a ``StrEnum``: a member is its text (``Outcome.COMPLETED == "completed"``), and the
tables and ``sweep.json`` hold the plain text (rows are built with ``.value``).

Not the trainer's own run status (``fer_core``'s ``TrainResult.status`` and the ``trial_status`` a
trial reports: completed, early_stopped, diverged, running), which ``sweeps.results.classify``
reads, together with ASHA and the collapse rule, to decide a trial's outcome.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Outcome", "MAIN_OUTCOMES"]


class Outcome(StrEnum):
    """The outcomes, in the order tables and summaries list them."""

    COMPLETED = "completed"  # ran its full epoch budget
    STOPPED = "stopped by ASHA"  # below its rung's cutoff
    COLLAPSED = "collapsed"  # stopped by the collapse rule
    EARLY_STOPPED = "early_stopped"  # the trainer's own early stopping
    DIVERGED = "diverged"  # non-finite (or runaway) training loss
    ERRORED = "errored"  # the trial raised an error
    OUT_OF_TIME = "out of time"  # cut (or never started) when the sweep's --time-budget-s ran out
    RUNNING = "running"  # no final result yet (a live or interrupted sweep)


#: Always shown (even at zero) in an experiment's outcome counts; the others only when they occur.
MAIN_OUTCOMES = (Outcome.COMPLETED, Outcome.STOPPED, Outcome.COLLAPSED, Outcome.DIVERGED, Outcome.ERRORED)
