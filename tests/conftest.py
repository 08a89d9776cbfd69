import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s3server import s3_bucket, s3_server  # noqa: F401  (a real S3 server on 127.0.0.1, see s3server.py)

os.environ.setdefault("FER_NO_PROGRESS", "1")


# --------------------------------------------------------------------------------------------------
# Lanes: the markers (pyproject.toml) that `-m "not slow"` and friends select on must be where they belong.
# Every process a test starts goes through subprocess.Popen, Ray's own (gcs_server, raylet: a local Ray
# started in this process) and selenium's chromedriver included, so that is where a missing marker shows:
# the test fails naming the marker. A session fixture is checked in the first test that sets it up.
# --------------------------------------------------------------------------------------------------

_current_test: list[pytest.Item | None] = [None]


def _argv(args) -> list[str]:
    """A Popen ``args`` as a list of str."""
    argv = [os.fspath(a) for a in ([args] if isinstance(args, (str, bytes, os.PathLike)) else args)]
    return [a.decode() if isinstance(a, bytes) else a for a in argv]


def _lane_markers(args) -> tuple[str, list[str]]:
    """What a command is (for the message) and the markers a test that starts it needs."""
    argv = _argv(args)
    names = [os.path.basename(a) for a in argv[:3]]
    if "gcs_server" in names or "raylet" in names or names[:2] == ["ray", "start"]:
        return "Ray", ["slow"]
    if any(a.endswith("sweeps/regularization.py") for a in argv[:3]):
        return "a sweep", ["slow", "e2e"]
    if names[:3] == ["ray", "job", "submit"]:
        return "ray job submit", ["slow", "e2e"]
    if argv[1:3] in (["-m", "fer_cli"], ["-m", "fer_core"]) or names[:1] == ["fer"]:
        return "a fer command", ["e2e"]
    if "chromedriver" in names:
        return "Chromium", ["browser"]
    return "", []


def _stops_every_ray(args) -> bool:
    """`ray stop` kills every Ray process on the machine: under `pytest -n` (scripts/test.sh) also the
    clusters of the tests running beside this one."""
    argv = _argv(args)
    return [os.path.basename(a) for a in argv[:2]] == ["ray", "stop"]


@pytest.fixture(scope="session", autouse=True)
def _lanes_checked():
    popen_init = subprocess.Popen.__init__

    def checked_init(self, args, *a, **kw):
        item = _current_test[0]
        if item is not None and _stops_every_ray(args):
            pytest.fail(
                f"{item.nodeid} runs `ray stop`, which kills every Ray on the machine (tests run side by side): "
                f"start the cluster with start_new_session=True and SIGKILL its process group instead",
                pytrace=False,
            )
        what, needs = _lane_markers(args)
        missing = [m for m in needs if item is not None and item.get_closest_marker(m) is None]
        if missing:
            pytest.fail(
                f"{item.nodeid} starts {what} but is not marked {', '.join(missing)} "
                f"(@pytest.mark.<marker> or the module's pytestmark; see [tool.pytest.ini_options] markers)",
                pytrace=False,
            )
        popen_init(self, args, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subprocess.Popen, "__init__", checked_init)
        yield


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _current_test[0] = item


def pytest_collection_modifyitems(config, items):
    """A test skipped without CUDA is marked gpu (the others are checked when they start something)."""
    unmarked = [
        item.nodeid
        for item in items
        if item.get_closest_marker("gpu") is None
        and any("CUDA" in str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif"))
    ]
    if unmarked:
        raise pytest.UsageError(f"skipped without CUDA but not marked gpu: {', '.join(unmarked)}")


def face(seed: int, size: int = 48) -> np.ndarray:
    """A smooth random gray image that hashes far from other seeds' images."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def save(path: Path, arr: np.ndarray, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


@pytest.fixture(scope="session", autouse=True)
def _wandb_data_dir(tmp_path_factory):
    """Offline W&B stages artifacts (``fer retrain``'s model) in WANDB_DATA_DIR: the session's, not ~/.local/share."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_DATA_DIR", str(tmp_path_factory.mktemp("wandb-data")))
        yield


@pytest.fixture(scope="session")
def brightness_data():
    """96 train / 32 val 48x48 images of 4 classes whose mean brightness encodes the class (learnable)."""
    from fer_core.train import TrainData

    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 4, n)
        x = rng.normal(60 + 40 * y[:, None, None], 25, (n, 48, 48)).clip(0, 255).astype(np.uint8)
        return x[..., None], y.astype(np.int64)

    (xt, yt), (xv, yv) = make(96), make(32)
    return TrainData(
        classes=["happy", "neutral", "sad", "surprise"],
        version="vtest",
        uri="memory",
        images={"train": xt, "val": xv},
        labels={"train": yt, "val": yv},
    )


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small embedded-default-style data set in class folders, with its truth.csv.

    Every face a different person (``subject_size=0``): the sweep fixtures built on it (the dashboard's
    7-trial sweep and its seed, the storage and job flows) were tuned to this set's outcome mix.
    Subjects, sessions and frames have their own tests (test_subjects.py, test_synth.py). Label noise
    and expression strength are pinned to the values those seeds were tuned on.
    """
    from fer_core.data.synth import SynthConfig, generate, write_folders

    out = tmp_path_factory.mktemp("synth") / "raw"
    config = SynthConfig(n=600, seed=3, subject_size=0, label_noise=0.3, expression_strength=1.0)
    write_folders(generate(config), out)
    return out


@pytest.fixture(scope="session")
def ingested(synth_dir, tmp_path_factory) -> Path:
    from fer_core.data.ingest import IngestOptions, ingest

    out = tmp_path_factory.mktemp("ingested") / "data"
    ingest(IngestOptions(src=str(synth_dir), out=str(out), mislabels=False, quiet=True))
    return out
