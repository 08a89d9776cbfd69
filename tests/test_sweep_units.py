"""Sweep pieces without Ray: the score, per-epoch annotation, outcome classification, tables, driver checks."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest

from experiment_store import ExperimentStore
from fer_core.errors import FerError
from sweeps.results import classify, epoch_rows, format_summary, trial_rows
from sweeps.trainable import annotate, ran_to_the_end, score_of

RULES = {
    "score_window": 3,
    "collapse": dict(mode="max", grace_period=3, window=2, margin=0.05, patience=0, relative=False),
}


def test_score_is_the_mean_of_the_last_epochs():
    assert score_of([0.5], 3) == 0.5
    assert score_of([0.1, 0.5, 0.6, 0.7], 3) == pytest.approx(0.6)
    assert math.isnan(score_of([0.5, float("nan")], 3))


def test_annotate_records_peak_final_and_the_collapse_reason():
    curve = [0.40, 0.60, 0.58, 0.50, 0.48]
    rows = [
        annotate(
            {"epoch": i + 1, "val_acc": v, "val_confusion": [[1, 0], [0, 1]], "status": "running"},
            curve[: i + 1],
            10,
            RULES,
        )
        for i, v in enumerate(curve)
    ]
    # window means .50 .59 .54 .49: the best (.59, epochs 2-3) overlaps epoch 4's window; epoch 5's
    # is wholly after it and .10 below
    assert [r["collapsed"] for r in rows] == [False, False, False, False, True]
    last = rows[-1]
    assert (last["peak"], last["peak_epoch"], last["final"]) == (0.60, 2, 0.48)
    assert last["score"] == pytest.approx((0.58 + 0.50 + 0.48) / 3)
    assert last["collapse_epoch"] == 5
    assert last["collapse_reason"] == (
        "collapsed at epoch 5: mean of last 2 val_acc 0.490 is 0.100 below the best mean of 2 in a row 0.590 "
        "ending at epoch 3 (peak 0.600 at epoch 2)"
    )
    assert last["val_confusion"] == "[[1, 0], [0, 1]]"  # JSON text: loggers keep it whole
    assert rows[0]["trial_status"] == "running"


def test_trial_status_and_completion():
    done = annotate({"epoch": 3, "val_acc": 0.5, "status": "completed"}, [0.4, 0.5, 0.5], 3, RULES)
    assert done["trial_status"] == "completed" and ran_to_the_end(done)
    assert not ran_to_the_end({"trial_status": "running"})
    assert ran_to_the_end({"trial_status": "early_stopped"})


@pytest.mark.parametrize(
    "last, errored, outcome",
    [
        ({"trial_status": "completed", "epoch": 10}, False, "completed"),
        ({"trial_status": "running", "epoch": 3}, False, "stopped by ASHA"),
        (
            {"trial_status": "running", "epoch": 6, "collapsed": True, "collapse_reason": "collapsed: x"},
            False,
            "collapsed",
        ),
        ({"trial_status": "diverged", "epoch": 2, "message": "loss became nan"}, False, "diverged"),
        ({"trial_status": "running", "epoch": 2}, True, "errored"),
        ({"trial_status": "early_stopped", "epoch": 7}, False, "early_stopped"),
        ({"trial_status": "completed", "epoch": 10, "collapsed": True, "collapse_reason": "c"}, False, "completed"),
    ],
)
def test_outcomes(last, errored, outcome):
    assert classify(last, errored=errored, max_epochs=10)[0] == outcome


def test_a_trial_the_time_budget_cut_is_out_of_time_unless_it_had_already_ended():
    cut = classify({"trial_status": "running", "epoch": 4}, errored=False, max_epochs=10, out_of_time=True)
    assert cut == ("out of time", "the sweep's time budget ran out after epoch 4 of 10")
    never = classify({}, errored=False, max_epochs=10, out_of_time=True)
    assert never == ("out of time", "not started before the sweep's time budget ran out")
    # a trial that had run all its epochs, or diverged, ended by itself
    assert classify({"trial_status": "completed", "epoch": 10}, errored=False, max_epochs=10, out_of_time=True)[0] == (
        "completed"
    )
    diverged = {"trial_status": "diverged", "epoch": 3, "message": "loss became nan"}
    assert classify(diverged, errored=False, max_epochs=10, out_of_time=True)[0] == "diverged"
    # a collapse recorded but not stopped on (--no-collapse-stop) is noted; the budget stopped it
    collapsed = {"trial_status": "running", "epoch": 6, "collapsed": True, "collapse_reason": "collapsed at epoch 5"}
    assert classify(collapsed, errored=False, max_epochs=10, out_of_time=True) == (
        "out of time",
        "the sweep's time budget ran out after epoch 6 of 10; collapsed at epoch 5 (not stopped)",
    )


def test_tables_and_summary(tmp_path):
    trials = [
        {
            "trial_id": "a",
            "config": {"l2": 1e-4, "loss": "focal", "focal_gamma": 2.0},
            "errored": False,
            "time_s": 5.0,
            "last": {
                "epoch": 3,
                "score": 0.6,
                "peak": 0.62,
                "peak_epoch": 2,
                "final": 0.6,
                "trial_status": "completed",
            },
            "history": [
                {"epoch": e, "val_acc": v, "done": False, "hostname": "n1", "timestamp": 1_790_000_000 + e}
                for e, v in ((1, 0.5), (2, 0.62), (3, 0.6))
            ],
        },
        {
            "trial_id": "b",
            "config": {"l2": 1e-2, "loss": "ce"},
            "errored": False,
            "time_s": 1.0,
            "last": {"epoch": 1, "score": 0.4, "peak": 0.4, "peak_epoch": 1, "final": 0.4, "trial_status": "running"},
            "history": [{"epoch": 1, "val_acc": 0.4}],
        },
    ]
    trials_t, epochs_t = ExperimentStore(str(tmp_path)).write_tables(trial_rows(trials, 3), epoch_rows(trials))
    rows = pq.read_table(tmp_path / "trials.parquet").to_pylist()
    assert [r["outcome"] for r in rows] == ["completed", "stopped by ASHA"]
    assert rows[0]["drop_from_peak"] == pytest.approx(0.02)
    assert rows[1]["config/focal_gamma"] is None  # conditional: absent for ce
    assert pq.read_table(tmp_path / "epochs.parquet").num_rows == 4
    assert "done" not in epochs_t.column_names and "hostname" not in epochs_t.column_names
    assert epochs_t.column("timestamp").to_pylist()[:3] == [1_790_000_001, 1_790_000_002, 1_790_000_003]
    text = format_summary(trials_t.to_pylist())
    assert text.startswith("2 trials: 1 completed, 1 stopped by ASHA")
    lines = text.splitlines()
    assert lines[4].startswith("a ") and lines[5].startswith("b ")  # ranked by score


def test_driver_refuses_bad_flags_before_starting_ray(tmp_path, capsys):
    from sweeps.driver import main

    assert main(["--resume"]) == 2
    assert "--resume needs --name" in capsys.readouterr().err
    assert main(["--grace-period", "9", "--max-epochs", "4"]) == 2
    assert "exceeds --max-epochs" in capsys.readouterr().err
    assert main(["--reduction-factor", "1", "--storage", str(tmp_path)]) == 2  # an AssertionError in Ray before
    assert "--reduction-factor must be >= 2" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    bad = tmp_path / "space.yaml"
    bad.write_text("params:\n  lerning_rate: {type: float, low: 0.1, high: 1}\n")
    assert main(["--space", str(bad), "--storage", str(tmp_path)]) == 2
    assert "params.lerning_rate: not a trainer config key" in capsys.readouterr().err
    with pytest.raises(FerError):
        from sweeps.driver import run

        run(["--name", "x", "--resume", "--storage", str(tmp_path)])


def test_a_retried_trial_keeps_only_its_latest_attempt():
    """A node died after epoch 5 was reported but only epoch 3's checkpoint was kept: Tune restored 3 and
    the trial reported 4, 5, 6 again. The superseded 4 and 5 leave the epochs table (seen in CI)."""
    history = [
        {"epoch": e, "val_acc": v}
        for e, v in ((1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4), (5, 0.5), (4, 0.41), (5, 0.51), (6, 0.61))
    ]
    rows = epoch_rows([{"trial_id": "a", "history": history}])
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["val_acc"] for r in rows][3:] == [0.41, 0.51, 0.61]
    # A restart from scratch (no checkpoint at all) keeps only the new run.
    again = [{"epoch": 1, "val_acc": 0.1}, {"epoch": 2, "val_acc": 0.2}, {"epoch": 1, "val_acc": 0.15}]
    assert [r["val_acc"] for r in epoch_rows([{"trial_id": "b", "history": again}])] == [0.15]
