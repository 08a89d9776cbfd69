"""After a sweep: ``fer export-best``, ``fer retrain`` and ``fer confirm``.

One real smoke sweep (a subprocess, session-scoped) feeds the end-to-end tests: export -> the YAML is
the trial's exact trainer config; retrain -> the trial's validation curve again, test metrics,
TorchScript, model card; confirm with fresh seeds on Ray -> export --by confirmed. The ranking rules
and the errors are tested on small experiment folders written by hand.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from fer_cli.main import main
from fer_core.errors import FerError
from fer_core.train.config import TrainConfig, load_config, resolve_config
from release.confirm import SEED_OFFSET, confirm_seeds, summarize
from release.export import export_best, export_paths, load_experiment, rank_trials
from subprocs import clean_env

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = clean_env()
    env.pop("WANDB_API_KEY", None)
    return env


@pytest.fixture(scope="session")
def experiment(ingested, tmp_path_factory) -> Path:
    """A real 2-trial smoke sweep. No ASHA and no collapse stopping: both trials must complete (with only two
    trials the async ASHA rung decision depends on which reports first), so export and confirm have two."""
    storage = tmp_path_factory.mktemp("sweeps")
    cmd = [
        sys.executable,
        "sweeps/regularization.py",
        "--smoke",
        "--samples",
        "2",
        "--max-epochs",
        "3",
        "--no-asha",
        "--no-collapse-stop",
        "--data",
        str(ingested),
        "--storage",
        str(storage),
        "--name",
        "best",
        "--wandb-mode",
        "disabled",
        "--num-cpus",
        "2",
    ]
    out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return storage / "best"


def _trial_config(exp: Path, trial_id: str) -> TrainConfig:
    """The test's own reconstruction: base config < fixed < the trial's non-null sampled columns."""
    meta = json.loads((exp / "sweep.json").read_text())
    row = next(r for r in pq.read_table(exp / "trials.parquet").to_pylist() if r["trial_id"] == trial_id)
    params = {k.removeprefix("config/"): v for k, v in row.items() if k.startswith("config/") and v is not None}
    return resolve_config({**meta["base_config"], **meta["space"]["fixed"], **params})


# ----------------------------------------------------------------------------------------------
# End to end, on a real sweep
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.e2e
def test_export_best_is_the_best_completed_trials_full_config(experiment, tmp_path):
    out = tmp_path / "best.yaml"
    assert main(["export-best", str(experiment), "--out", str(out)]) == 0
    trials = pq.read_table(experiment / "trials.parquet").to_pylist()
    best = max((t for t in trials if t["outcome"] == "completed"), key=lambda t: t["score"])
    doc = yaml.safe_load(out.read_text())
    assert list(doc)[:-1] == TrainConfig.keys() and list(doc)[-1] == "provenance"  # every key, then provenance
    prov = doc["provenance"]
    assert prov["trial_id"] == best["trial_id"] and prov["ranked_by"] == "score" and prov["rank"] == 1
    assert prov["experiment"] == "best" and prov["experiment_dir"] == str(experiment.resolve())
    assert prov["metrics"]["score"] == best["score"] and prov["metrics"]["outcome"] == "completed"
    assert {"peak", "peak_epoch", "final", "epochs"} <= set(prov["metrics"])
    assert prov["sweep_command"].startswith("python sweeps/regularization.py") and prov["exported_at"]
    cfg = load_config(out)  # what `fer train --config best.yaml` reads
    assert cfg == _trial_config(experiment, best["trial_id"])
    assert (cfg.data_version, cfg.epochs, cfg.seed, cfg.threads) == (prov["data"]["version"], 3, 0, 1)


@pytest.mark.slow
@pytest.mark.e2e
def test_retrain_reproduces_the_trial_and_ships_a_model(experiment, tmp_path):
    exported = tmp_path / "best.yaml"
    export_best(experiment, exported)
    trial_id = yaml.safe_load(exported.read_text())["provenance"]["trial_id"]
    run = tmp_path / "run"
    assert main(["retrain", str(exported), "--on", "train", "--out", str(run), "--quiet"]) == 0

    # the same validation curve, epoch by epoch, as the sweep's trial (CPU, same config, data and seed)
    epochs = sorted(
        (r for r in pq.read_table(experiment / "epochs.parquet").to_pylist() if r["trial_id"] == trial_id),
        key=lambda r: r["epoch"],
    )
    retrained = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in retrained] == [r["epoch"] for r in epochs] == [1, 2, 3]
    for mine, theirs in zip(retrained, epochs):
        assert mine["val_acc"] == pytest.approx(theirs["val_acc"], abs=1e-6)
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-6)

    for name in (
        "best.pt",
        "final.pt",
        "model.pt2",
        "model.onnx",
        "metrics.json",
        "confusion.json",
        "confusion.png",
        "MODEL_CARD.md",
        "config.yaml",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics["test"]
    assert metrics["on"] == "train" and metrics["val_held_out"] is True and metrics["weights"] == "final"
    assert test["n"] == sum(metrics["data"]["counts"]["test"].values()) and 0 <= test["accuracy"] <= 1
    assert set(test["per_class"]) == set(metrics["data"]["classes"])
    assert metrics["provenance"]["trial_id"] == trial_id

    # ONNX and torch.export: same logits as the final weights, same test accuracy as metrics.json
    from fer_core.train.checkpoint import load_weights
    from fer_core.train.data import load_train_data
    from fer_core.train.trainer import build_model
    from release.model_export import load_onnx

    onnx_model = load_onnx(run)
    state = load_weights(run / "final.pt")
    assert onnx_model.classes == state["classes"] == metrics["data"]["classes"]
    assert metrics["export"]["onnx"]["max_abs_diff"] <= 1e-4 and metrics["export"]["pt2"]["max_abs_diff"] <= 1e-4
    model = build_model(resolve_config(state["config"]), len(onnx_model.classes), 1)
    model.load_state_dict(state["model"])
    data = load_train_data(str(load_config(exported).data), splits=("test",))
    x, y = data.x("test").float().div(255).contiguous(), data.y("test")
    with torch.no_grad():
        expected = model.eval()(x)
        logits = torch.from_numpy(onnx_model.session.run(None, {"pixels": x.numpy()})[0])
        assert torch.allclose(logits, expected, atol=1e-4)
        assert torch.allclose(torch.export.load(run / "model.pt2").module()(x), expected, atol=1e-4)
    assert float((logits.argmax(1) == y).float().mean()) == pytest.approx(test["accuracy"])

    card = (run / "MODEL_CARD.md").read_text()
    assert "test accuracy" in card and f"{test['accuracy']:.4f}" in card
    assert metrics["data"]["version"] in card and trial_id in card
    assert 'ort.InferenceSession("model.onnx")' in card and 'torch.export.load("model.pt2")' in card


@pytest.mark.slow
@pytest.mark.e2e
def test_retrain_on_train_plus_val_says_val_is_not_held_out(experiment, ingested, tmp_path, capsys):
    exported = tmp_path / "best.yaml"
    export_best(experiment, exported)
    counts = json.loads((ingested / "manifest.json").read_text())["counts"]
    n = sum(counts["train"].values()) + sum(counts["val"].values())
    # a last batch of one image (BatchNorm cannot train on it) is left out by the trainer
    one_left = next(b for b in range(2, n) if n % b == 1)
    assert (
        main(
            [
                "retrain",
                str(exported),
                "--on",
                "train+val",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "one"),
                "--quiet",
                "--set",
                f"batch_size={one_left}",
            ]
        )
        == 0
    )
    capsys.readouterr()

    batch = next(b for b in (64, 50, 48) if n % b != 1)
    run = tmp_path / "trainval"
    assert (
        main(
            [
                "retrain",
                str(exported),
                "--on",
                "train+val",
                "--epochs",
                "1",
                "--out",
                str(run),
                "--quiet",
                "--set",
                f"batch_size={batch}",
            ]
        )
        == 0
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_images"] == n
    assert metrics["val_held_out"] is False and metrics["epochs"] == 1
    assert "not held out" in (run / "MODEL_CARD.md").read_text()
    # picking the best epoch by val accuracy makes no sense when val is trained on
    assert main(["retrain", str(exported), "--on", "train+val", "--weights", "best", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.e2e
def test_confirm_as_a_ray_job_script_then_export_by_confirmed(experiment, tmp_path):
    cmd = [sys.executable, "-m", "fer_cli", "confirm", str(experiment), "--top", "2", "--seeds", "2", "--num-cpus", "2"]
    out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = pq.read_table(experiment / "confirm.parquet").to_pylist()
    trials = pq.read_table(experiment / "trials.parquet").to_pylist()
    assert len(rows) == 4
    assert {r["trial_id"] for r in rows} == {t["trial_id"] for t in trials}
    assert sorted(r["seed"] for r in rows) == [1000, 1000, 1001, 1001]  # fresh: sweep seed 0 + 1000 + i
    assert all(r["epochs"] == 3 and r["score"] is not None for r in rows)
    means = {}
    for r in rows:
        means.setdefault(r["trial_id"], []).append(r["score"])
    winner = max(means, key=lambda t: (sum(means[t]) / 2, t == min(means)))
    ranking = json.loads((experiment / "confirm.json").read_text())["ranking"]
    assert [r["n"] for r in ranking] == [2, 2] and ranking[0]["trial_id"] == winner
    assert ranking[0]["mean"] == pytest.approx(sum(means[winner]) / 2)
    assert "mean" in out.stdout and winner in out.stdout

    best = tmp_path / "confirmed.yaml"
    assert main(["export-best", str(experiment), "--by", "confirmed", "--out", str(best)]) == 0
    prov = yaml.safe_load(best.read_text())["provenance"]
    assert prov["trial_id"] == winner and prov["ranked_by"] == "confirmed"
    assert prov["confirmed"]["n"] == 2 and prov["confirmed"]["seeds"] == [1000, 1001]
    assert load_config(best) == _trial_config(experiment, winner)  # the trial's config, sweep seed included


# ----------------------------------------------------------------------------------------------
# Ranking and errors, on experiment folders written by hand
# ----------------------------------------------------------------------------------------------

SPACE = {
    "fixed": {"optimizer": "adam"},
    "params": {
        "model": {"type": "categorical", "choices": ["fer_cnn_tiny", "fer_cnn_small"]},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "loss": {"type": "categorical", "choices": ["ce", "focal"]},
        "focal_gamma": {"type": "float", "low": 0.5, "high": 4.0, "when": {"loss": ["focal"]}},
    },
}


def _row(trial_id, outcome, score, peak, final, lr, loss="ce", gamma=None, epochs=10):
    return {
        "trial_id": trial_id,
        "outcome": outcome,
        "stop_reason": "",
        "score": score,
        "peak": peak,
        "peak_epoch": 2,
        "final": final,
        "drop_from_peak": None if peak is None else peak - final,
        "epochs": epochs,
        "time_s": 1.0,
        "config/model": "fer_cnn_tiny",
        "config/lr": lr,
        "config/loss": loss,
        "config/focal_gamma": gamma,
    }


def write_experiment(path: Path, rows: list[dict], name: str = "handmade") -> Path:
    path.mkdir(parents=True)
    meta = {
        "name": name,
        "command": "python sweeps/regularization.py --name handmade",
        "space": SPACE,
        "data": {"uri": "runs/default/data", "version": "v0123"},
        "max_epochs": 10,
        "score_window": 3,
        "base_config": {
            "data": "runs/default/data",
            "epochs": 10,
            "seed": 7,
            "threads": 1,
            "device": "cpu",
            "data_version": "v0123",
        },
    }
    (path / "sweep.json").write_text(json.dumps(meta))
    pq.write_table(pa.Table.from_pylist(rows), path / "trials.parquet")
    return path


ROWS = [  # by score: B; by peak: A; by final: C; D (stopped early, best numbers) and E (collapsed) never win
    _row("A", "completed", 0.72, 0.90, 0.65, lr=1e-3, loss="focal", gamma=1.5),
    _row("B", "completed", 0.74, 0.80, 0.70, lr=2e-3),
    _row("C", "completed", 0.70, 0.75, 0.74, lr=3e-3),
    _row("D", "stopped by ASHA", 0.95, 0.95, 0.95, lr=4e-3, epochs=3),
    _row("E", "collapsed", 0.93, 0.99, 0.90, lr=5e-3, epochs=6),
    _row("F", "diverged", None, None, None, lr=9e-3, epochs=2),
]


@pytest.mark.parametrize("by, winner, lr", [("score", "B", 2e-3), ("peak", "A", 1e-3), ("final", "C", 3e-3)])
def test_ranking_keys_choose_among_completed_trials_only(tmp_path, by, winner, lr):
    exp = write_experiment(tmp_path / "exp", ROWS)
    out = tmp_path / "best.yaml"
    assert main(["export-best", str(exp), "--out", str(out), "--by", by]) == 0
    doc = yaml.safe_load(out.read_text())
    assert doc["provenance"]["trial_id"] == winner and doc["provenance"]["ranked_by"] == by
    cfg = load_config(out)
    assert cfg.lr == lr and cfg.seed == 7 and cfg.data_version == "v0123" and cfg.optimizer == "adam"


def test_conditional_params_exist_only_where_sampled(tmp_path):
    exp = write_experiment(tmp_path / "exp", ROWS)
    written = export_best(exp, tmp_path / "peak.yaml", by="peak")
    assert written[0]["config"].loss == "focal" and written[0]["config"].focal_gamma == 1.5
    assert written[0]["provenance"]["sampled"] == {
        "model": "fer_cnn_tiny",
        "lr": 1e-3,
        "loss": "focal",
        "focal_gamma": 1.5,
    }
    written = export_best(exp, tmp_path / "score.yaml")
    assert "focal_gamma" not in written[0]["provenance"]["sampled"]
    assert written[0]["config"].focal_gamma == TrainConfig().focal_gamma  # absent: the default


def test_top_k_writes_numbered_files_in_rank_order(tmp_path, capsys):
    exp = write_experiment(tmp_path / "exp", ROWS)
    out = tmp_path / "out" / "best.yaml"
    assert export_paths(out, 3) == [out, out.with_name("best-2.yaml"), out.with_name("best-3.yaml")]
    assert main(["export-best", str(exp), "--out", str(out), "--top", "5"]) == 0
    files = sorted(p.name for p in out.parent.iterdir())
    assert files == ["best-2.yaml", "best-3.yaml", "best.yaml"]  # only 3 trials completed
    ranks = [yaml.safe_load(p.read_text())["provenance"] for p in export_paths(out, 3)]
    assert [(p["trial_id"], p["rank"], p["candidates"]) for p in ranks] == [("B", 1, 3), ("A", 2, 3), ("C", 3, 3)]
    assert "only 3 completed trials" in capsys.readouterr().err


def test_no_finished_trial_is_a_clear_error(tmp_path, capsys):
    exp = write_experiment(tmp_path / "exp", [r for r in ROWS if r["outcome"] != "completed"], name="short")
    with pytest.raises(FerError) as err:
        export_best(exp, tmp_path / "best.yaml")
    msg = str(err.value)
    assert "experiment short" in msg and "no trial ran its full budget of 10 epochs" in msg
    assert "1 stopped by ASHA" in msg and "1 collapsed" in msg and "Run the sweep longer" in msg
    assert main(["export-best", str(exp), "--out", str(tmp_path / "best.yaml")]) == 2
    assert capsys.readouterr().err.startswith("fer: error: experiment short")
    assert not (tmp_path / "best.yaml").exists()


def test_a_folder_that_is_not_an_experiment_names_the_missing_file(tmp_path, capsys):
    with pytest.raises(FerError, match="no such experiment folder"):
        load_experiment(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(FerError, match=r"half/sweep\.json is missing"):
        load_experiment(tmp_path / "half")
    (tmp_path / "half" / "sweep.json").write_text("{}")
    with pytest.raises(FerError, match=r"half/trials\.parquet is missing"):
        load_experiment(tmp_path / "half")
    assert main(["export-best", str(tmp_path / "nope"), "--out", str(tmp_path / "b.yaml")]) == 2
    assert "fer: error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["export-best", "{exp}", "--out", "{tmp}/b.yaml", "--by", "best"], "--by: must be one of score, final, peak"),
        (["export-best", "{exp}", "--out", "{tmp}/b.yaml", "--top", "0"], "--top: must be an integer >= 1; got 0"),
        (["export-best", "{exp}", "--out", "{tmp}/b.yaml", "--by", "confirmed"], "run 'fer confirm"),
        (["confirm", "{exp}", "--top", "0"], "--top: must be an integer >= 1; got 0"),
        (["confirm", "{exp}", "--seeds", "0"], "--seeds: must be an integer >= 1; got 0"),
        (["confirm", "{tmp}/missing"], "no such experiment folder"),
        (["retrain", "{tmp}/missing.yaml"], "cannot read the config file"),
        (["retrain", "{tmp}/b.yaml", "--on", "val"], "--on: must be one of train, train+val"),
    ],
)
def test_bad_input_is_one_clear_error_line(tmp_path, capsys, argv, message):
    exp = write_experiment(tmp_path / "exp", ROWS)
    export_best(exp, tmp_path / "b.yaml")
    assert main([a.format(exp=exp, tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fer: error: ") and message in err and "Traceback" not in err


def test_confirmed_ranking_mean_spread_and_failures(tmp_path):
    rows = [
        {"trial_id": "A", "seed": 1000, "score": 0.70},
        {"trial_id": "A", "seed": 1001, "score": 0.80},
        {"trial_id": "B", "seed": 1000, "score": 0.74},
        {"trial_id": "B", "seed": 1001, "score": 0.74},
        {"trial_id": "C", "seed": 1000, "score": 0.90},
        {"trial_id": "C", "seed": 1001, "score": None},
    ]
    ranking = summarize(rows)
    assert [r["trial_id"] for r in ranking] == ["A", "B", "C"]  # C's diverged seed ranks it last
    a = ranking[0]
    assert a["mean"] == pytest.approx(0.75) and a["std"] == pytest.approx(math.sqrt(0.005))  # sample std
    assert (a["min"], a["max"], a["n"], a["failed"], a["seeds"]) == (0.70, 0.80, 2, 0, [1000, 1001])
    assert ranking[2]["std"] is None and ranking[2]["failed"] == 1
    assert confirm_seeds(7, 3) == [7 + SEED_OFFSET, 8 + SEED_OFFSET, 9 + SEED_OFFSET]

    exp = write_experiment(tmp_path / "exp", ROWS)
    table = pa.Table.from_pylist([{**r, "score": r["score"]} for r in rows if r["trial_id"] != "C"])
    pq.write_table(table, exp / "confirm.parquet")
    written = export_best(exp, tmp_path / "best.yaml", by="confirmed", top=2)
    assert [w["trial_id"] for w in written] == ["A", "B"]  # by mean over seeds, not the sweep's score
    assert written[0]["provenance"]["confirmed"]["mean"] == pytest.approx(0.75)


def test_rank_trials_ignores_missing_values_and_breaks_ties():
    rows = [
        _row("b", "completed", 0.5, 0.6, 0.5, lr=1e-3),
        _row("a", "completed", 0.5, 0.6, 0.5, lr=1e-3),
        _row("c", "completed", 0.6, None, 0.4, lr=1e-3),
        _row("d", "completed", float("nan"), 0.9, 0.9, lr=1e-3),
    ]
    assert [r["trial_id"] for r in rank_trials(rows, "score")] == ["c", "a", "b"]
    assert [r["trial_id"] for r in rank_trials(rows, "peak")] == ["d", "a", "b"]


@pytest.mark.slow
@pytest.mark.e2e  # the session's experiment fixture runs a sweep: whichever test sets it up first
def test_exports_are_decisions_on_record_shown_on_the_page(experiment, tmp_path):
    import getpass
    import shutil

    from dashboards.report import build_report
    from experiment_store import ExperimentStore, read_decisions
    from sweeps.experiment import load_experiment

    exp = tmp_path / "exp"
    shutil.copytree(experiment, exp)
    (exp / "decisions.json").unlink(missing_ok=True)
    shutil.rmtree(exp / "decisions", ignore_errors=True)
    assert main(["export-best", str(exp), "--out", str(tmp_path / "best.yaml")]) == 0
    assert main(["export-best", str(exp), "--out", str(tmp_path / "top.yaml"), "--by", "final", "--top", "2"]) == 0
    decisions = read_decisions(ExperimentStore(str(exp)))
    trials = sorted(
        (t for t in pq.read_table(exp / "trials.parquet").to_pylist() if t["outcome"] == "completed"),
        key=lambda t: -t["final"],
    )
    assert [(d.action, d.by, d.rank, d.trial_id) for d in decisions] == [
        ("export-best", "score", 1, max(trials, key=lambda t: t["score"])["trial_id"]),
        ("export-best", "final", 1, trials[0]["trial_id"]),
        ("export-best", "final", 2, trials[1]["trial_id"]),
    ]
    assert decisions[0].file == str((tmp_path / "best.yaml").resolve()) and decisions[2].file.endswith("top-2.yaml")
    assert decisions[1].value == trials[0]["final"] and decisions[1].score == trials[0]["score"]
    assert decisions[0].user == getpass.getuser() and decisions[0].time.endswith("Z")
    page = build_report(load_experiment(exp))
    assert "Decisions on record" in page and str((tmp_path / "best.yaml").resolve()) in page
    # An experiment this user cannot write (someone else's storage): the export stands, a warning says so.
    if os.geteuid() != 0:  # root writes anywhere
        os.chmod(exp, 0o555)
        try:
            assert main(["export-best", str(exp), "--out", str(tmp_path / "again.yaml")]) == 0
            assert (tmp_path / "again.yaml").is_file() and len(read_decisions(ExperimentStore(str(exp)))) == 3
        finally:
            os.chmod(exp, 0o755)
    (exp / "decisions.json").write_text("{not json")
    assert main(["export-best", str(exp), "--out", str(tmp_path / "b2.yaml")]) == 0  # warned, not failed
    assert (exp / "decisions.json").read_text() == "{not json"  # nothing lost
    assert "not a decisions file written by fer" in build_report(load_experiment(exp))
