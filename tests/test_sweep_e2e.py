"""End to end: the regularization sweep on a real Ray head submitted with `ray job submit` (token auth),
and an interrupted sweep resumed without re-running finished trials."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SWEEP = [sys.executable, "sweeps/regularization.py"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra) -> dict:
    e = dict(
        os.environ,
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        RAY_AUTH_MODE="token",
        FER_NO_PROGRESS="1",
        RAY_USAGE_STATS_ENABLED="0",
        TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="0",
    )
    e.pop("RAY_ADDRESS", None)
    e.pop("WANDB_API_KEY", None)
    e.update(extra)
    return e


@pytest.fixture()
def ray_head():
    """A real head node started with `ray start --head` (token authentication on), stopped afterwards."""
    # a fresh machine has no token yet: `ray start` with RAY_AUTH_MODE=token needs one (~/.ray/auth_token)
    gen = subprocess.run(
        [str(BIN / "ray"), "get-auth-token", "--generate"], env=env(), capture_output=True, text=True, timeout=120
    )
    assert gen.returncode == 0, gen.stderr  # stdout is the token itself: never shown
    port, dash = free_port(), free_port()
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--num-cpus",
        "2",
        "--port",
        str(port),
        "--dashboard-port",
        str(dash),
        "--dashboard-host",
        "127.0.0.1",
        "--include-dashboard",
        "true",
        # The job agent's HTTP port is 52365 by default: where another Ray on this machine (a test beside this
        # one under `pytest -n`) holds it, the agent stays up without HTTP and every submit answers "No available
        # agent" until it gives up. 0: the agent binds a free port and publishes it to the head.
        "--dashboard-agent-listen-port",
        "0",
        "--disable-usage-stats",
    ]
    # In a session of its own: every process of this head (gcs_server, raylet, dashboard, workers) is in the
    # process group `ray start` opens, so the teardown stops this cluster alone. `ray stop` would kill every
    # Ray on the machine, another test's too (pytest -n runs tests side by side).
    start = subprocess.Popen(
        cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = start.communicate(timeout=180)
        assert start.returncode == 0, out
        address = f"http://127.0.0.1:{dash}"
        # The dashboard's job API answers some seconds after `ray start` (a minute or more on a loaded
        # machine, where an early submit got its connection closed): wait until it lists jobs.
        deadline = time.monotonic() + 240
        while True:
            ready = subprocess.run(
                [str(BIN / "ray"), "job", "list", "--address", address],
                env=env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
            if ready.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(2)
        yield address
    finally:
        _kill_group(start.pid)  # also when the start or the wait failed


def _kill_group(pgid: int) -> None:
    """SIGKILL a process group (what `ray stop --force` sends) and wait until none of it is left."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError(f"the Ray head's processes (group {pgid}) outlived SIGKILL for 60 s")


