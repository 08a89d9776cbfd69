"""The cluster flow on shared storage, end to end: ingest -> sweep -> dashboard -> export -> retrain -> confirm,
with every artefact on ``file://`` storage and on a real S3 server (moto, 127.0.0.1), no local copies.

Each step is the real command in a subprocess (its own local Ray for the sweep and confirm), given only
URIs; the S3 run gets the endpoint and test credentials through the standard AWS variables.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

from subprocs import clean_env

pytestmark = [pytest.mark.slow, pytest.mark.e2e]  # each test runs the real commands in subprocesses

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list, env: dict, timeout: int = 400) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def _fer(*args, env) -> subprocess.CompletedProcess:
    return _run(["-m", "fer_cli", *args], env)


def _flow(root: str, env: dict, synth_dir: Path, read, sweep_flags: tuple = ()) -> None:
    """The whole flow against ``root`` (a URI); ``read(rel)`` returns a stored file's bytes (or None)."""
    data, sweeps, exp = f"{root}/data/fer", f"{root}/sweeps", f"{root}/sweeps/flow"
    _fer("data", "ingest", synth_dir, "--out", data, "--no-mislabels", "--quiet", env=env)
    manifest = json.loads(read("data/fer/manifest.json"))
    assert read(f"data/fer/{manifest['shards'][0]['path']}") is not None
    _fer("data", "report", data, env=env)

    _run(
        [
            "sweeps/regularization.py",
            "--smoke",
            "--samples",
            "2",
            "--max-epochs",
            "2",
            "--no-asha",
            "--no-collapse-stop",
            "--concurrency",
            "1",
            "--num-cpus",
            "2",
            "--wandb-mode",
            "disabled",
            "--data",
            data,
            "--storage",
            sweeps,
            "--name",
            "flow",
            *sweep_flags,
        ],
        env,
    )
    record = json.loads(read("sweeps/flow/sweep.json"))
    assert record["format"] == "fer-sweep-experiment" and record["finished"] and record["trials"] == 2
    assert record["data"]["version"] == manifest["version"] and record["experiment_dir"].endswith("sweeps/flow")
    assert read("sweeps/flow/trials.parquet") and read("sweeps/flow/summary.txt")

    _fer("dashboard", "build", exp, env=env)
    assert b'name="generator" content="fer-sweep dashboard"' in read("sweeps/flow/dashboard.html")

    _fer("export-best", exp, "--out", f"{root}/exports/best.yaml", env=env)
    exported = yaml.safe_load(read("exports/best.yaml"))
    assert exported["data"] == data and exported["provenance"]["experiment"] == "flow"

    out = _fer("retrain", f"{root}/exports/best.yaml", "--out", f"{root}/models/best", "--quiet", env=env)
    assert json.loads(out.stdout[: out.stdout.rindex("}") + 1])["n"] > 0
    metrics = json.loads(read("models/best/metrics.json"))
    assert metrics["test"]["n"] > 0 and read("models/best/MODEL_CARD.md") and read("models/best/final.pt")

    _fer("confirm", exp, "--top", "1", "--seeds", "1", "--num-cpus", "2", env=env)
    assert json.loads(read("sweeps/flow/confirm.json"))["ranking"]
    _fer("export-best", exp, "--by", "confirmed", "--out", f"{root}/exports/confirmed.yaml", env=env)
    assert yaml.safe_load(read("exports/confirmed.yaml"))["provenance"]["ranked_by"] == "confirmed"


def test_the_cluster_flow_on_file_uris(synth_dir, tmp_path):
    def read(rel):
        p = tmp_path / rel
        return p.read_bytes() if p.is_file() else None

    _flow(f"file://{tmp_path}", clean_env(), synth_dir, read)
    assert not any(p.name.startswith(".") and ".tmp-" in p.name for p in tmp_path.rglob("*"))


