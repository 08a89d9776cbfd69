"""Trainer-side safety: weight files cannot run code, corrupt files are one-line errors, an exploding loss ends a
run as ``diverged``, and every JSON file the trainer writes is strict JSON."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fer_cli.main import main
from fer_core.errors import FerError
from fer_core.train import load_checkpoint, load_config, train
from fer_core.train.checkpoint import load_weights
from fer_core.train.config import ConfigError
from fer_core.train.trainer import divergence_reason

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=fer_cnn_tiny", "batch_size=32", "eval_batch_size=64", "threads=1", "device=cpu"]


def cfg(*overrides):
    return load_config(overrides=[*TINY, *overrides])


def strict_json(text: str):
    """``json.loads`` that refuses NaN / Infinity (as JSON.parse, jq and most readers do)."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


# ----------------------------------------------------------------------------------------------
# 1. A weight file that would run code when unpickled is refused
# ----------------------------------------------------------------------------------------------


class Evil:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def plant(path: Path, marker: Path, how: str = "torch") -> Path:
    """Write a malicious weight file at ``path``: a checkpoint-shaped dict holding an ``Evil``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": 1,
        "epoch": 1,
        "model": {},
        "config": {},
        "classes": ["a"],
        "data_version": "v",
        "x": Evil(marker),
    }
    if how == "torch":
        torch.save(payload, path)
    else:  # a plain pickle, not torch's zip format
        path.write_bytes(pickle.dumps(payload, protocol=4))
    assert path.is_file() and not marker.exists()
    return path


@pytest.fixture(scope="module")
def run_dir(brightness_data, tmp_path_factory) -> Path:
    """A real one-epoch run folder (best.pt, checkpoint/checkpoint.pt); tests copy it before damaging it."""
    out = tmp_path_factory.mktemp("run") / "run"
    train(cfg("epochs=1"), brightness_data, run_dir=out)
    return out


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("how", ["torch", "pickle"])
def test_load_checkpoint_refuses_a_checkpoint_that_runs_code(tmp_path, how):
    marker = tmp_path / "pwned"
    plant(tmp_path / "ckpt" / "checkpoint.pt", marker, how)
    with pytest.raises(FerError, match=r"checkpoint.pt: not a fer-sweep checkpoint.*could run code"):
        load_checkpoint(tmp_path / "ckpt")
    assert not marker.exists()


def test_train_resume_refuses_a_checkpoint_that_runs_code(brightness_data, tmp_path):
    marker = tmp_path / "pwned"
    plant(tmp_path / "run" / "checkpoint" / "checkpoint.pt", marker)
    with pytest.raises(FerError, match="could run code"):
        train(cfg("epochs=2"), brightness_data, run_dir=tmp_path / "run", resume=tmp_path / "run" / "checkpoint")
    assert not marker.exists()


@pytest.mark.parametrize(
    "doctor, says",
    [
        (lambda c: c.update(optimizer={}), "cannot resume from this checkpoint (KeyError"),
        (lambda c: c["optimizer"]["param_groups"].append(dict(c["optimizer"]["param_groups"][0])), "cannot resume"),
        (lambda c: c["model"].update({k: v[:1] for k, v in list(c["model"].items())[:1]}), "cannot resume"),
        (lambda c: c.update(epoch=-5), "at epoch -5 but holds 1 epochs of history"),
        (lambda c: c.update(epoch=3), "at epoch 3 but holds 1 epochs of history"),
        (lambda c: c.update(history="x"), "'history' is not a list"),
    ],
    ids=["empty optimizer", "extra param group", "wrong tensor shape", "negative epoch", "epoch past its history",
         "history not a list"],
)  # fmt: skip
def test_a_doctored_checkpoint_is_one_line_not_a_traceback_nor_a_strange_run(brightness_data, tmp_path, doctor, says):
    """A checkpoint that loads safely (tensors and plain data) but whose contents do not fit: the resume stops
    with one line naming it, and nothing trains (it used to raise KeyError/RuntimeError, or log epochs -4 to 1)."""
    run = tmp_path / "run"

    def stop_after_1(metrics, _ckpt):
        raise KeyboardInterrupt  # as a killed run: epoch 1 of 2 in its checkpoint

    with pytest.raises(KeyboardInterrupt):
        train(cfg("epochs=2"), brightness_data, run_dir=run, report=stop_after_1)
    path = run / "checkpoint" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    doctor(ckpt)
    torch.save(ckpt, path)
    with pytest.raises(FerError, match=re.escape(says)) as err:
        train(cfg("epochs=2"), brightness_data, run_dir=run, resume=run / "checkpoint")
    assert str(err.value).startswith(str(run / "checkpoint")) and "\n" not in str(err.value)
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1]


def test_cli_train_resume_refuses_a_checkpoint_that_runs_code(ingested, tmp_path, capsys):
    marker = tmp_path / "pwned"
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(f"data: {ingested}\nmodel: fer_cnn_tiny\nepochs: 2\nthreads: 1\ndevice: cpu\n")
    out = tmp_path / "run"
    plant(out / "checkpoint" / "checkpoint.pt", marker)
    assert main(["train", "--config", str(cfg_file), "--out", str(out), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fer: error: ") and "could run code" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


@pytest.mark.parametrize("weights, file", [("best", "best.pt"), ("final", "checkpoint/checkpoint.pt")])
def test_cli_evaluate_refuses_weights_that_run_code(run_dir, tmp_path, capsys, weights, file):
    marker = tmp_path / "pwned"
    run = copy_run(run_dir, tmp_path / "run")
    plant(run / file, marker)
    assert main(["evaluate", str(run), "--weights", weights]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fer: error: {run / file}: not a fer-sweep") and "could run code" in err
    assert "Traceback" not in err and not marker.exists()


def test_load_weights_refuses_a_final_pt_that_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    plant(tmp_path / "final.pt", marker, "pickle")
    with pytest.raises(FerError, match="final.pt: not a fer-sweep weights file.*could run code"):
        load_weights(tmp_path / "final.pt")
    assert not marker.exists()


def test_sweep_trial_restore_refuses_a_checkpoint_that_runs_code(run_dir, tmp_path):
    from sweeps.trainable import resume_history

    # a real Tune checkpoint folder (what the trainer hands to tune.report) gives the history ...
    assert len(resume_history(str(run_dir / "checkpoint"))) == 1
    # ... a planted one is refused before anything in it runs
    marker = tmp_path / "pwned"
    plant(tmp_path / "tune-ckpt" / "checkpoint.pt", marker)
    with pytest.raises(FerError, match="could run code"):
        resume_history(str(tmp_path / "tune-ckpt"))
    assert not marker.exists()


def test_retrain_refuses_a_best_pt_that_runs_code(ingested, tmp_path):
    from release.retrain import retrain

    marker = tmp_path / "pwned"
    config = tmp_path / "best.yaml"
    config.write_text(f"data: {ingested}\nmodel: fer_cnn_tiny\nepochs: 1\nthreads: 1\ndevice: cpu\n")

    def swap_best_pt(metrics, checkpoint_dir):  # replaces the best.pt the trainer just wrote in the run folder
        plant(Path(checkpoint_dir).parent / "best.pt", marker)

    with pytest.raises(FerError, match="best.pt: not a fer-sweep weights file.*could run code"):
        retrain(config, out=tmp_path / "out", weights="best", report=swap_best_pt, progress=False)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_real_weight_files_load_with_weights_only(run_dir):
    """What the trainer writes (optimizer, schedule and early-stopping state included) loads with weights_only."""
    state = load_checkpoint(run_dir)
    assert {"optimizer", "schedule", "history", "es_state"} <= set(state) and state["epoch"] == 1
    best = load_weights(run_dir / "best.pt")
    assert best["classes"] == ["happy", "neutral", "sad", "surprise"] and best["epoch"] == 1


# ----------------------------------------------------------------------------------------------
# 2. A truncated or corrupt weight file is one line, exit 2
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("weights, file", [("best", "best.pt"), ("final", "checkpoint/checkpoint.pt")])
def test_cli_evaluate_truncated_weights_is_one_line(run_dir, tmp_path, weights, file):
    run = copy_run(run_dir, tmp_path / "run")
    blob = (run / file).read_bytes()
    (run / file).write_bytes(blob[: len(blob) // 2])
    env = dict(os.environ, FER_NO_PROGRESS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "fer_cli", "evaluate", str(run), "--weights", weights],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"fer: error: {run / file}: ") and "truncated or corrupt" in lines[0]
    assert "re-run training or restore the file" in lines[0]


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_resume_from_a_corrupt_checkpoint_is_a_fer_error(brightness_data, run_dir, tmp_path, content):
    run = copy_run(run_dir, tmp_path / "run")
    ckpt = run / "checkpoint" / "checkpoint.pt"
    if content is None:  # truncated
        content = ckpt.read_bytes()[:-100]
    ckpt.write_bytes(content)
    with pytest.raises(FerError, match=r"checkpoint.pt: checkpoint is truncated or corrupt"):
        train(cfg("epochs=2"), brightness_data, run_dir=run, resume=run)


def test_a_weights_file_of_another_shape_is_a_fer_error(run_dir, tmp_path):
    from fer_core.train.evaluate import load_run_model

    run = copy_run(run_dir, tmp_path / "run")
    torch.save(
        {
            "model": {"w": torch.zeros(2)},
            "epoch": 1,
            "config": {"model": "fer_cnn_tiny"},
            "classes": ["a"],
            "data_version": "v",
        },
        run / "best.pt",
    )
    with pytest.raises(FerError, match="no convolution kernel"):
        load_run_model(run, "best")
    torch.save([1, 2, 3], run / "best.pt")
    with pytest.raises(FerError, match="not a fer-sweep weights file"):
        load_run_model(run, "best")


# ----------------------------------------------------------------------------------------------
# 3. An exploding loss ends the run as diverged
# ----------------------------------------------------------------------------------------------


def test_an_exploding_adam_run_ends_diverged(brightness_data, tmp_path):
    # Adam at lr=1e5 used to "complete" with a training loss around 1e11 and chance accuracy
    result = train(cfg("epochs=6", "lr=1e5"), brightness_data, run_dir=tmp_path / "run")
    assert result.status == "diverged", result.message
    assert len(result.history) == 1  # epoch 2 (the second exploding one) ends it
    assert result.message.startswith("training loss ") and " in epoch 2 is above 5 x ln(4) = 6.93 " in result.message
    assert "for 2 epochs in a row" in result.message and "lower lr, add warmup, or check the data" in result.message
    saved = strict_json((tmp_path / "run" / "result.json").read_text())
    assert saved["status"] == "diverged" and saved["epochs"] == 1


def test_diverge_factor_0_turns_the_rule_off(brightness_data):
    result = train(cfg("epochs=3", "lr=1e5", "diverge_factor=0"), brightness_data)
    assert result.status == "completed" and result.final["train_loss"] > 1e6


def test_a_healthy_run_is_not_stopped(brightness_data):
    # default diverge settings; the first epoch's loss (about 1.5) is above ln(4) = 1.39, as untrained models' are
    result = train(cfg("epochs=6", "lr=3e-3", "model_args.bn_momentum=0.3"), brightness_data)
    assert result.status == "completed" and len(result.history) == 6
    assert result.history[0]["train_loss"] > math.log(4)


@pytest.mark.parametrize(
    "losses, patience, expect",
    [
        ([1.5, 1.2, 0.9, 0.5], 2, None),  # learning
        ([1e11], 2, None),  # one exploding epoch is not yet enough
        ([1e11, 0.9], 2, None),  # recovered
        ([1.4, 20.0, 1.0], 2, None),
        (
            [1.4, 20.0, 30.0],
            2,
            "training loss 30 in epoch 3 is above 10 x ln(4) = 13.9 (10 times a uniform guess's "
            "loss) for 2 epochs in a row",
        ),
        (
            [20.0],
            1,
            "training loss 20 in epoch 1 is above 10 x ln(4) = 13.9 (10 times a uniform guess's loss) for 1 epoch",
        ),
        (
            [0.05, 0.04, 2.0, 1.8],
            2,
            "training loss 1.8 in epoch 4 is above ln(4) = 1.39 (a uniform guess's loss) and "
            "10 x its best 0.04 (epoch 2) = 0.4 for 2 epochs in a row",
        ),
        ([0.05, 0.04, 0.5, 0.9], 2, None),  # 10x its best, but still better than a uniform guess
        ([0.05, 0.04, 2.0, 0.3], 2, None),  # a spike that recovers
    ],
)
def test_divergence_rule(losses, patience, expect):
    assert divergence_reason(losses, 4, 10.0, patience) == expect


def test_divergence_rule_off_and_validated():
    assert divergence_reason([1e11, 1e12, 1e13], 4, 0.0, 2) is None
    for bad in ("diverge_factor=0.5", "diverge_factor=1", "diverge_factor=-1", "diverge_patience=0"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            cfg(bad)
    assert (cfg().diverge_factor, cfg().diverge_patience) == (5.0, 2)


def test_default_rule_on_real_face_curves():
    """Per-epoch training losses of fer_cnn_small on 3,890 real FER2013 faces (4 classes): every run that
    learned stays below 1.8 x ln(4); Adam at lr=1 sits at chance accuracy with 5-9 x ln(4) and is caught."""
    learned = {
        "adam 1e-3": [2.01, 1.61, 1.43, 1.28],
        "sgd 1e-3": [2.18, 1.8, 1.62, 1.48],
        "adam 0.3": [2.41, 1.55, 1.63, 1.58],
        "sgd 0.5": [1.91, 1.46, 1.43, 1.41],
    }
    for name, losses in learned.items():
        assert all(divergence_reason(losses[:i], 4, 5.0, 2) is None for i in range(1, 5)), name
    stuck = [12.7, 7.27, 7.84, 10.0]  # Adam lr=1: val acc .25 (chance)
    assert divergence_reason(stuck[:1], 4, 5.0, 2) is None
    assert divergence_reason(stuck[:2], 4, 5.0, 2).startswith("training loss 7.27 in epoch 2 is above 5 x ln(4)")


class Interrupt(Exception):
    pass


def test_resume_of_a_checkpoint_from_before_the_divergence_keys(brightness_data, tmp_path):
    full = train(cfg("epochs=2"), brightness_data)

    def stop_after_1(metrics, checkpoint_dir):
        raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg("epochs=2"), brightness_data, report=stop_after_1, run_dir=tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoint" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    for key in ("diverge_factor", "diverge_patience"):  # as written before these keys existed
        del state["config"][key]
    torch.save(state, ckpt)
    # a key the old config lacks counts as its default: the resume works and matches an uninterrupted run
    resumed = train(cfg("epochs=2"), brightness_data, run_dir=tmp_path / "run", resume=ckpt)
    strip = lambda h: [{k: v for k, v in m.items() if k not in ("images_per_s", "epoch_time_s")} for m in h]
    assert resumed.status == "completed" and strip(resumed.history) == strip(full.history)
    # ... and a value other than the default is a config change
    with pytest.raises(FerError, match=r"diverge_patience: 2 -> 3"):
        train(cfg("epochs=2", "diverge_patience=3"), brightness_data, resume=ckpt)


# ----------------------------------------------------------------------------------------------
# 4. Strict JSON
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lr", ["1e5", "1e12"])
def test_a_diverged_runs_json_files_are_strict(brightness_data, tmp_path, lr):
    # sgd lr=1e5: epoch 1 has a finite train loss but a NaN val loss, epoch 2 a NaN train loss;
    # sgd lr=1e12: the train loss is NaN in epoch 1, so the best val accuracy is NaN
    result = train(cfg("epochs=3", "optimizer=sgd", f"lr={lr}"), brightness_data, run_dir=tmp_path / "run")
    assert result.status == "diverged"
    summary = strict_json((tmp_path / "run" / "result.json").read_text())
    jsonl = tmp_path / "run" / "metrics.jsonl"  # none when the first epoch diverged
    lines = [strict_json(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
    assert summary["status"] == "diverged" and len(lines) == len(result.history)
    values = list(summary.values()) + [v for m in lines for v in m.values()]
    assert None in values  # a non-finite number was written as null


def test_evaluate_metrics_json_is_strict(ingested, tmp_path):
    from fer_core.train.evaluate import evaluate_run

    # weights that went non-finite (as a diverging run's can) give a NaN loss
    train(cfg(f"data={ingested}", "epochs=1"), run_dir=tmp_path / "run")
    state = load_weights(tmp_path / "run" / "best.pt")
    for value in state["model"].values():
        if value.is_floating_point():
            value.fill_(math.inf)
    torch.save(state, tmp_path / "run" / "best.pt")
    out = evaluate_run(tmp_path / "run", split="test", device="cpu")
    assert not math.isfinite(out["loss"])
    saved = strict_json((tmp_path / "run" / "eval-test" / "metrics.json").read_text())
    assert saved["loss"] is None and saved["n"] == out["n"]


def test_ladder_json_is_strict(brightness_data, tmp_path):
    from fer_core.train.ladder import run_ladder

    rows = run_ladder(
        "memory",
        tmp_path / "ladder",
        models=["a"],
        epochs=1,
        data=brightness_data,
        overrides=["threads=1", "device=cpu", "optimizer=sgd", "lr=1e12", "batch_size=32"],
    )
    assert rows[0]["status"] == "diverged"
    saved = strict_json((tmp_path / "ladder" / "ladder.json").read_text())
    assert saved[0]["status"] == "diverged" and saved[0]["best_val_acc"] is None
