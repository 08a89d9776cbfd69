"""``PruningOptunaSearch``: Ray Tune's ``OptunaSearch`` telling Optuna which trials were cut short.

Ray's ``OptunaSearch`` tells Optuna every trial that ends as COMPLETE with its last reported value,
including trials that ASHA or a ``Stopper`` stopped after two epochs. TPE then ranks an epoch-2
accuracy against full-length runs, and ``study.best_trial`` can be a trial that never reached the
late epochs where FER models collapse. This searcher tells Optuna:

- **COMPLETE** with the objective value: the trial ran its full budget (``result[time_attr] >=
  max_t``), or its trainable returned by itself, or ``is_complete(result)`` says so;
- **PRUNED** with one intermediate value per reported step: Tune stopped it before that
  (a scheduler's STOP, a ``Stopper``), or it was stopped before it reported anything;
- **FAIL**: the trial errored, or a complete trial's objective is missing or not finite.

How Tune signals the end of a trial (Ray 2.60, ``tune/execution/tune_controller.py``): a trial that
a scheduler or a ``Stopper`` stops and a trial that finished both end with
``on_trial_complete(trial_id, result=last_result, error=False)``, and both results have
``done=True`` (Tune sets it on the result it stops on; when a function trainable returns, Tune
re-sends its last result with ``done=True``). The result dict cannot tell them apart. What differs
is the order of calls: Tune hands a result to the searcher's ``on_trial_result`` only when it lets
the trial go on, so the result a trial is *stopped* on reaches the searcher only through
``on_trial_complete``, while a trainable that returned had its last result through
``on_trial_result`` already. This searcher therefore reports the completion result's value too, and
counts "the last result was already seen" as the trial having ended on its own. A class
``Trainable`` whose ``step`` returns ``done=True`` early looks like a stopped trial: pass
``is_complete`` for it. Errored trials arrive as ``on_trial_complete(trial_id, error=True)``.

What TPE does with pruned trials (Optuna 5: ``optuna/samplers/_tpe/sampler.py``, ``_split_trials``):
the "good" group is filled with the best COMPLETE trials first; PRUNED trials enter it only when
there are fewer COMPLETE trials than the group's size (``gamma(n) = min(ceil(0.1 n), 25)`` of the
n finished trials), ranked by how far they got (deepest step first), then by their last
intermediate value; the rest, and RUNNING trials (``constant_liar=True`` is the default in
Optuna 5), are in the "bad" group.
So an early-stopped trial never outranks a finished one, but its parameters still count as tried.
``study.tell(..., state=PRUNED)`` also stores the last intermediate value as the trial's ``value``
(Optuna's convention); ``study.best_trial`` looks at COMPLETE trials only.

Pitfall: trials cut by an experiment-wide stop (``Stopper.stop_all()``, ``time_budget_s``) never
reach ``on_trial_complete`` in Ray 2.60 and stay RUNNING in the study; call ``end_unfinished()``
after ``Tuner.fit`` (the sweep's ``--time-budget-s`` does) to tell them PRUNED (or FAIL when they
reported nothing).

Example::

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from sweeps.optuna_search import PruningOptunaSearch

    def space(trial):
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        if trial.suggest_categorical("loss", ["ce", "focal"]) == "focal":
            trial.suggest_float("focal_gamma", 0.5, 3.0)

    search = PruningOptunaSearch(space, metric="val_acc", mode="max", seed=0, max_t=30)
    tuner = tune.Tuner(train_fer, param_space={},
                       tune_config=tune.TuneConfig(search_alg=search, num_samples=64,
                                                   scheduler=ASHAScheduler(metric="val_acc",
                                                                           mode="max", max_t=30)))
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable
from typing import Any, cast

import optuna
from ray import cloudpickle
from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)

_TrialState = optuna.trial.TrialState


class PruningOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells Optuna early-stopped trials as PRUNED, not COMPLETE.

    Every result is reported to the trial's Optuna twin as ``report(result[intermediate_key],
    step=result[time_attr])``; when the trial ends it is told COMPLETE (with
    ``result[objective_key]``), PRUNED or FAIL by the rules in the module docstring.

    Args:
        space, metric, mode, points_to_evaluate, sampler, study_name, storage, seed,
            evaluated_rewards: as ``ray.tune.search.optuna.OptunaSearch`` (``space`` may be a
            define-by-run function). Single objective only: ``metric`` and ``mode`` are strings.
        max_t: the full budget, in ``time_attr`` units (epochs when each result is one epoch). A
            trial whose last result has ``result[time_attr] >= max_t`` ran its full budget. Use the
            scheduler's ``max_t``.
        time_attr: the result key that counts progress and gives the Optuna step
            (``"training_iteration"``: Tune's count of results, 1 for the first).
        objective_key: the result key told to Optuna as a complete trial's value (a stability
            score, best-epoch accuracy, ...). Default: ``metric``.
        intermediate_key: the result key reported each step. Default: ``metric``.
        is_complete: optional ``is_complete(result) -> bool`` for trials that end early for their
            own reason and say so in their last result (``lambda r: r.get("early_stopped")``).
            Called only when the other rules say "stopped early"; True makes the trial COMPLETE.

    Values that are missing or not finite are not reported as intermediate values (Optuna would
    store NaN, which TPE ranks worst). A step already reported (a trial restored from a checkpoint
    reports it again) is skipped.
    """

    def __init__(
        self,
        space: dict[str, Any] | list | Callable[[optuna.Trial], dict | None] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict] | None = None,
        sampler: optuna.samplers.BaseSampler | None = None,
        study_name: str | None = None,
        storage: optuna.storages.BaseStorage | None = None,
        seed: int | None = None,
        evaluated_rewards: list | None = None,
        *,
        max_t: int,
        time_attr: str = "training_iteration",
        objective_key: str | None = None,
        intermediate_key: str | None = None,
        is_complete: Callable[[dict], bool] | None = None,
        may_start: Callable[[], bool] | None = None,
    ):
        if isinstance(max_t, bool) or not isinstance(max_t, numbers.Integral) or max_t < 1:
            raise ValueError(f"max_t must be a positive int (the full budget in {time_attr!r} units); got {max_t!r}")
        if isinstance(metric, (list, tuple)) or isinstance(mode, (list, tuple)):
            raise ValueError(
                "PruningOptunaSearch supports a single objective (Optuna's report() "
                f"does not support several); got metric={metric!r}, mode={mode!r}"
            )
        if is_complete is not None and not callable(is_complete):
            raise ValueError(f"is_complete must be a callable taking the last result; got {is_complete!r}")
        self._max_t: int = int(max_t)
        self._time_attr: str = time_attr
        self._objective_key: str | None = objective_key
        self._intermediate_key: str | None = intermediate_key
        self._is_complete: Callable[[dict], bool] | None = is_complete
        # Whether a new trial may start (a time budget's "is there room for one more?"); once it says no, the
        # searcher is finished: Tune lets the running trials end and starts no other.
        self._may_start: Callable[[], bool] | None = may_start
        # trial_id -> steps reported to Optuna, and the step of the last result that came through
        # on_trial_result (to tell "returned by itself" from "stopped by Tune").
        self._reported_steps: dict[str, set[int]] = {}
        self._last_seen_step: dict[str, int] = {}
        super().__init__(
            space=space,
            metric=metric,
            mode=mode,
            points_to_evaluate=points_to_evaluate,
            sampler=sampler,
            study_name=study_name,
            storage=storage,
            seed=seed,
            evaluated_rewards=evaluated_rewards,
        )

    @property
    def _study(self) -> optuna.Study:
        """OptunaSearch's study (``_ot_study``, typed None there: it is set with the search space)."""
        return cast(optuna.Study, self._ot_study)

    @property
    def objective_key(self) -> str | None:
        """The result key told to Optuna as a complete trial's value."""
        return self._objective_key or self.metric

    @property
    def intermediate_key(self) -> str | None:
        """The result key reported to Optuna at every step."""
        return self._intermediate_key or self.metric

    def suggest(self, trial_id: str) -> dict | None:
        if self._may_start is not None and trial_id not in self._ot_trials and not self._may_start():
            return self.FINISHED  # type: ignore[return-value]  # Tune's documented "no more trials" string
        return super().suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials:
            logger.warning(f"Received a result for trial {trial_id}, which already finished.")
            return
        step = self._report(trial_id, result)
        if step is not None:
            self._last_seen_step[trial_id] = step

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials:
            logger.warning(f"Received a second completion for trial {trial_id}; ignored.")
            return
        try:
            self._complete(trial_id, result, error)
        except optuna.exceptions.UpdateFinishedTrialError:
            # A persistent study already holds this trial's end: it finished after the experiment snapshot
            # the sweep was resumed from, and Tune re-ran its last epoch from the checkpoint (its report
            # raises here; its tell is skipped: skip_if_finished).
            logger.info(f"Trial {trial_id} had already finished in the study; its state is kept.")
        self._completed_trials.add(trial_id)
        self._reported_steps.pop(trial_id, None)
        self._last_seen_step.pop(trial_id, None)

    def end_unfinished(self) -> int:
        """Tell Optuna the end of every trial this searcher suggested that Tune never completed: PRUNED with
        the per-epoch values it reported, FAIL when it reported none (it never ran). For trials an
        experiment-wide stop cut (a time budget), which skip ``on_trial_complete``; returns how many."""
        n = 0
        for trial_id, ot_trial in list(self._ot_trials.items()):
            if trial_id in self._completed_trials:
                continue
            state = _TrialState.PRUNED if self._reported_steps.get(trial_id) else _TrialState.FAIL
            try:
                self._study.tell(ot_trial, state=state, skip_if_finished=True)
            except optuna.exceptions.UpdateFinishedTrialError:  # pragma: no cover - skip_if_finished covers it
                pass
            self._completed_trials.add(trial_id)
            self._reported_steps.pop(trial_id, None)
            self._last_seen_step.pop(trial_id, None)
            n += 1
        return n

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._fail_orphans()

    def _fail_orphans(self) -> None:
        """FAIL the study's RUNNING trials that no Tune trial owns.

        With a persistent study (RDB, journal), a trial the searcher suggested just before the driver
        died, after Tune's last experiment snapshot, stays RUNNING in the study but is not in the
        restored searcher or in Tune's state. TPE would count it as running (``constant_liar``) and
        propose something else than an uninterrupted sweep; failed trials it ignores.
        """
        known = {t.number for t in self._ot_trials.values()}
        for t in self._study.get_trials(deepcopy=False, states=(_TrialState.RUNNING,)):
            if t.number not in known:
                self._study.tell(t.number, state=_TrialState.FAIL)

    def _complete(self, trial_id: str, result: dict | None, error: bool) -> None:
        ot_trial = self._ot_trials[trial_id]
        if error:
            self._study.tell(ot_trial, state=_TrialState.FAIL, skip_if_finished=True)
        elif not result:
            # Stopped while pending or paused, before it reported anything.
            self._study.tell(ot_trial, state=_TrialState.PRUNED, skip_if_finished=True)
        else:
            # The result Tune stopped the trial on never went through on_trial_result.
            step = self._report(trial_id, result)
            if not self._ran_to_completion(trial_id, result, step):
                self._study.tell(ot_trial, state=_TrialState.PRUNED, skip_if_finished=True)
            else:
                value = _finite(result.get(self.objective_key))
                if value is None:
                    logger.warning(
                        f"Trial {trial_id} finished without a finite "
                        f"{self.objective_key!r} (got "
                        f"{result.get(self.objective_key)!r}); told Optuna FAIL."
                    )
                    self._study.tell(ot_trial, state=_TrialState.FAIL, skip_if_finished=True)
                else:
                    self._study.tell(ot_trial, value, state=_TrialState.COMPLETE, skip_if_finished=True)

    def _ran_to_completion(self, trial_id: str, result: dict, step: int | None) -> bool:
        # Full budget.
        if step is not None and step >= self._max_t:
            return True
        # Its trainable returned by itself: Tune re-sent the last result it had already passed on.
        if step is not None and self._last_seen_step.get(trial_id) == step:
            return True
        # The sweep's own rule (a class Trainable's done=True, a trainer's early stopping).
        return self._is_complete is not None and bool(self._is_complete(result))

    def _report(self, trial_id: str, result: dict) -> int | None:
        """Report ``result``'s intermediate value to Optuna; return its step (None without one)."""
        step = result.get(self._time_attr)
        if step is None:
            return None
        step = int(step)
        value = _finite(result.get(self.intermediate_key))
        reported = self._reported_steps.setdefault(trial_id, set())
        if value is not None and step not in reported:
            try:
                self._ot_trials[trial_id].report(value, step)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # finished in a persistent study before a resume (see on_trial_complete)
            reported.add(step)
        return step

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Tune's atomic save (write a temp file, rename it into place), with the temp file beside
        ``checkpoint_dir`` instead of inside it. Tune uploads that folder to remote storage in the
        background while it saves the searcher; a temp file that vanishes mid-upload made the upload
        fail with a logged traceback (seen on S3 under load)."""
        import os
        import tempfile

        parent = os.path.dirname(os.path.abspath(checkpoint_dir))
        fd, tmp = tempfile.mkstemp(prefix=".searcher-state-", suffix=".tmp", dir=parent)
        os.close(fd)
        try:
            self.save(tmp)
            os.replace(tmp, os.path.join(checkpoint_dir, self.CKPT_FILE_TMPL.format(session_str)))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def save(self, checkpoint_path: str) -> None:
        # cloudpickle, so that a define-by-run space or an is_complete defined in a function or as a
        # lambda survives Tune's experiment checkpoints; OptunaSearch.restore reads it with pickle.
        # Not the time budget's may_start: it belongs to this run (a resumed run restores the searcher from
        # here, and its budget, a new one, then only stops trials where they are).
        with open(checkpoint_path, "wb") as f:
            cloudpickle.dump({**self.__dict__, "_may_start": None}, f)


def _finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, not a number, NaN or infinite."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
