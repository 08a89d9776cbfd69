"""The trainer on tiny data: reporting, reproducibility, exact resume, divergence, early stopping, L2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_core.errors import FerError
from fer_core.train import EPOCH_METRICS, TrainData, load_config, load_train_data, train
from fer_core.train.trainer import add_l2_grad_, l2_penalty

TINY = ["model=fer_cnn_tiny", "batch_size=32", "eval_batch_size=64", "threads=1", "device=cpu"]


@pytest.fixture(scope="module")
def data(brightness_data) -> TrainData:
    return brightness_data


def cfg(*overrides):
    return load_config(overrides=[*TINY, *overrides])


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_reports_every_epoch_with_all_metrics_and_writes_the_run(data, tmp_path):
    seen = []
    result = train(
        cfg("epochs=3", "augment=soft", "l2=1e-4"),
        data,
        report=lambda m, ckpt: seen.append((m, ckpt)),
        run_dir=tmp_path / "run",
    )
    assert result.status == "completed" and len(seen) == 3
    for epoch, (m, ckpt) in enumerate(seen, 1):
        assert m["epoch"] == epoch
        assert set(EPOCH_METRICS) <= set(m)
        assert {f"val_recall_{c}" for c in data.classes} <= set(m)
        assert np.asarray(m["val_confusion"]).sum() == 32
        assert m["drop_from_peak"] == pytest.approx(m["best_val_acc"] - m["val_acc"])
        assert m["train_val_gap"] == pytest.approx(m["train_acc"] - m["val_acc"])
        assert m["l2_penalty"] > 0 and m["images_per_s"] > 0
        assert ckpt is not None and (tmp_path / "run" / "checkpoint" / "checkpoint.pt").is_file()
        json.dumps(m)  # plain Python numbers only (what Tune and W&B log)
    assert seen[-1][0]["best_val_acc"] == max(m["val_acc"] for m, _ in seen)
    run = tmp_path / "run"
    assert {"config.yaml", "metrics.jsonl", "best.pt", "result.json", "checkpoint"} <= {p.name for p in run.iterdir()}
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    assert load_config(run / "config.yaml") == cfg("epochs=3", "augment=soft", "l2=1e-4")
    assert json.loads((run / "result.json").read_text())["best_epoch"] == result.best_epoch


def test_learns_the_learnable_signal(data):
    result = train(cfg("epochs=8", "lr=3e-3", "model_args.bn_momentum=0.3"), data)
    assert result.best_val_acc >= 0.6  # chance is 0.25


def test_seeded_runs_are_identical_on_cpu(data):
    a = train(cfg("epochs=2", "augment=strong", "seed=5"), data)
    b = train(cfg("epochs=2", "augment=strong", "seed=5"), data)
    c = train(cfg("epochs=2", "augment=strong", "seed=6"), data)
    strip = lambda h: [{k: v for k, v in m.items() if k not in ("images_per_s", "epoch_time_s")} for m in h]
    assert strip(a.history) == strip(b.history)
    assert state_equal(a.model.state_dict(), b.model.state_dict())
    assert strip(a.history) != strip(c.history)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_resume_continues_exactly(data, tmp_path, schedule):
    settings = (
        "epochs=4",
        "augment=soft",
        f"lr_schedule={schedule}",
        "warmup_epochs=1",
        "l2=1e-4",
        "loss=focal",
        "label_smoothing=0.1",
    )
    full = train(cfg(*settings), data)

    def stop_after_2(m, ckpt):
        if m["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg(*settings), data, report=stop_after_2, run_dir=tmp_path / "run")
    resumed = train(cfg(*settings), data, run_dir=tmp_path / "run", resume=tmp_path / "run" / "checkpoint")
    strip = lambda h: [{k: v for k, v in m.items() if k not in ("images_per_s", "epoch_time_s")} for m in h]
    assert strip(resumed.history) == strip(full.history)
    assert state_equal(resumed.model.state_dict(), full.model.state_dict())
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize("crash", ["after the log line, before the next checkpoint", "after the checkpoint"])
def test_a_resumed_run_folder_logs_each_epoch_once(data, tmp_path, crash):
    """``metrics.jsonl`` after a crash and a resume holds each epoch once, as the checkpoint's history has it: a
    run stopped between checkpoints (``checkpoint_every=2``) logged an epoch the resume trains again, and one
    killed between its checkpoint and its log line had not logged the epoch the checkpoint holds."""
    every, stop_at = ("checkpoint_every=2", 3) if crash.startswith("after the log") else ("checkpoint_every=1", 3)
    run = tmp_path / "run"

    def crash_at(m, _ckpt):
        if m["epoch"] == stop_at:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg("epochs=5", every), data, report=crash_at, run_dir=run)
    log = run / "metrics.jsonl"
    if crash == "after the checkpoint":  # the process died before it appended epoch 3's line
        log.write_text("".join(log.read_text().splitlines(keepends=True)[:2]))
    resumed = train(cfg("epochs=5", every), data, run_dir=run, resume=run / "checkpoint")
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3, 4, 5]
    assert lines == json.loads(json.dumps(resumed.history))


def test_resume_refuses_another_config_or_data(data, tmp_path):
    train(cfg("epochs=1"), data, run_dir=tmp_path / "run")
    with pytest.raises(FerError, match=r"config differs.*lr: 0.001 -> 0.01"):
        train(cfg("epochs=2", "lr=0.01"), data, resume=tmp_path / "run")
    other = TrainData(classes=data.classes, version="vother", uri="other", images=data.images, labels=data.labels)
    with pytest.raises(FerError, match="data version vtest"):
        train(cfg("epochs=2"), other, resume=tmp_path / "run")
    with pytest.raises(FerError, match="no checkpoint"):
        train(cfg("epochs=2"), data, resume=tmp_path / "nowhere")


def test_nan_loss_ends_the_run_as_diverged(data, tmp_path):
    result = train(
        cfg("epochs=3", "optimizer=sgd", "lr=1e12", "momentum=0.9", "augment=none"), data, run_dir=tmp_path / "run"
    )
    assert result.status == "diverged"
    assert "training loss became" in result.message and "lower lr" in result.message
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "diverged"


def test_early_stopping_restores_the_best_weights(data):
    # lr never improves on a constant schedule: patience 2 stops after epoch 3 with epoch 1's weights
    stopped = train(cfg("epochs=6", "early_stopping_monitor=lr", "early_stopping_patience=2"), data)
    assert stopped.status == "early_stopped" and len(stopped.history) == 3
    first = train(cfg("epochs=1"), data)
    # epoch 1 computes the same in both runs (seeded per epoch, schedule constant), so weights match
    assert state_equal(stopped.model.state_dict(), first.model.state_dict())
    assert "best weights restored" in stopped.message


def test_report_exceptions_propagate(data):
    def prune(m, ckpt):
        raise KeyError("pruned")

    with pytest.raises(KeyError, match="pruned"):
        train(cfg("epochs=3"), data, report=prune)


def test_checkpoints_without_a_run_folder_live_only_while_train_runs(data):
    """A run without ``run_dir`` whose ``report`` wants checkpoints writes them to a temp folder; the report
    sees a real checkpoint there, and the folder is gone when train returns or a report raises."""
    folders = []

    def keep(m, ckpt):
        assert (Path(ckpt) / "checkpoint.pt").is_file()
        folders.append(Path(ckpt))

    train(cfg("epochs=2"), data, report=keep)
    assert len(folders) == 2 and folders[0] == folders[1] and not folders[0].exists()

    def stop(m, ckpt):
        folders.append(Path(ckpt))
        raise KeyError("pruned")

    with pytest.raises(KeyError):
        train(cfg("epochs=2"), data, report=stop)
    assert not folders[-1].exists()


def test_weighted_sampler_and_focal_loss_run(data):
    result = train(cfg("epochs=1", "sampler=weighted", "loss=focal", "focal_alpha=[0.2,0.3,0.3,0.2]"), data)
    assert result.status == "completed" and np.isfinite(result.final["train_loss"])


def test_l2_gradient_equals_the_keras_penalty_in_the_loss():
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 3)
    x = torch.randn(7, 5)
    ref = torch.nn.Linear(5, 3)
    ref.load_state_dict(lin.state_dict())
    (ref(x).sum() + 0.01 * ref.weight.pow(2).sum()).backward()
    lin(x).sum().backward()
    add_l2_grad_([lin.weight], 0.01)
    assert torch.allclose(lin.weight.grad, ref.weight.grad)
    assert torch.equal(lin.bias.grad, ref.bias.grad)  # biases are not kernels
    assert l2_penalty([lin.weight], 0.01) == pytest.approx(0.01 * float(lin.weight.detach().pow(2).sum()))


def test_train_reads_shards_and_checks_the_version(ingested, tmp_path):
    data = load_train_data(str(ingested))
    version = data.version
    result = train(cfg(f"data={ingested}", f"data_version={version}", "epochs=1"), run_dir=tmp_path / "run")
    assert result.status == "completed"
    with pytest.raises(FerError, match="version"):
        train(cfg(f"data={ingested}", "data_version=v0000000000000000", "epochs=1"))


def test_evaluate_run_writes_metrics_and_confusion(ingested, tmp_path):
    from fer_core.train.evaluate import evaluate_run

    train(cfg(f"data={ingested}", "epochs=1"), run_dir=tmp_path / "run")
    out = evaluate_run(tmp_path / "run", split="test")
    files = {p.name for p in (tmp_path / "run" / "eval-test").iterdir()}
    assert {"metrics.json", "report.txt", "confusion.json", "confusion.png"} <= files
    saved = json.loads((tmp_path / "run" / "eval-test" / "metrics.json").read_text())
    assert saved["n"] == int(np.asarray(saved["confusion"]).sum()) == out["n"] > 0
    assert 0 <= saved["macro_f1"] <= 1 and set(saved["per_class"]) == set(saved["classes"])


def test_cli_train_evaluate_and_errors(ingested, tmp_path, capsys):
    from fer_cli.main import main

    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(f"data: {ingested}\nmodel: fer_cnn_tiny\nepochs: 2\nthreads: 1\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg_file), "--set", "epochs=1", "--out", str(out), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out.split("run folder")[0])["epochs"] == 1
    # the same folder again without --resume is refused; --resume continues to epochs=2
    assert main(["train", "--config", str(cfg_file), "--set", "epochs=1", "--out", str(out), "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg_file), "--out", str(out), "--resume", "--quiet"]) == 2
    assert "epochs: 1 -> 2" in capsys.readouterr().err  # epochs is part of the schedule: not resumable
    assert main(["evaluate", str(out)]) == 0
    text = capsys.readouterr().out
    assert "macro avg" in text and "confusion.png" in text
    assert main(["train", "--set", "lerning_rate=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fer: error: --set: unknown key 'lerning_rate'") and "Traceback" not in err


@pytest.mark.slow
def test_ladder_trains_rungs_with_their_recipes_and_prints_the_table(ingested, tmp_path):
    from fer_core.train.ladder import format_ladder, run_ladder

    rows = run_ladder(
        str(ingested), tmp_path / "ladder", models=["0", "b++"], epochs=1, overrides=["threads=1", "batch_size=128"]
    )
    assert [r["preset"] for r in rows] == ["fer_cnn_0", "fer_cnn_bplusplus"]
    saved = load_config(tmp_path / "ladder" / "fer_cnn_bplusplus" / "config.yaml")
    assert (saved.loss, saved.l2, saved.label_smoothing, saved.augment, saved.epochs) == ("focal", 1e-4, 0.1, "soft", 1)
    table = format_ladder(rows)
    assert table.splitlines()[0].startswith("| Model | Validation Accuracy (peak)")
    assert "| Model B++ |" in table and "+ focal loss" in table
    assert (tmp_path / "ladder" / "ladder.md").read_text().strip() == table
    with pytest.raises(FerError, match="unknown rung"):
        run_ladder(str(ingested), tmp_path / "x", models=["e"])


def test_a_trailing_batch_of_one_image_is_left_out(data):
    # 96 train images, batch 19: 5 full batches and one image left over, which BatchNorm cannot take
    result = train(cfg("epochs=1", "batch_size=19"), data)
    assert result.status == "completed" and np.isfinite(result.final["train_loss"])