def test_sweep_submitted_as_a_ray_job_with_token_auth(ray_head, ingested, tmp_path):
    assert (Path.home() / ".ray" / "auth_token").is_file()  # Ray 2.60's token auth is on
    storage = tmp_path / "sweeps"
    cmd = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        ray_head,
        "--working-dir",
        str(ROOT),
        "--",
        *SWEEP,
        "--smoke",
        "--data",
        str(ingested),
        "--storage",
        str(storage),
        "--name",
        "job",
        "--wandb-mode",
        "offline",
        "--seed",
        "1",
    ]
    deadline = time.monotonic() + 240  # the head's job agent takes seconds after `ray start` (a minute+ under load)
    while True:
        out = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600, cwd=ROOT)
        if "No available agent" not in out.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "succeeded" in out.stdout + out.stderr
    exp = storage / "job"
    trials = pq.read_table(exp / "trials.parquet").to_pylist()
    epochs = pq.read_table(exp / "epochs.parquet").to_pylist()
    assert len(trials) == 4  # --smoke: 4 trials x up to 4 epochs
    for t in trials:
        assert t["outcome"] in ("completed", "stopped by ASHA", "collapsed", "diverged")
        assert t["config/l2"] > 0 and "config/model" not in t  # the default space fixes the model (fer_cnn_plain)
        rows = [e for e in epochs if e["trial_id"] == t["trial_id"]]
        assert [r["epoch"] for r in rows] == list(range(1, t["epochs"] + 1))
        assert t["peak"] == pytest.approx(max(r["val_acc"] for r in rows))
        assert t["final"] == pytest.approx(rows[-1]["val_acc"])
        assert t["score"] == pytest.approx(sum(r["val_acc"] for r in rows[-3:]) / len(rows[-3:]))
        assert ("config/focal_gamma" in t and t["config/focal_gamma"] is not None) == (t["config/loss"] == "focal")
    assert any(t["outcome"] == "completed" for t in trials)
    # the default space's start point (the plain CNN's hand recipe) is one of the trials, exactly
    recipe = {"dropout_scale": 1.0, "lr": 1e-3, "label_smoothing": 0.1, "loss": "ce", "batch_size": 64, "l2": 1e-6}
    assert any(all(t[f"config/{k}"] == v for k, v in recipe.items()) for t in trials)
    meta = json.loads((exp / "sweep.json").read_text())
    assert meta["data"]["version"].startswith("v") and meta["trials"] == 4
    assert "top" in (exp / "summary.txt").read_text()
    # one offline W&B run per trial, grouped under the experiment
    runs = list((exp / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 4


def _finished_trials(exp: Path) -> int:
    n = 0
    for d in exp.glob("fer_trainable_*"):
        result = d / "result.json"
        if result.is_file():
            lines = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
            n += (
                bool(lines)
                and any(x.get("done") for x in lines)
                or bool(lines and lines[-1].get("trial_status") == "completed")
            )
    return n


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(ingested, tmp_path):
    storage = tmp_path / "sweeps"
    exp = storage / "resumable"
    args = [
        *SWEEP,
        "--data",
        str(ingested),
        "--storage",
        str(storage),
        "--name",
        "resumable",
        "--samples",
        "4",
        "--max-epochs",
        "3",
        "--grace-period",
        "3",
        "--concurrency",
        "1",
        "--num-cpus",
        "2",
        "--wandb-mode",
        "disabled",
        "--set",
        "model_args.bn_momentum=0.1",
    ]
    proc = subprocess.Popen(args, env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and _finished_trials(exp) < 2:
        time.sleep(0.5)
    assert proc.poll() is None, "the sweep ended before it could be interrupted:\n" + proc.stdout.read()[-3000:]
    proc.send_signal(signal.SIGINT)  # what Ctrl+C does: Tune saves its state and stops
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    before = {
        d.name: (d / "result.json").read_text() for d in exp.glob("fer_trainable_*") if (d / "result.json").is_file()
    }
    done_before = {k for k, v in before.items() if '"trial_status": "completed"' in v}
    assert 2 <= len(done_before) < 4

    out = subprocess.run([*args, "--resume"], env=env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    trials = pq.read_table(exp / "trials.parquet").to_pylist()
    assert len(trials) == 4 and all(t["outcome"] == "completed" and t["epochs"] == 3 for t in trials)
    for name in done_before:  # finished trials were not run again
        assert (exp / name / "result.json").read_text() == before[name]
    epochs = pq.read_table(exp / "epochs.parquet").to_pylist()
    assert len(epochs) == 12  # 4 trials x 3 epochs, no epoch reported twice


def test_a_node_failure_mid_sweep_is_retried_from_checkpoints(ingested, tmp_path, monkeypatch):
    """Two worker nodes (ray.cluster_utils.Cluster); one is removed while its trial runs; the trial
    is retried on the other node from its last checkpoint and the sweep finishes, leaving no copy of that
    checkpoint in the node's temp folder."""
    import threading

    import ray
    from ray.cluster_utils import Cluster

    from sweeps.driver import run

    node_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # the nodes' TMPDIR (short: Ray's socket paths)
    monkeypatch.setenv("TMPDIR", str(node_tmp))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    storage = tmp_path / "sweeps"
    exp = storage / "failover"
    removed = []

    def kill_a_worker_mid_trial():
        deadline = time.time() + 240
        while time.time() < deadline:
            for result in exp.glob("fer_trainable_*/result.json"):
                lines = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
                if lines and lines[-1].get("epoch", 0) >= 2 and lines[-1].get("trial_status") == "running":
                    node_ip = lines[-1].get("node_ip")
                    victim = workers[0]
                    cluster.remove_node(victim, allow_graceful=False)
                    removed.append((result.parent.name, node_ip))
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_a_worker_mid_trial, daemon=True)
    try:
        ray.init(address=cluster.address)
        killer.start()
        run(
            [
                "--data",
                str(ingested),
                "--storage",
                str(storage),
                "--name",
                "failover",
                "--samples",
                "2",
                "--max-epochs",
                "6",
                "--grace-period",
                "6",
                "--concurrency",
                "2",
                "--wandb-mode",
                "disabled",
                "--max-failures",
                "3",
                "--no-collapse-stop",
                "--set",
                "model_args.bn_momentum=0.1",
            ]
        )
        killer.join(timeout=5)
        assert removed, "no trial reached epoch 2 while both nodes were up"
        failed = [d for d in exp.glob("fer_trainable_*") if (d / "error.txt").is_file()]
        assert len(failed) == 1, "the removed node's trial should have failed once and been retried"
        trials = pq.read_table(exp / "trials.parquet").to_pylist()
        assert len(trials) == 2 and all(t["outcome"] == "completed" and t["epochs"] == 6 for t in trials)
        epochs = pq.read_table(exp / "epochs.parquet").to_pylist()
        for t in trials:  # every epoch reported once, in order, even for the trial that moved node
            assert sorted(r["epoch"] for r in epochs if r["trial_id"] == t["trial_id"]) == list(range(1, 7))
        copies = sorted(p.name for p in node_tmp.glob("checkpoint_tmp_*"))  # what Checkpoint.to_directory() leaves
        assert not copies, f"the retried trial left its checkpoint's copy in the nodes' temp folder: {copies}"
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(node_tmp, ignore_errors=True)
