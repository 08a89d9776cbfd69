"""benchmarks/real_budget.py end to end on a tiny synthetic folder (real faces are never needed): one row per arm,
the results written, and the test split sealed from everything but the final evaluations."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("real_budget", ROOT / "benchmarks" / "real_budget.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_three_arms_one_budget_and_a_sealed_test_split(tmp_path, capsys):
    from fer_core.data.synth import SynthConfig, generate, write_folders

    images = tmp_path / "faces"
    write_folders(generate(SynthConfig(n=300, seed=5)), images)
    out = tmp_path / "bench"
    rows = _bench().main(
        [
            *("--images", str(images), "--classes", "4", "--budget-min", "0.4", "--out", str(out), "--threads", "2"),
            *("--retrain-share", "0.25", "--synthetic-n", "300", "--no-match-sweep"),
            # The sweep's own clock is raised past the arm's 18 s (the last --time-budget-s wins): on a slow or
            # loaded CI host its 2 trials may not both finish in 18 s, and then there is no winner to export
            # (the benchmark reports that as a row with an error). The retrain then gets its minimum, 1 epoch.
            *("--sweep-args", "--samples 2 --max-epochs 2 --grace-period 1 --time-budget-s 600"),
        ]
    )
    printed = capsys.readouterr().out

    assert [r["arm"] for r in rows] == ["sweep", "model_b", "plain_cnn", "synthetic"]
    assert rows[0]["model"] == "fer_cnn_plain"  # the default space's model
    assert [r["model"] for r in rows[1:]] == ["fer_cnn_b", "fer_cnn_plain", "fer_cnn_plain (procedural faces)"]
    for r in rows:
        assert r["epochs"] >= 1 and r["compute_min"] > 0 and 0 <= r["test_acc"] <= 1
        # the sweep's val curve is its winning trial's (val held out); its retrain trained on val
        assert len(r["val_curve"]) == (r["trial_epochs"] if r["arm"] == "sweep" else r["epochs"])
        assert r["arm"] in ("sweep", "synthetic") or 0 <= r["test_acc_best_weights"] <= 1
        assert r["val_best"] == max(r["val_curve"]) and r["val_final"] == r["val_curve"][-1]
        assert 1 <= r["peak_epoch"] <= r["epochs"] and r["drop_from_peak"] == r["val_best"] - r["val_final"]
        assert isinstance(r["collapsed"], bool)
    assert [r["budget_min"] for r in rows[1:3]] == [0.4, 0.4]  # --no-match-sweep: the budget, whatever the sweep used
    assert rows[0]["sweep"]["trials"] == 2 and rows[0]["sweep"]["max_epochs"] == 2  # --sweep-args reached it
    assert "out of time" not in rows[0]["sweep"]["outcomes"]
    saved = json.loads((out / "real_budget.json").read_text())
    assert [r["arm"] for r in saved["rows"]] == ["sweep", "model_b", "plain_cnn", "synthetic"]
    assert saved["classes"] == ["happy", "neutral", "sad", "surprise"]
    with open(out / "real_budget.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(t["arm"], t["model"], int(t["epochs"])) for t in table] == [
        (r["arm"], r["model"], r["epochs"]) for r in rows
    ]
    assert "| arm | model | compute (min) |" in printed
    # the synthetic curve runs as many optimizer steps as the real plain CNN (its own epochs are shorter or longer)
    plain, synthetic = rows[2], rows[-1]
    steps = plain["epochs"] * plain["steps_per_epoch"]
    assert synthetic["epochs"] == math.ceil(steps / synthetic["steps_per_epoch"])
    assert "val acc after the same number of optimizer steps" in printed
    assert f"{plain['steps_per_epoch']:>6}" in printed.split("optimizer steps")[1].splitlines()[1]
    for r in rows:  # one curve line per arm
        assert f"{r['arm']}" in printed and " ".join(f"{100 * v:.1f}" for v in r["val_curve"]) in printed

    # the test split is sealed: training reads a copy of the data set without its test shards ...
    data, sealed = out / "data", out / "data-sealed"
    assert any(p.name.startswith("test-") for p in data.iterdir())
    assert not any(p.name.startswith("test-") for p in sealed.iterdir())
    assert (sealed / "manifest.json").read_text() == (data / "manifest.json").read_text()
    sweep_record = json.loads((out / "arms" / "sweep" / "sweep" / "sweep.json").read_text())
    assert sweep_record["data"]["uri"] == str(sealed)
    for arm in ("model_b", "plain_cnn"):
        for run in ("calibration", "run"):
            assert yaml.safe_load((out / "arms" / arm / run / "config.yaml").read_text())["data"] == str(sealed)
    # ... and in each arm only the last steps read it, after everything that trained or chose a model
    phases = json.loads((out / "phases.json").read_text())
    assert phases[0]["step"] == "ingest"
    for arm in ("sweep", "model_b", "plain_cnn"):
        steps = [p for p in phases if p["arm"] == arm]
        seen = [("test" in p["reads"]) for p in steps]
        assert seen == sorted(seen) and seen[-1]  # no step without the test after one with it
        last_blind = max(p["end"] for p in steps if "test" not in p["reads"])
        assert all(p["start"] >= last_blind for p in steps if "test" in p["reads"])
    assert [p["step"] for p in phases if p["arm"] == "sweep"] == [
        "sweep",
        "export-best",
        "calibration",
        "retrain",
    ]
    # the retrain fills the rest of the budget, on train + val
    retrain = json.loads((out / "arms" / "sweep" / "retrain" / "metrics.json").read_text())
    assert retrain["epochs"] == rows[0]["epochs"] and retrain["on"] == "train+val"


def test_the_augmentation_control_is_the_recipe_with_the_default_spaces_augmentation():
    """``plain_strong`` tells how much of the sweep's result is the augmentation the default CPU space fixes:
    it must stay the plain CNN's recipe with exactly that augmentation, whatever the space fixes next."""
    from sweeps.settings import DEFAULT_SPACE
    from sweeps.space import load_space

    fixed = load_space(DEFAULT_SPACE).fixed
    bench = _bench()
    assert bench.BASELINES["plain_strong"] == (fixed["model"], (f"augment={fixed['augment']}",))
    assert bench.BASELINES["plain_cnn"] == (fixed["model"], ())
    assert "plain_strong" in bench.ARMS and "plain_strong" not in bench.DEFAULT_ARMS


