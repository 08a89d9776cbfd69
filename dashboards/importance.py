"""Hyperparameter importance with Optuna's fANOVA, on a study rebuilt from the completed trials.

Each completed trial becomes an Optuna ``FrozenTrial`` (``optuna.trial.create_trial``) with its
sampled values, the distributions of ``sweep.json``'s space and ``value = score``. fANOVA needs every
assessed parameter in every trial it uses, so conditional parameters (``when:``, e.g. focal's gamma
and alpha) are handled in groups: one importance over the unconditional parameters and all completed
trials, then one per condition over the trials where that condition holds (its parameters exist),
with the unconditional ones beside them.

Big sweeps: fANOVA's forest costs grow faster than the number of trials, and on a 2,000-trial sweep
the fit took most of the page's build time. Each group is therefore fit on at most ``MAX_TRIALS``
of its trials, a random sample drawn with a fixed seed (the same page on every build); the page says
so ("fit on 400 of 1,780 completed trials"). ``max_trials=0`` fits on every trial.
"""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import dataclass, field

from experiment_store import Outcome
from sweeps.experiment import Experiment
from sweeps.space import Param

__all__ = ["Importance", "param_importances", "MIN_TRIALS", "MAX_TRIALS"]

MIN_TRIALS = 3
#: Trials a group's fANOVA fit uses at most (a seeded random sample of them); 0 = all.
MAX_TRIALS = 400
SAMPLE_SEED = 0


@dataclass
class Importance:
    title: str  # which trials and parameters
    trials: int
    values: dict[str, float] = field(default_factory=dict)  # param -> importance (sums to 1)
    note: str = ""  # why there are no values, when there are none
    of: int = 0  # the group's trials when ``trials`` is a sample of them

    @property
    def sampled(self) -> bool:
        return self.of > self.trials


def _distribution(p: Param):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.type == "categorical":
        return CategoricalDistribution(list(p.choices))
    assert p.low is not None and p.high is not None, f"{p.name}: a numeric parameter has bounds"
    if p.type == "int":
        return IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
    return FloatDistribution(float(p.low), float(p.high), log=p.log, step=p.step)


def _study(exp: Experiment, params: list[Param], trials: list[dict]):
    import optuna

    dists = {p.name: _distribution(p) for p in params}
    study = optuna.create_study(direction="maximize")
    for t in trials:
        values = {p.name: exp.value(t, p.name) for p in params}
        try:
            study.add_trial(optuna.trial.create_trial(params=values, distributions=dists, value=float(t["score"])))
        except ValueError:  # a value outside the recorded space (the space file changed): leave it out
            continue
    return study


def _sample(trials: list[dict], max_trials: int) -> list[dict]:
    """At most ``max_trials`` of ``trials`` (in their order), drawn with a fixed seed; all when 0 or fewer."""
    if max_trials <= 0 or len(trials) <= max_trials:
        return trials
    keep = sorted(random.Random(SAMPLE_SEED).sample(range(len(trials)), max_trials))
    return [trials[i] for i in keep]


def _evaluate(exp: Experiment, title: str, params: list[Param], trials: list[dict], max_trials: int) -> Importance:
    found = _fit(exp, title, params, _sample(trials, max_trials))
    if found.values and len(trials) > found.trials:
        found.of = len(trials)
    return found


def _fit(exp: Experiment, title: str, params: list[Param], trials: list[dict]) -> Importance:
    import optuna

    varied = [p for p in params if len({repr(exp.value(t, p.name)) for t in trials}) > 1]
    if len(trials) < MIN_TRIALS:
        return Importance(
            title, len(trials), note=f"only {len(trials)} completed trial(s); fANOVA needs at least {MIN_TRIALS}"
        )
    if not varied:
        return Importance(title, len(trials), note="no hyperparameter varies across these trials")
    study = _study(exp, params, trials)
    n = len(study.trials)
    if n < MIN_TRIALS:
        return Importance(title, n, note=f"only {n} trial(s) fit the recorded space; fANOVA needs {MIN_TRIALS}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=[p.name for p in varied]
            )
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return Importance(title, n, note=f"fANOVA could not be computed ({exc})")
    values = {k: float(v) for k, v in values.items() if math.isfinite(v)}
    return Importance(title, n, values=values)


def param_importances(exp: Experiment, max_trials: int = MAX_TRIALS) -> list[Importance]:
    """The unconditional group first, then one group per ``when:`` condition (see the module docstring);
    each fit on at most ``max_trials`` of its trials (0: all)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    completed = [
        t
        for t in exp.trials
        if t.get("outcome") == Outcome.COMPLETED and isinstance(t.get("score"), float) and math.isfinite(t["score"])
    ]
    if exp.space_inferred:
        return [
            Importance(
                "all parameters",
                len(completed),
                note="the search space is not known until sweep.json is written (at the end of the sweep)",
            )
        ]
    plain = [p for p in exp.params if not p.when]
    out = [_evaluate(exp, "all completed trials, unconditional parameters", plain, completed, max_trials)]
    groups: dict[str, list[Param]] = {}
    for p in exp.params:
        if p.when:
            key = " and ".join(f"{k} in {list(v)}" for k, v in sorted(p.when))
            groups.setdefault(key, []).append(p)
    for key, cond in groups.items():
        subset = [t for t in completed if all(exp.value(t, p.name) is not None for p in cond)]
        out.append(
            _evaluate(
                exp,
                f"completed trials where {key} (where {', '.join(p.name for p in cond)} exist)",
                plain + cond,
                subset,
                max_trials,
            )
        )
    return out
