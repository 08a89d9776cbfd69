"""PruningOptunaSearch: early-stopped trials reach Optuna as PRUNED, full-length ones as COMPLETE.

The unit tests drive the searcher the way Tune 2.60 does (``tune_controller.py``): each result
the trial may go on after goes to ``on_trial_result``; the result a scheduler or Stopper stops it
on goes only to ``on_trial_complete`` (with ``done=True``); a trainable that returns by itself has
its last result re-sent to ``on_trial_complete``; an error is ``on_trial_complete(id, error=True)``.
"""

from __future__ import annotations

import math
import pickle
import warnings

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from sweeps.optuna_search import PruningOptunaSearch

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "dropout": FloatDistribution(0.0, 0.5)}


def searcher(**kwargs) -> PruningOptunaSearch:
    kwargs = {"space": SPACE, "metric": "val_acc", "mode": "max", "max_t": 5, "seed": 0, **kwargs}
    return PruningOptunaSearch(**kwargs)


def result(step: int, val_acc: float, **extra) -> dict:
    return {"training_iteration": step, "val_acc": val_acc, **extra}


def run_like_tune(s, trial_id: str, accs: list[float], *, ended: str, **extra) -> dict:
    """Feed epochs 1..len(accs) as Tune would; ``ended`` is "stopped" (by a scheduler/Stopper on
    the last result) or "itself" (the trainable returned after the last result)."""
    assert ended in ("stopped", "itself")
    s.suggest(trial_id)
    results = [result(i, acc, **extra) for i, acc in enumerate(accs, start=1)]
    passed_on = results if ended == "itself" else results[:-1]
    for r in passed_on:
        s.on_trial_result(trial_id, r)
    last = {**results[-1], "done": True}
    s.on_trial_complete(trial_id, last)
    return last


def ot_trial(s, number: int = 0) -> optuna.trial.FrozenTrial:
    return s._ot_study.trials[number]


def test_trial_stopped_at_epoch_2_is_pruned_with_its_intermediate_values():
    s = searcher()
    run_like_tune(s, "t1", [0.40, 0.55], ended="stopped")
    t = ot_trial(s)
    assert t.state == TrialState.PRUNED
    assert t.intermediate_values == {1: 0.40, 2: 0.55}
    # Optuna's tell(state=PRUNED) stores the last intermediate value as the value; it is not a
    # candidate for best_trial, which looks at COMPLETE trials only.
    assert t.value == 0.55
    with pytest.raises(ValueError):
        s._ot_study.best_trial


def test_trial_that_ran_its_full_budget_is_complete_with_the_objective_key():
    s = searcher(objective_key="score")
    accs = [0.40, 0.60, 0.70, 0.65, 0.62]
    run_like_tune(s, "t1", accs, ended="stopped", score=0.66)  # ASHA stops it at max_t
    t = ot_trial(s)
    assert t.state == TrialState.COMPLETE
    assert t.value == 0.66  # result["score"], not the last val_acc
    assert t.intermediate_values == dict(enumerate(accs, start=1))


def test_trainable_that_returned_by_itself_early_is_complete():
    s = searcher()
    run_like_tune(s, "t1", [0.40, 0.60, 0.58], ended="itself")
    t = ot_trial(s)
    assert t.state == TrialState.COMPLETE
    assert t.value == 0.58
    assert t.intermediate_values == {1: 0.40, 2: 0.60, 3: 0.58}


def test_is_complete_marks_a_trial_ending_for_its_own_reason_complete():
    s = searcher(is_complete=lambda r: r.get("early_stopped", False))
    run_like_tune(s, "own", [0.4, 0.6, 0.5], ended="stopped", early_stopped=True)
    run_like_tune(s, "cut", [0.4, 0.6, 0.5], ended="stopped", early_stopped=False)
    assert [t.state for t in s._ot_study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]


def test_errored_trial_is_fail():
    s = searcher()
    s.suggest("t1")
    s.on_trial_result("t1", result(1, 0.4))
    s.on_trial_complete("t1", error=True)
    t = ot_trial(s)
    assert t.state == TrialState.FAIL
    assert t.value is None
    assert t.intermediate_values == {1: 0.4}


def test_trial_stopped_before_reporting_is_pruned_without_value():
    s = searcher()
    s.suggest("t1")
    s.on_trial_complete("t1")  # stopped while PENDING/PAUSED: no result
    t = ot_trial(s)
    assert t.state == TrialState.PRUNED
    assert t.value is None and t.intermediate_values == {}


def test_non_finite_values_are_not_reported_and_a_nan_objective_fails():
    s = searcher()
    run_like_tune(s, "pruned", [0.4, math.nan, math.inf], ended="stopped")
    run_like_tune(s, "nan", [0.4, 0.5, 0.6, 0.7, math.nan], ended="stopped")
    pruned, nan = s._ot_study.trials
    assert pruned.state == TrialState.PRUNED
    assert pruned.intermediate_values == {1: 0.4}
    assert pruned.value == 0.4  # the last finite value, not NaN
    assert nan.state == TrialState.FAIL
    assert nan.intermediate_values == {1: 0.4, 2: 0.5, 3: 0.6, 4: 0.7}


