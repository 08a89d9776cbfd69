"""One persistent Optuna study per experiment: another process can open it, and ``--extend`` continues it."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from subprocs import clean_env, run_sweep

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

_READ_STUDY = """
import json, sys, optuna
study = optuna.load_study(study_name=sys.argv[2], storage=sys.argv[1])
print(json.dumps([{"number": t.number, "state": t.state.name, "value": t.value,
                   "steps": sorted(t.intermediate_values), "params": t.params} for t in study.trials]))
"""


def _study(url: str, name: str) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-c", _READ_STUDY, url, name], env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_the_study_is_shared_and_extended(ingested, tmp_path):
    storage = tmp_path / "sweeps"
    exp = storage / "study"
    run_sweep(
        "--smoke",
        "--samples",
        "3",
        "--max-epochs",
        "3",
        "--grace-period",
        "1",
        "--concurrency",
        "1",
        "--num-cpus",
        "2",
        "--wandb-mode",
        "disabled",
        "--data",
        ingested,
        "--storage",
        storage,
        "--name",
        "study",
    )
    record = json.loads((exp / "sweep.json").read_text())
    url = f"sqlite:///{exp}/optuna.db"
    assert record["optuna"] == {"storage": url, "study": "study"}

    # a second process opens the study: every trial finished, in the state its outcome says
    trials = {t["trial_id"]: t for t in pq.read_table(exp / "trials.parquet").to_pylist()}
    study = _study(url, "study")
    assert len(study) == 3
    state_of = {"completed": "COMPLETE", "stopped by ASHA": "PRUNED", "collapsed": "PRUNED", "errored": "FAIL"}
    assert sorted(t["state"] for t in study) == sorted(state_of[t["outcome"]] for t in trials.values())
    completed = sorted(t["score"] for t in trials.values() if t["outcome"] == "completed")
    assert sorted(t["value"] for t in study if t["state"] == "COMPLETE") == pytest.approx(completed)
    for t in study:
        if t["state"] == "PRUNED":
            assert t["steps"] and max(t["steps"]) < 3  # its intermediate values, up to where it stopped

    # --extend 2: a new Tune run on the same study; the tables and the record hold all five trials
    out = run_sweep(
        "--name", "study", "--storage", storage, "--extend", "2", "--num-cpus", "2", "--wandb-mode", "disabled"
    )
    assert "2 more trials" in out.stderr
    study = _study(url, "study")
    assert [t["number"] for t in study] == [0, 1, 2, 3, 4] and all(t["state"] != "RUNNING" for t in study)
    rows = pq.read_table(exp / "trials.parquet").to_pylist()
    assert len(rows) == 5 and set(trials) <= {r["trial_id"] for r in rows}
    extended = json.loads((exp / "sweep.json").read_text())
    assert extended["trials"] == 5 and extended["command"] == record["command"]
    assert extended["wall_s"] == record["wall_s"] and "--extend 2" in extended["resumes"][0]["command"]
    assert extended["settings"]["max_epochs"] == 3  # the launch's settings, not the defaults
    assert pq.read_table(exp / "epochs.parquet").num_rows == sum(r["epochs"] for r in rows)
