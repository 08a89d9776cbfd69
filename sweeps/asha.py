"""ASHA that remembers: its rungs are rebuilt from the experiment's own trial results when it starts.

Ray Tune does not save a scheduler's state with the experiment (ray#30838): after ``Tuner.restore``
the ASHA scheduler comes back as it was pickled when the experiment started, with empty rungs, so
a resumed trial is compared against nothing and always promoted - a resumed sweep stops other
trials than an uninterrupted one would. And a sweep extended with more trials (``--extend``) would
rank its new trials among themselves only.

`ReplayingASHAScheduler` fixes both the same way: the first time a trial is added, it reads every
trial folder already in the experiment (``result.json``, through ``experiment_store``) and records
each past result in the rungs exactly as ASHA recorded it then (``_Bracket.on_result``, decisions
ignored). A rung's record of a trial does not depend on the order results arrived in, so the
rungs equal an uninterrupted run's; a restored trial re-reporting an epoch it reported before the
interruption finds itself recorded and is not judged twice, as ASHA itself does.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

from ray.tune.schedulers import ASHAScheduler

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

logger = logging.getLogger(__name__)

__all__ = ["ReplayingASHAScheduler"]


class _PastTrial:
    """What ``_Bracket.on_result`` needs of a trial: its id."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


class ReplayingASHAScheduler(ASHAScheduler):
    """``ASHAScheduler`` (one bracket) whose rungs start from the experiment's past results; see the module doc."""

    def __init__(self, *args, **kwargs):
        if kwargs.get("brackets", 1) != 1:
            raise ValueError("ReplayingASHAScheduler supports one bracket (the replay needs no bracket choice)")
        super().__init__(*args, **kwargs)
        self._replayed = False

    def on_trial_add(self, tune_controller, trial) -> None:
        if not getattr(self, "_replayed", False):
            self._replayed = True
            self.replay(_experiment_store(tune_controller))
        super().on_trial_add(tune_controller, trial)

    def replay(self, store) -> int:
        """Record the past results of every trial folder in ``store``; returns how many were recorded."""
        if store is None:
            return 0
        bracket = self._brackets[0]
        n = 0
        for folder in store.trial_folders():
            _, results, _ = store.read_trial(folder)
            for result in results:
                if self._time_attr not in result or self._metric not in result or "trial_id" not in result:
                    continue
                value = result[self._metric]
                if value is None:
                    continue
                past = cast("Trial", _PastTrial(str(result["trial_id"])))  # all on_result reads: trial_id
                bracket.on_result(past, result[self._time_attr], self._metric_op * value)
                n += 1
        if n:
            logger.info("ASHA: replayed %d past results of %s", n, store)
        return n


def _experiment_store(tune_controller):
    """The ``ExperimentStore`` of the experiment ``tune_controller`` runs (None when it cannot be told)."""
    from experiment_store import ExperimentStore
    from fer_core.storage import Location

    # Ray 2.60 hands schedulers a wrapper that logs a warning for each attribute outside its allow-list;
    # the experiment's storage is read from the controller it wraps.
    controller = vars(tune_controller).get("_tune_controller", tune_controller)
    storage = getattr(controller, "_storage", None)  # Ray 2.60: a StorageContext
    if storage is None:
        return None
    fs, path = storage.storage_filesystem, storage.experiment_fs_path
    return ExperimentStore(Location(fs, path, path))
