"""The sweep's wall-clock budget (``--time-budget-s``): stop the whole sweep when it is spent, and say which
trials it cut.

    budget = TimeBudget(3600)
    RunConfig(stop=CombinedStopper(..., budget.stopper), callbacks=[..., budget.tracker])
    grid = tuner.fit()
    budget.cut  # folder names of the trials the budget stopped before they ended (or started)

The clock starts when Tune first asks the stopper (after Ray and the data are up) and runs for one run of
the sweep: a launch, a ``--resume`` or an ``--extend`` each get the budget again. When it is spent, Tune
stops every live trial at once (``Stopper.stop_all``): trials in flight keep the epochs they reported,
pending trials never start. Tune ends such trials without calling ``on_trial_complete`` (Ray 2.60,
``TuneController._stop_experiment_if_needed``), so the tracker records which trials *did* end on their own
or by a scheduler's or stopper's decision in this run; the others, once the budget fired, were cut:
``sweeps.results`` records them as ``out of time`` and ``PruningOptunaSearch.end_unfinished`` tells the
Optuna study (pruned with their per-epoch values, or failed when they reported nothing).

No trial starts that cannot finish: ``room_for(max_epochs)`` (the searcher asks it before each new trial)
is false once the budget left is shorter than ``max_epochs`` epochs at the median epoch time seen so far,
and the sweep then only lets its running trials end. A trial cut half-way cannot be exported and rarely
informs the search, so its compute is better left to what comes after the sweep (the final training).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.stopper import Stopper

__all__ = ["TimeBudget"]


class TimeBudget:
    """A budget of ``seconds`` of wall-clock time for one run of a sweep, its stopper and its trial tracker."""

    def __init__(self, seconds: float):
        if not seconds > 0:
            raise ValueError(f"a time budget must be > 0 seconds; got {seconds!r}")
        self.seconds = float(seconds)
        self.stopper = _BudgetStopper(self)
        self.tracker = _TrialTracker()
        self.started: float | None = None  # time.monotonic() of Tune's first check
        self.spent_at: float | None = None  # time.time() when the budget ran out (None: not spent)

    def room_for(self, epochs: int) -> bool:
        """Whether a trial of ``epochs`` epochs can still finish: the budget left (all of it before the clock
        starts) is at least ``epochs`` x the median epoch time reported so far (unknown: yes)."""
        if self.spent_at is not None:
            return False
        seconds = self.tracker.epoch_seconds
        if self.started is None or not seconds:
            return True
        left = self.seconds - (time.monotonic() - self.started)
        return left >= epochs * statistics.median(seconds)

    @property
    def spent(self) -> bool:
        return self.spent_at is not None

    def check(self) -> bool:
        """Whether the budget is spent now (the first check starts the clock)."""
        now = time.monotonic()
        if self.started is None:
            self.started = now
        if self.spent_at is None and now - self.started >= self.seconds:
            self.spent_at = time.time()
        return self.spent_at is not None

    @property
    def cut(self) -> set[str]:
        """The trial folder names (as ``ResultGrid``'s ``Result.path`` ends) of the trials the spent budget
        stopped in this run: running, or not started yet, when it ran out."""
        if not self.spent:
            return set()
        t = self.tracker
        return {folder for tid, folder in t.folders.items() if tid not in t.ended and tid in t.started | t.never_ran}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the run config with the experiment; a restored budget starts afresh.
        return {**self.__dict__, "started": None, "spent_at": None}


class _BudgetStopper(Stopper):
    """Stops every trial once the budget is spent; never one trial alone."""

    def __init__(self, budget: TimeBudget):
        self.budget = budget

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.budget.check()


class _TrialTracker(Callback):
    """Which trials started and which ended (completed, stopped by a decision, errored) in this run."""

    def __init__(self) -> None:
        self.started: set[str] = set()
        self.ended: set[str] = set()
        self.never_ran: set[str] = set()  # no result at all when the experiment ended
        self.folders: dict[str, str] = {}  # trial id -> its folder's name, when the experiment ended
        self.epoch_seconds: list[float] = []  # every reported epoch's duration (Tune's time_this_iter_s)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started.add(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        seconds = result.get("time_this_iter_s")
        if isinstance(seconds, (int, float)) and seconds > 0:
            self.epoch_seconds.append(float(seconds))

    def on_trial_restore(self, iteration, trials, trial, **info) -> None:
        self.started.add(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.ended.add(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.ended.add(trial.trial_id)

    def on_experiment_end(self, trials, **info) -> None:
        self.folders = {t.trial_id: Path(str(t.path)).name for t in trials}
        self.never_ran = {t.trial_id for t in trials if not t.last_result}

    def __getstate__(self) -> dict[str, Any]:
        return {"started": set(), "ended": set(), "never_ran": set(), "folders": {}, "epoch_seconds": []}
