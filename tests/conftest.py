import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s3server import s3_bucket, s3_server  # noqa: F401  (a real S3 server on 127.0.0.1, see s3server.py)

os.environ.setdefault("FER_NO_PROGRESS", "1")


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
    return TrainData(classes=["happy", "neutral", "sad", "surprise"], version="vtest", uri="memory",
                     images={"train": xt, "val": xv}, labels={"train": yt, "val": yv})


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small embedded-default-style data set in class folders, with its truth.csv."""
    from fer_core.data.synth import SynthConfig, generate, write_folders

    out = tmp_path_factory.mktemp("synth") / "raw"
    write_folders(generate(SynthConfig(n=600, seed=3)), out)
    return out


@pytest.fixture(scope="session")
def ingested(synth_dir, tmp_path_factory) -> Path:
    from fer_core.data.ingest import IngestOptions, ingest

    out = tmp_path_factory.mktemp("ingested") / "data"
    ingest(IngestOptions(src=str(synth_dir), out=str(out), mislabels=False, quiet=True))
    return out
