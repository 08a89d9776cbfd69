"""W&B as its users expect: job types, groups, resumed sweep trials continuing their runs, runs of
``fer confirm`` and ``fer retrain``, the retrained model as an artifact, and where the offline files go.

Everything runs offline. The assertions read W&B's own offline files: the transaction log
``offline-run-*/run-<id>.wandb`` (read by ``sweeps.wandb_files``; wandb 0.31 offline writes no config.yaml
or wandb-summary.json), so they check what ``wandb sync`` would upload.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from subprocs import clean_env
from sweeps.wandb_files import is_written, records, run_logs, wait_written
from sweeps.wandb_logging import JOB_CONFIRM, JOB_RETRAIN, JOB_SWEEP, RunLogger, make_callback, resolve_mode

ROOT = Path(__file__).resolve().parents[1]
KEY = "fakekey0123456789abcdef0123456789abcdef77"


# ----------------------------------------------------------------------------------------------
# Reading W&B's offline runs
# ----------------------------------------------------------------------------------------------


def read_runs(wandb_dir: Path) -> list[dict]:
    """Every offline run folder under ``wandb_dir``: its run record, history steps, summary and artifacts (once
    W&B has written them out: a sweep's logging actors end before their W&B service writes the logs)."""
    wait_written(wandb_dir, timeout=60)
    runs = []
    for folder in sorted(wandb_dir.rglob("offline-run-*")):
        if folder.is_symlink() or not folder.is_dir():
            continue
        (log,) = folder.glob("run-*.wandb")
        run = {"folder": folder, "steps": [], "history": [], "summary": {}, "artifacts": [], "exit": None}
        for r in records(log):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                run.update(
                    id=r.run.run_id,
                    job_type=r.run.job_type,
                    group=r.run.run_group,
                    name=r.run.display_name,
                    project=r.run.project,
                    resume=r.run.resume,
                    config={u.key: json.loads(u.value_json) for u in r.run.config.update},
                )
            elif kind == "history":
                row = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
                run["history"].append(row)
                run["steps"].append(r.history.step.num)
            elif kind == "summary":
                run["summary"].update(
                    {"/".join(u.nested_key) or u.key: json.loads(u.value_json) for u in r.summary.update}
                )
            elif kind == "artifact":
                run["artifacts"].append(
                    {
                        "type": r.artifact.type,
                        "name": r.artifact.name,
                        "files": {c.path: c.local_path for c in r.artifact.manifest.contents},
                    }
                )
            elif kind == "exit":
                run["exit"] = r.exit.exit_code
        runs.append(run)
    return runs


def _env(ray_tmp: Path, **extra) -> dict:
    env = clean_env(RAY_TMPDIR=str(ray_tmp), **{"WANDB_MODE": "offline", **extra})
    env.pop("WANDB_API_KEY", None)
    return env


def _files_holding(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink() and secret.encode() in p.read_bytes()]


# ----------------------------------------------------------------------------------------------
# Units: what each command asks W&B for
# ----------------------------------------------------------------------------------------------


def test_sweep_trials_get_job_type_group_and_a_resumable_run_id(tmp_path, monkeypatch):
    """Ray's callback would call wandb.init(id=trial_id, resume=False); ours asks to continue the run."""
    from ray.air.integrations.wandb import WandbLoggerCallback

    seen = {}
    monkeypatch.setattr(
        WandbLoggerCallback, "_start_logging_actor", lambda self, trial, exclude, **kwargs: seen.update(kwargs)
    )

    class Trial:  # what log_trial_start reads of a Tune trial
        trial_id, config, experiment_dir_name = "abc12345", {"lr": 0.1}, "exp"

        def __str__(self):
            return "fer_trainable_abc12345"

    cb = make_callback("offline", project="p", group="reg1", exp_dir=str(tmp_path))
    cb.log_trial_start(Trial())
    assert seen["id"] == "abc12345" and seen["resume"] == "allow" and seen["job_type"] == JOB_SWEEP
    assert seen["group"] == "reg1" and seen["mode"] == "offline" and seen["dir"] == str(tmp_path / "wandb")
    assert make_callback("disabled", project="p", group="g", exp_dir=str(tmp_path)) is None


def test_disabled_runs_write_nothing(tmp_path):
    tracker = RunLogger("disabled", project="p", group="g", job_type=JOB_CONFIRM, target=str(tmp_path))
    run = tracker.start(name="x", config={})
    assert run is None and tracker.close() is None
    tracker.log_epoch(run, {"epoch": 1, "val_acc": 0.5})
    tracker.finish(run, {"score": 1.0})
    assert list(tmp_path.iterdir()) == []
    assert resolve_mode("auto", {"WANDB_MODE": "disabled", "WANDB_API_KEY": KEY}) == "disabled"


def test_runs_of_a_target_written_at_the_end_move_into_it(tmp_path, monkeypatch):
    """fer retrain's --out appears only when the model is written: W&B writes on the node, then moves in."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    out = tmp_path / "model"
    tracker = RunLogger("offline", project="p", group="g", job_type=JOB_RETRAIN, target=str(out), direct=False)
    assert not out.exists()
    run = tracker.start(name="r", config={"lr": 0.1})
    node = tracker.folder.path
    assert not out.exists() and node.is_dir()
    tracker.log_epoch(run, {"epoch": 1, "val_acc": 0.5, "status": "running", "val_confusion": [[1]]})
    out.mkdir()
    tracker.finish(run, {"test/accuracy": 0.75})
    assert tracker.close() == str(out / "wandb")
    assert not node.exists()
    (r,) = read_runs(out / "wandb")
    assert (r["job_type"], r["group"], r["name"], r["config"]["lr"]) == (JOB_RETRAIN, "g", "r", 0.1)
    assert r["steps"] == [1] and r["history"][0]["val_acc"] == 0.5 and "val_confusion" not in r["history"][0]
    assert r["summary"]["test/accuracy"] == 0.75 and r["exit"] == 0


def _late_writes(monkeypatch, delay: float) -> None:
    """W&B as on a loaded node: the service closes a finished run's stream (and writes its log) ``delay``
    seconds after ``run.finish()`` has returned (``inform_finish`` is a message without an answer)."""
    import threading

    from wandb.sdk.lib.service.service_connection import ServiceConnection

    inform = ServiceConnection.inform_finish

    def late(self, run_id):
        threading.Timer(delay, inform, (self, run_id)).start()

    monkeypatch.setattr(ServiceConnection, "inform_finish", late)


def test_runs_written_out_after_finish_returned_are_moved_whole(tmp_path, monkeypatch):
    """run.finish() returns before W&B writes the run's log: the move waits for it instead of taking a 7-byte
    header and deleting the folder the records were about to land in (a flaky CI run lost its run record)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    _late_writes(monkeypatch, 2.0)
    out = tmp_path / "model"
    tracker = RunLogger("offline", project="p", group="g", job_type=JOB_RETRAIN, target=str(out), direct=False)
    run = tracker.start(name="r", config={"lr": 0.1})
    node = tracker.folder.path
    tracker.log_epoch(run, {"epoch": 1, "val_acc": 0.5})
    out.mkdir()
    tracker.finish(run, {"test/accuracy": 0.75})
    (log,) = node.rglob("run-*.wandb")
    assert not is_written(log)  # finish() has returned; nothing but the header is on disk yet
    assert tracker.close() == str(out / "wandb")
    assert not node.exists()
    (r,) = read_runs(out / "wandb")
    assert (r["job_type"], r["name"], r["steps"], r["exit"]) == (JOB_RETRAIN, "r", [1], 0)
    assert r["summary"]["test/accuracy"] == 0.75


def test_runs_never_written_out_are_copied_as_they_are_and_kept_on_the_node(tmp_path, monkeypatch, capsys):
    """A run whose log never gets its exit record (a process killed mid-run): the move gives up after
    WRITE_TIMEOUT_S, copies what there is, and keeps the node's folder, where W&B may still finish it."""
    from sweeps import wandb_logging

    monkeypatch.setattr(wandb_logging, "WRITE_TIMEOUT_S", 0.5)
    (tmp_path / "node-tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "node-tmp"))  # the folder it keeps: the test's own
    out = tmp_path / "model"
    folder = wandb_logging.RunFolder(str(out), direct=False)
    assert folder.path.parent == tmp_path / "node-tmp"
    run_dir = folder.path / "wandb" / "offline-run-20261203_000000-abc"
    run_dir.mkdir(parents=True)
    (run_dir / "run-abc.wandb").write_bytes(b":W&B\x00\x01\x00")  # the header alone, as during a run
    out.mkdir()
    assert folder.close() == str(out / "wandb")
    assert (out / "wandb" / "wandb" / run_dir.name / "run-abc.wandb").read_bytes()[:4] == b":W&B"
    assert (run_dir / "run-abc.wandb").is_file()  # not deleted
    said = capsys.readouterr().err
    assert "1 run(s) were not written out" in said and run_dir.name in said and str(folder.path) in said


def test_a_log_is_written_once_its_exit_record_is_there(tmp_path, monkeypatch):
    """``is_written`` on a real log: whole, cut inside its last record, cut before its exit record."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    tracker = RunLogger("offline", project="p", group="g", job_type=JOB_RETRAIN, target=str(tmp_path / "exp"))
    run = tracker.start(name="r", config={})
    tracker.log_epoch(run, {"epoch": 1, "val_acc": 0.5})
    tracker.finish(run)
    tracker.close()
    (log,) = run_logs(tmp_path / "exp")
    assert wait_written(tmp_path / "exp", timeout=60) == []
    kinds = [r.WhichOneof("record_type") for r in records(log)]
    assert kinds[0] == "header" and kinds[-1] == "exit" and "run" in kinds
    data = log.read_bytes()
    cut = tmp_path / "cut" / "offline-run-x" / "run-x.wandb"
    cut.parent.mkdir(parents=True)
    cut.write_bytes(data[:-3])  # the exit record cut short: not yielded
    assert not is_written(cut) and [r.WhichOneof("record_type") for r in records(cut)] == kinds[:-1]
    cut.write_bytes(data[:7])
    assert not is_written(cut) and list(records(cut)) == []
    assert wait_written(tmp_path / "cut", timeout=0.3) == [cut]
    cut.write_bytes(data)
    assert is_written(cut)


@pytest.mark.slow
def test_runs_of_an_object_store_experiment_are_uploaded_into_it(s3_server, s3_bucket, tmp_path, monkeypatch):
    """The files stay on the node while the command runs and end up in <experiment>/wandb on the store."""
    import pyarrow.fs as pafs

    s3_server.apply(monkeypatch)
    monkeypatch.setenv("WANDB_MODE", "offline")
    exp = s3_server.uri(s3_bucket, "sweeps/reg1")
    tracker = RunLogger("offline", project="p", group="reg1", job_type=JOB_CONFIRM, target=exp)
    run = tracker.start(name="t-seed1000", config={})
    tracker.log_epoch(run, {"epoch": 1, "val_acc": 0.5})
    tracker.finish(run, {"score": 0.5})
    node = tracker.folder.path
    where = tracker.close()
    assert where.startswith(f"s3://{s3_bucket}/sweeps/reg1/wandb") and not node.exists()
    fs = s3_server.filesystem()
    names = [
        i.path
        for i in fs.get_file_info(pafs.FileSelector(f"{s3_bucket}/sweeps/reg1/wandb", recursive=True))
        if i.type == pafs.FileType.File
    ]
    assert any(n.endswith(f"run-{run.id}.wandb") for n in names), names
    local = tmp_path / "down"
    from fer_core.storage import locate

    locate(exp).child("wandb").download_dir(local)
    (r,) = read_runs(local)
    assert (r["id"], r["job_type"], r["summary"]["score"]) == (run.id, JOB_CONFIRM, 0.5)


# ----------------------------------------------------------------------------------------------
# End to end: an interrupted and resumed sweep, then confirm and retrain
# ----------------------------------------------------------------------------------------------

MAX_EPOCHS = 10


def _reported_epochs(exp: Path) -> int:
    n = 0
    for f in exp.glob("fer_trainable_*/result.json"):
        n = max(n, sum(1 for line in f.read_text().splitlines() if line.strip()))
    return n


@pytest.fixture(scope="module")
def resumed(ingested, tmp_path_factory):
    """A 1-trial sweep interrupted (SIGINT) after 2 of its epochs, then resumed with --resume."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    storage = tmp_path_factory.mktemp("sweeps")
    exp = storage / "wbresume"
    args = [
        sys.executable,
        "sweeps/regularization.py",
        "--smoke",
        "--samples",
        "1",
        "--max-epochs",
        str(MAX_EPOCHS),
        "--no-asha",
        "--no-collapse-stop",
        "--concurrency",
        "1",
        "--num-cpus",
        "1",
        "--data",
        str(ingested),
        "--storage",
        str(storage),
        "--name",
        "wbresume",
        "--wandb-mode",
        "offline",
    ]
    try:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=_env(ray_tmp), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and _reported_epochs(exp) < 2:
            time.sleep(0.2)
        assert proc.poll() is None, "the sweep ended before it could be interrupted:\n" + proc.stdout.read()[-3000:]
        proc.send_signal(signal.SIGINT)  # Ctrl+C: Tune saves its state and stops
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        first_epochs = _reported_epochs(exp)
        assert 2 <= first_epochs < MAX_EPOCHS
        out = subprocess.run(
            [*args, "--resume"], cwd=ROOT, env=_env(ray_tmp), capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        yield exp
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.e2e
def test_a_resumed_trial_continues_its_wandb_run(resumed):
    import pyarrow.parquet as pq

    (trial,) = pq.read_table(resumed / "trials.parquet").to_pylist()
    assert trial["epochs"] == MAX_EPOCHS and trial["outcome"] == "completed"
    runs = read_runs(resumed / "wandb")
    # W&B offline writes one folder per process: the launch's and the resume's, both with the trial's run id
    assert len(runs) == 2, [r["folder"].name for r in runs]
    assert {r["id"] for r in runs} == {trial["trial_id"]}
    for r in runs:
        assert (r["job_type"], r["group"], r["project"]) == (JOB_SWEEP, "wbresume", "fer-sweep")
        assert r["resume"], "the run asks W&B to continue the run with its id (resume='allow')"
    launch, resume = sorted(runs, key=lambda r: r["folder"].name)
    # the resumed part logs the epochs after the checkpoint it resumed from, and together they are the whole trial
    assert launch["steps"] and resume["steps"] and min(resume["steps"]) > 1
    assert max(resume["steps"]) == MAX_EPOCHS
    assert set(launch["steps"]) | set(resume["steps"]) == set(range(1, MAX_EPOCHS + 1))
    assert [h["epoch"] for h in resume["history"]] == resume["steps"]


@pytest.mark.slow
@pytest.mark.e2e
def test_confirm_and_retrain_log_their_runs_and_the_model(resumed, tmp_path, monkeypatch):
    """In-process, offline through auto mode with a key set (WANDB_MODE wins): the key is dropped, written nowhere."""
    from fer_cli.main import main

    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # where offline artifacts are staged
    try:
        sweep_runs = {r["folder"] for r in read_runs(resumed / "wandb")}
        assert main(["confirm", str(resumed), "--top", "1", "--seeds", "2", "--num-cpus", "2"]) == 0
        assert "WANDB_API_KEY" not in os.environ  # offline: dropped before Ray started
        monkeypatch.setenv("WANDB_API_KEY", KEY)
        best, model = tmp_path / "best.yaml", tmp_path / "model"
        assert main(["export-best", str(resumed), "--out", str(best)]) == 0
        assert main(["retrain", str(best), "--epochs", "2", "--out", str(model), "--quiet"]) == 0
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    # fer confirm: one run per (trial, seed), job type confirm, grouped with the sweep's trials
    confirm = [r for r in read_runs(resumed / "wandb") if r["folder"] not in sweep_runs]
    rows = json.loads((resumed / "confirm.json").read_text())
    assert rows["wandb"]["runs"] == str(resumed / "wandb") and rows["wandb"]["job_type"] == JOB_CONFIRM
    assert len(confirm) == 2
    trial_id = rows["ranking"][0]["trial_id"]
    for r in confirm:
        assert (r["job_type"], r["group"], r["project"]) == (JOB_CONFIRM, "wbresume", "fer-sweep")
        assert r["config"]["trial_id"] == trial_id and r["config"]["seed"] in (1000, 1001)
        assert r["name"] == f"{trial_id}-seed{r['config']['seed']}"
        assert r["steps"] == list(range(1, MAX_EPOCHS + 1))  # per-epoch metrics, live from the Ray tasks
        assert r["summary"]["score"] == pytest.approx(sum(h["val_acc"] for h in r["history"][-3:]) / 3)
        assert r["exit"] == 0
    assert len({r["id"] for r in confirm}) == 2

    # fer retrain: one run, job type retrain, files in <out>/wandb, the model as an artifact
    (r,) = read_runs(model / "wandb")
    assert (r["job_type"], r["group"], r["name"]) == (JOB_RETRAIN, "wbresume", f"{trial_id}-retrain-train")
    assert r["config"]["epochs"] == 2 and r["config"]["provenance"]["trial_id"] == trial_id
    assert r["steps"] == [1, 2] and r["exit"] == 0
    metrics = json.loads((model / "metrics.json").read_text())
    assert r["summary"]["test/accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    (art,) = r["artifacts"]
    assert art["type"] == "model" and art["name"] == f"model-wbresume-{trial_id}"
    assert set(art["files"]) == {
        "final.pt",
        "model.pt2",
        "model.onnx",
        "config.yaml",
        "MODEL_CARD.md",
        "metrics.json",
        "confusion.json",
    }
    for name, staged in art["files"].items():  # staged copies, what `wandb sync` uploads
        assert Path(staged).read_bytes() == (model / name).read_bytes()

    # the key: in no file of the experiment, the model or the staged artifacts
    for root in (resumed, model, tmp_path / "wandb-data"):
        assert _files_holding(root, KEY) == []


def test_sweep_results_reach_the_logging_actor_without_waiting():
    """Ray's callback blocks the Tune driver on every result (Queue.put waits for the queue actor's reply:
    1.6 s for a trial's first result on a loaded machine); ours sends and goes on, in order."""
    from sweeps.wandb_logging import _SendOnlyQueue

    sent = []

    class Remote:
        def remote(self, item):
            sent.append(item)
            return object()  # an ObjectRef nobody waits for

    class Queue:  # the parts of ray.util.queue.Queue the callback uses
        actor = type("Actor", (), {"put_nowait": Remote()})()
        size = 7

        def put(self, item, block=True, timeout=None):
            raise AssertionError("the blocking put must not be used")

    q = _SendOnlyQueue(Queue())
    for item in ("result 1", "result 2", "end"):
        q.put(item)
    assert sent == ["result 1", "result 2", "end"] and q.size == 7
