"""The W&B API key never reaches a file, a log or stdout; a resume does not rewrite the launch's record.

Ray's own ``WandbLoggerCallback`` copies ``WANDB_API_KEY`` into its logging actor's runtime environment,
and Ray's runtime-env agent writes it in plain text under the session folder: the control case below
shows that leak, so the search would see ours.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from subprocs import clean_env
from sweeps.wandb_logging import resolve_mode

ROOT = Path(__file__).resolve().parents[1]
KEY = "fakekey0123456789abcdef0123456789abcdef99"  # 40+ characters, like a real W&B key


@pytest.fixture
def ray_tmp():
    """A Ray temp folder of the test's own (short: Ray's socket paths must stay under 108 bytes)."""
    path = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    yield Path(path)  # the sweeps and scripts below start and stop their own local Ray
    shutil.rmtree(path, ignore_errors=True)


def _env(ray_tmp: Path, **extra) -> dict:
    env = clean_env(RAY_TMPDIR=str(ray_tmp), WANDB_API_KEY=KEY, **extra)
    return env


def _files_holding(root: Path, secret: str) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink() and secret.encode() in p.read_bytes():
                hits.append(str(p))
        except OSError:
            continue
    return hits


def test_auto_mode_respects_wandb_mode_when_a_key_is_set():
    assert resolve_mode("auto", {"WANDB_API_KEY": KEY, "WANDB_MODE": "offline"}) == "offline"
    assert resolve_mode("auto", {"WANDB_API_KEY": KEY, "WANDB_MODE": "disabled"}) == "disabled"
    assert resolve_mode("auto", {"WANDB_API_KEY": KEY}) == "online"
    assert resolve_mode("auto", {}) == "offline"
    assert resolve_mode("online", {"WANDB_MODE": "offline"}) == "online"  # an explicit flag wins


_TUNE = textwrap.dedent("""
    import sys
    import ray
    from ray import tune
    which, storage = sys.argv[1], sys.argv[2]
    if which == "stock":
        from ray.air.integrations.wandb import WandbLoggerCallback
        cb = WandbLoggerCallback(project="p", mode="offline", dir=storage)
    else:
        from sweeps.wandb_logging import make_callback
        cb = make_callback("offline", project="p", group="g", exp_dir=storage)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    def trainable(config):
        tune.report({"x": 1.0})
    tune.Tuner(trainable, run_config=tune.RunConfig(storage_path=storage, name="t", callbacks=[cb])).fit()
    ray.shutdown()
""")


@pytest.mark.slow
@pytest.mark.parametrize("which,leaks", [("stock", True), ("ours", False)])
def test_the_logging_actor_gets_no_key(ray_tmp, tmp_path, which, leaks):
    """The key is in the driver's environment in both cases; only Ray's stock callback passes it on."""
    out = subprocess.run(
        [sys.executable, "-c", _TUNE, which, str(tmp_path / "exp")],
        cwd=ROOT,
        env=_env(ray_tmp, WANDB_MODE="offline"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    hits = _files_holding(ray_tmp, KEY)
    assert bool(hits) == leaks, hits


@pytest.mark.slow
@pytest.mark.e2e
def test_a_sweep_with_a_key_set_writes_it_nowhere_and_resume_keeps_the_record(ray_tmp, ingested, tmp_path):
    storage = tmp_path / "sweeps"
    args = [
        sys.executable,
        "sweeps/regularization.py",
        "--smoke",
        "--samples",
        "1",
        "--max-epochs",
        "2",
        "--concurrency",
        "1",
        "--num-cpus",
        "1",
        "--data",
        str(ingested),
        "--storage",
        str(storage),
        "--name",
        "secret",
    ]
    env = _env(ray_tmp, WANDB_MODE="offline")  # auto mode: WANDB_MODE wins over the key
    first = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    exp = storage / "secret"
    assert "mode offline" in first.stderr
    assert list((exp / "wandb").rglob("offline-run-*")), "W&B should have logged offline runs"
    meta = json.loads((exp / "sweep.json").read_text())

    again = subprocess.run([*args, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    resumed = json.loads((exp / "sweep.json").read_text())
    assert resumed["command"] == meta["command"] and "--resume" not in meta["command"]
    assert resumed["wall_s"] == meta["wall_s"]
    assert len(resumed["resumes"]) == 1 and "--resume" in resumed["resumes"][0]["command"]

    for proc in (first, again):
        assert KEY not in proc.stdout and KEY not in proc.stderr
    assert _files_holding(exp, KEY) == []
    assert _files_holding(ray_tmp, KEY) == []