def test_a_step_reported_twice_is_skipped_quietly():
    s = searcher()
    s.suggest("t1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns on a second report() at the same step
        s.on_trial_result("t1", result(1, 0.4))
        s.on_trial_result("t1", result(1, 0.9))  # replayed after a restore from checkpoint
    assert ot_trial(s).intermediate_values == {1: 0.4}


def test_define_by_run_space_with_a_conditional_parameter():
    def space(trial):
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        if trial.suggest_categorical("loss", ["ce", "focal"]) == "focal":
            trial.suggest_float("focal_gamma", 0.5, 3.0)

    s = searcher(space=space, sampler=optuna.samplers.TPESampler(n_startup_trials=3, seed=0))
    losses = set()
    for i in range(12):
        cfg = s.suggest(f"t{i}")
        losses.add(cfg["loss"])
        assert ("focal_gamma" in cfg) == (cfg["loss"] == "focal")
        accs = [0.3 + 0.05 * e for e in range(1, 6)]
        if i % 2:
            run_like_tune(s, f"t{i}", accs[:2], ended="stopped")
        else:
            run_like_tune(s, f"t{i}", accs, ended="stopped")
    assert losses == {"ce", "focal"}
    states = [t.state for t in s._ot_study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED] * 6
    for t in s._ot_study.trials:
        assert ("focal_gamma" in t.params) == (t.params["loss"] == "focal")
        assert t.distributions["loss"] == CategoricalDistribution(["ce", "focal"])


def test_save_restore_mid_study_keeps_the_study(tmp_path):
    s = searcher(objective_key="score", is_complete=lambda r: r.get("early_stopped", False))
    run_like_tune(s, "done", [0.4, 0.5, 0.6, 0.7, 0.6], ended="stopped", score=0.65)
    cfg = s.suggest("running")
    s.on_trial_result("running", result(1, 0.45))
    s.on_trial_result("running", result(2, 0.55))

    path = tmp_path / "searcher-state.pkl"
    s.save(str(path))  # what Tune's experiment checkpoint calls
    restored = PruningOptunaSearch(space=SPACE, metric="val_acc", mode="max", max_t=5)
    restored.restore(str(path))
    restored.on_trial_result("running", result(2, 0.99))  # replayed step: skipped
    restored.on_trial_complete("running", result(3, 0.58, early_stopped=True, done=True, score=0.57))

    done, running = restored._ot_study.trials
    assert done.state == TrialState.COMPLETE and done.value == 0.65
    assert running.params == cfg
    assert running.state == TrialState.COMPLETE and running.value == 0.57
    assert running.intermediate_values == {1: 0.45, 2: 0.55, 3: 0.58}
    # The restored searcher keeps suggesting from the same study.
    restored.suggest("next")
    assert len(restored._ot_study.trials) == 3
    # A plain pickle round trip (Tuner pickles its search_alg) works too.
    again = pickle.loads(pickle.dumps(searcher()))
    assert again._max_t == 5 and again._ot_study.trials == []


def test_arguments_are_validated():
    with pytest.raises(ValueError, match="max_t must be a positive int.*got 0"):
        searcher(max_t=0)
    with pytest.raises(ValueError, match="got 5.0"):
        searcher(max_t=5.0)
    with pytest.raises(ValueError, match="single objective"):
        searcher(metric=["val_acc", "val_loss"], mode=["max", "min"])


def test_plain_optuna_search_tells_early_stopped_trials_complete():
    """The bug this module fixes: Ray's OptunaSearch picks an epoch-2 trial as the best."""

    def sweep(s):
        run_like_tune(s, "full", [0.40, 0.60, 0.70, 0.66, 0.60], ended="stopped")  # collapses
        run_like_tune(s, "early", [0.50, 0.68], ended="stopped")  # ASHA cut it at epoch 2
        return s._ot_study

    plain = sweep(OptunaSearch(space=SPACE, metric="val_acc", mode="max", seed=0))
    assert [t.state for t in plain.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert plain.best_trial.number == 1  # the trial stopped at epoch 2

    fixed = sweep(searcher())
    assert [t.state for t in fixed.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert fixed.best_trial.number == 0 and fixed.best_value == 0.60


CURVE = {1: 0.00, 2: 0.10, 3: 0.20, 4: 0.15, 5: 0.10, 6: 0.05}  # rises, then collapses


@pytest.mark.slow
def test_asha_sweep_end_to_end(tmp_path):
    """A real Tuner: ASHA's stops are PRUNED, full-length and self-ended trials COMPLETE.

    Trials run one at a time, so ASHA's decisions are deterministic: with val_acc = x + CURVE,
    x = 0.2 and 0.3 fall below the median at rung 1 and 0.6 at rung 2 (margins of 0.1 or more);
    0.9 returns by itself after epoch 3.
    """
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    returned = tmp_path / "returned"
    returned.mkdir()

    def trainable(config):
        for it in range(1, 7):
            tune.report({"val_acc": config["x"] + CURVE[it]})
            if config["x"] >= 0.85 and it == 3:
                break  # the trainer's own early stopping
        # Only reached when Tune let the last report() return: not stopped by ASHA.
        (returned / str(config["x"])).touch()

    xs = [0.5, 0.9, 0.2, 0.8, 0.3, 0.6]
    search = PruningOptunaSearch(
        space={"x": FloatDistribution(0.0, 1.0)},
        metric="val_acc",
        mode="max",
        points_to_evaluate=[{"x": x} for x in xs],
        max_t=6,
        seed=0,
    )
    # address="local": a fresh cluster of our own, even when another one runs on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        grid = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=search,
                num_samples=len(xs),
                max_concurrent_trials=1,
                scheduler=ASHAScheduler(metric="val_acc", mode="max", max_t=6, grace_period=1, reduction_factor=2),
            ),
            run_config=tune.RunConfig(storage_path=str(tmp_path / "results"), verbose=0),
        ).fit()
    finally:
        ray.shutdown()

    study = search._ot_study
    assert len(grid) == len(study.trials) == len(xs)
    by_x = {t.params["x"]: t for t in study.trials}
    iters = {r.config["x"]: r.metrics["training_iteration"] for r in grid}
    for x, t in by_x.items():
        n = iters[x]
        assert t.intermediate_values == {i: pytest.approx(x + CURVE[i]) for i in range(1, n + 1)}
        if n == 6 or (returned / str(x)).exists():
            assert t.state == TrialState.COMPLETE, (x, n)
            assert t.value == pytest.approx(x + CURVE[n])
        else:
            assert t.state == TrialState.PRUNED, (x, n)
    assert {x: (by_x[x].state.name, iters[x]) for x in xs} == {
        0.5: ("COMPLETE", 6),
        0.9: ("COMPLETE", 3),
        0.2: ("PRUNED", 1),
        0.8: ("COMPLETE", 6),
        0.3: ("PRUNED", 1),
        0.6: ("PRUNED", 2),
    }
    # Tune's experiment checkpoint of the searcher (what Tuner.restore reloads) holds the study.
    restored = PruningOptunaSearch(space={"x": FloatDistribution(0.0, 1.0)}, metric="val_acc", mode="max", max_t=6)
    restored.restore_from_dir(grid.experiment_path)
    assert [(t.params, t.state, t.intermediate_values) for t in restored._ot_study.trials] == [
        (t.params, t.state, t.intermediate_values) for t in study.trials
    ]


def test_a_trial_the_study_already_finished_is_not_told_again():
    """After a resume, Tune may complete a trial whose end the persistent study already holds (it finished
    after the snapshot the sweep resumed from): Optuna 5 raises "Cannot tell a COMPLETE trial" (a plain
    ValueError); the study keeps its state and the sweep goes on (seen once in a loaded resume test)."""
    s = searcher()
    s.suggest("t1")
    for step, acc in enumerate([0.40, 0.50, 0.55, 0.58, 0.60], start=1):
        s.on_trial_result("t1", result(step, acc))
    s._ot_study.tell(ot_trial(s).number, 0.60, state=TrialState.COMPLETE)  # the earlier driver's tell
    s.on_trial_complete("t1", {**result(5, 0.60), "done": True})
    t = ot_trial(s)
    assert t.state == TrialState.COMPLETE and t.value == 0.60
    s.suggest("t2")
    s.on_trial_result("t2", result(1, 0.3))
    s._ot_study.tell(ot_trial(s, 1).number, state=TrialState.FAIL)
    s.on_trial_complete("t2", {**result(1, 0.3), "done": True})  # would be PRUNED; the study keeps FAIL
    assert ot_trial(s, 1).state == TrialState.FAIL


def test_save_to_dir_keeps_its_temp_file_out_of_the_folder_tune_uploads(tmp_path, monkeypatch):
    """Tune uploads the experiment folder in the background while the searcher saves into it: the temp
    file of the atomic save lives beside the folder, so no file appears in it and vanishes mid-upload."""
    s = searcher()
    s.suggest("t1")
    s.on_trial_result("t1", result(1, 0.4))
    folder = tmp_path / "driver_artifacts"
    folder.mkdir()
    seen: list[list[str]] = []
    save = s.save

    def watching_save(path: str) -> None:
        save(path)
        seen.append(sorted(p.name for p in folder.iterdir()))  # the folder while the temp file exists

    monkeypatch.setattr(s, "save", watching_save)
    s.save_to_dir(str(folder), "sess")
    assert seen == [[]]
    assert sorted(p.name for p in folder.iterdir()) == [s.CKPT_FILE_TMPL.format("sess")]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".searcher-state-")]
    restored = searcher()
    restored.restore_from_dir(str(folder))
    assert [t.params for t in restored._ot_study.trials] == [t.params for t in s._ot_study.trials]
