"""``--time-budget-s``: a sweep whose wall-clock budget runs out stops every trial where it is, records them as
``out of time`` and leaves no trial RUNNING in its Optuna study."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from subprocs import ROOT, clean_env, run_sweep

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

_READ_STUDY = """
import json, sys, optuna
study = optuna.load_study(study_name=sys.argv[2], storage=sys.argv[1])
print(json.dumps([{"state": t.state.name, "steps": sorted(t.intermediate_values)} for t in study.trials]))
"""


def test_a_spent_budget_stops_the_sweep_and_says_which_trials_it_cut(ingested, tmp_path):
    storage = tmp_path / "sweeps"
    # 6 trials x 1000 epochs without ASHA cannot finish in 30 s: the budget ends the sweep
    args = [
        *("--data", ingested, "--storage", storage, "--name", "budget", "--wandb-mode", "disabled"),
        *("--samples", "6", "--max-epochs", "1000", "--no-asha", "--no-collapse-stop", "--concurrency", "2"),
        *("--num-cpus", "2", "--time-budget-s", "30", "--set", "model=fer_cnn_tiny", "--set", "batch_size=128"),
    ]
    out = run_sweep(*args)
    assert "--time-budget-s 30: spent" in out.stderr
    exp = storage / "budget"
    rows = pq.read_table(exp / "trials.parquet").to_pylist()
    assert len(rows) >= 2 and {r["outcome"] for r in rows} == {"out of time"}
    ran = [r for r in rows if r["epochs"] > 0]
    assert ran and all(0 < r["epochs"] < 1000 for r in ran)
    for r in rows:
        expected = (
            f"the sweep's time budget ran out after epoch {r['epochs']} of 1000"
            if r["epochs"]
            else "not started before the sweep's time budget ran out"
        )
        assert r["stop_reason"].startswith(expected)
    assert pq.read_table(exp / "epochs.parquet").num_rows == sum(r["epochs"] for r in rows)
    record = json.loads((exp / "sweep.json").read_text())
    assert record["settings"]["time_budget_s"] == 30 and record["outcomes"] == {"out of time": len(rows)}

    # every trial of the study has ended: pruned with the epochs it reported, failed when it reported none
    study = subprocess.run(
        [sys.executable, "-c", _READ_STUDY, f"sqlite:///{exp}/optuna.db", "budget"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert study.returncode == 0, study.stderr[-3000:]
    states = json.loads(study.stdout)
    assert len(states) == len(rows)
    assert sorted((t["state"], len(t["steps"])) for t in states) == sorted(
        ("PRUNED" if r["epochs"] else "FAIL", r["epochs"]) for r in rows
    )

    # nothing ran its full budget, so there is nothing to export, and export-best says why
    export = subprocess.run(
        [sys.executable, "-m", "fer_cli", "export-best", str(exp), "--out", str(tmp_path / "best.yaml")],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert export.returncode != 0 and "no trial ran its full budget" in export.stderr


def test_without_samples_the_budget_decides_how_many_trials_run(ingested, tmp_path):
    storage = tmp_path / "sweeps"
    # no --samples: trials start while the budget has room for one (1-epoch trials: many fit in 75 s, also
    # with another test's sweep on the same 2 cores: scripts/test.sh runs two at a time; with three at once 45 s saw 2)
    args = [
        *("--data", ingested, "--storage", storage, "--name", "open", "--wandb-mode", "disabled"),
        *("--max-epochs", "1", "--grace-period", "1", "--num-cpus", "2", "--time-budget-s", "75"),
        *("--set", "batch_size=128"),
    ]
    out = run_sweep(*args)
    assert "trials while --time-budget-s 75 has room for one" in out.stderr
    # the sweep ended because the budget did: no room for another trial, or spent with trials in flight
    assert "--time-budget-s: no room left for another 1-epoch trial" in out.stderr or "--time-budget-s 75: spent" in (
        out.stderr
    )
    exp = storage / "open"
    record = json.loads((exp / "sweep.json").read_text())
    assert record["settings"]["samples"] is None
    rows = pq.read_table(exp / "trials.parquet").to_pylist()
    completed = [r for r in rows if r["outcome"] == "completed"]
    assert len(rows) == record["trials"] and len(completed) >= 3
    assert not [r for r in rows if r["outcome"] == "errored"]
