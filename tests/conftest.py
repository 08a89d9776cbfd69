import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
