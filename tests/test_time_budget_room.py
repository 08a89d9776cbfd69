"""``--time-budget-s`` without Ray: no trial starts that the budget left cannot finish."""

from __future__ import annotations

import optuna
from ray.tune.search import Searcher

from sweeps import time_budget
from sweeps.optuna_search import PruningOptunaSearch
from sweeps.time_budget import TimeBudget


def test_no_trial_starts_that_the_budget_left_cannot_finish(monkeypatch):
    """``room_for``: yes before the clock starts and before any epoch is timed; then only while the budget left
    holds ``epochs`` x the median epoch; the searcher it guards finishes (Tune starts no other trial)."""
    now = [1000.0]
    monkeypatch.setattr(time_budget.time, "monotonic", lambda: now[0])
    budget = TimeBudget(100)
    assert budget.room_for(4)  # the clock has not started
    budget.check()  # Tune's first check starts it
    assert budget.room_for(4)  # no epoch timed yet
    for seconds in (10.0, 12.0, 11.0, 0.0, None):  # 0 and missing: not an epoch time
        budget.tracker.on_trial_result(0, [], None, {"time_this_iter_s": seconds})
    assert budget.tracker.epoch_seconds == [10.0, 12.0, 11.0]
    now[0] += 55  # 45 s left, a 4-epoch trial takes 44 s at the median 11 s
    assert budget.room_for(4) and not budget.room_for(5)
    now[0] += 2
    assert not budget.room_for(4)

    space = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    may = [True]
    searcher = PruningOptunaSearch(space=space, metric="score", mode="max", max_t=4, may_start=lambda: may[0])
    assert isinstance(searcher.suggest("t1"), dict)
    may[0] = False
    assert searcher.suggest("t2") == Searcher.FINISHED
    assert isinstance(searcher.suggest("t1"), dict)  # a trial already started is never refused