def test_a_baseline_gets_the_sweep_arms_minutes_when_the_sweep_ran_over(tmp_path):
    """Equal compute in the baseline's favour: a sweep arm that overran its budget (a host that slowed down
    during its retrain) hands its minutes to the baselines run after it; one within budget changes nothing."""
    bench = _bench()
    assert bench.baseline_budget_s(tmp_path, 2700.0) == (2700.0, "")  # no sweep arm in OUT
    done = tmp_path / "arms" / "sweep" / "result.json"
    done.parent.mkdir(parents=True)
    done.write_text(json.dumps({"arm": "sweep", "compute_min": 50.0}))
    budget, why = bench.baseline_budget_s(tmp_path, 2700.0)
    assert budget == 3000.0 and "50.0 min" in why and "45 min" in why
    assert bench.baseline_budget_s(tmp_path, 2700.0, match_sweep=False) == (2700.0, "")
    done.write_text(json.dumps({"arm": "sweep", "compute_min": 44.0}))  # within budget: the budget stands
    assert bench.baseline_budget_s(tmp_path, 2700.0) == (2700.0, "")
    # The arms run in one order whatever order --arms lists them in: the sweep before the baselines.
    args = bench.parse_args(["--images", str(tmp_path), "--out", str(tmp_path), "--arms", "plain_cnn,model_b,sweep"])
    assert args.arm_list == ["sweep", "model_b", "plain_cnn"]