def test_the_cluster_flow_on_s3(synth_dir, s3_server, s3_bucket, tmp_path):
    fs = s3_server.filesystem()

    def read(rel):
        try:
            with fs.open_input_stream(f"{s3_bucket}/{rel}") as fh:
                return fh.read()
        except (FileNotFoundError, OSError):
            return None

    journal = tmp_path.parent / f"{tmp_path.name}-optuna.log"  # the study: a journal on a "shared" disk
    _flow(
        f"s3://{s3_bucket}",
        s3_server.subprocess_env(clean_env()),
        synth_dir,
        read,
        sweep_flags=("--optuna-storage", f"journal:{journal}"),
    )
    import optuna

    study = optuna.load_study(
        study_name="flow",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal))),
    )
    assert len(study.trials) == 2 and all(t.state.is_finished() for t in study.trials)
    listed = fs.get_file_info(pafs.FileSelector(s3_bucket, recursive=True))
    names = {i.path.removeprefix(f"{s3_bucket}/") for i in listed if i.type == pafs.FileType.File}
    assert {"sweeps/flow/tuner.pkl", "sweeps/flow/epochs.parquet", "models/best/model.onnx"} <= names
    trials = {n.split("/")[2] for n in names if n.startswith("sweeps/flow/fer_trainable_")}
    assert len(trials) == 2
    for t in trials:  # written by the trial actors (Ray workers): results and the one kept checkpoint
        mine = [n for n in names if n.startswith(f"sweeps/flow/{t}/")]
        assert f"sweeps/flow/{t}/result.json" in mine
        assert len([n for n in mine if n.endswith("/checkpoint.pt")]) == 1, mine
    assert not list(tmp_path.iterdir()), "nothing may be written locally in the test's folder"


def test_the_single_run_commands_take_uris(s3_server, s3_bucket):
    """synth, ingest from and to S3, train (+ evaluate), evaluate, ladder: no command refuses a URI."""
    fs, root, env = s3_server.filesystem(), f"s3://{s3_bucket}", s3_server.subprocess_env(clean_env())

    def names(prefix):
        listed = fs.get_file_info(pafs.FileSelector(f"{s3_bucket}/{prefix}", recursive=True, allow_not_found=True))
        return {i.path.removeprefix(f"{s3_bucket}/{prefix}/") for i in listed if i.type == pafs.FileType.File}

    _fer("data", "synth", "--out", f"{root}/raw", "--n", "300", env=env)
    assert {"synth.json", "truth.csv"} <= names("raw")
    _fer("data", "ingest", f"{root}/raw", "--out", f"{root}/data", "--no-mislabels", "--quiet", env=env)
    manifest = json.loads(fs.open_input_stream(f"{s3_bucket}/data/manifest.json").read())
    assert manifest["name"] == "raw" and manifest["sources"][0]["path"] == f"{root}/raw"  # the URI, not a temp copy

    train = [
        "train",
        "--set",
        f"data={root}/data",
        "--set",
        "model=fer_cnn_tiny",
        "--set",
        "epochs=2",
        "--out",
        f"{root}/runs/t1",
        "--quiet",
    ]
    _fer(*train, "--evaluate", env=env)
    assert {
        "config.yaml",
        "metrics.jsonl",
        "best.pt",
        "result.json",
        "checkpoint/checkpoint.pt",
        "eval-test/metrics.json",
    } <= names("runs/t1")
    again = subprocess.run(
        [sys.executable, "-m", "fer_cli", *train], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 2 and "already exists" in again.stderr  # a run is never replaced
    _fer("evaluate", f"{root}/runs/t1", "--split", "val", "--weights", "final", env=env)
    assert "eval-val/metrics.json" in names("runs/t1")
    _fer(
        "ladder",
        "--data",
        f"{root}/data",
        "--out",
        f"{root}/ladder",
        "--models",
        "0",
        "--epochs",
        "1",
        "--quiet",
        env=env,
    )
    assert {"ladder.json", "ladder.md", "fer_cnn_0/result.json"} <= names("ladder")
