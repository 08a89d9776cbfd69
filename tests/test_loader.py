import json
import shutil

import numpy as np
import pytest

from fer_core.data.ingest import IngestOptions, ingest
from fer_core.data.loader import load_split
from fer_core.errors import ManifestError


def test_file_uri_equals_local_path_and_tensor_view(ingested):
    a = load_split(str(ingested), "train")
    b = load_split(ingested.resolve().as_uri(), "train")
    assert (a.images == b.images).all() and (a.labels == b.labels).all() and a.ids == b.ids
    x, y = a.tensors()
    assert tuple(x.shape) == (len(a), 1, 48, 48) and str(x.dtype) == "torch.uint8"
    assert x.data_ptr() == a.images.ctypes.data  # zero copy
    assert y.dtype.is_floating_point is False and len(set(y.tolist())) == len(a.classes)


def test_expected_version_is_enforced(ingested):
    version = json.loads((ingested / "manifest.json").read_text())["version"]
    assert load_split(str(ingested), "val", expected_version=version).manifest.version == version
    with pytest.raises(ManifestError, match=f"data version is {version}, expected vdeadbeef"):
        load_split(str(ingested), "val", expected_version="vdeadbeef")


def test_corrupt_shard_fails_checksum(ingested, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(ingested, copy)
    shard = next(copy.glob("val-*.parquet"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=f"{shard.name}: checksum mismatch"):
        load_split(str(copy), "val")
    load_split(str(copy), "train")  # other splits still load


def test_missing_or_bad_manifest(tmp_path):
    with pytest.raises(ManifestError, match="no readable manifest.json"):
        load_split(str(tmp_path), "train")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_split(str(tmp_path), "train")
    (tmp_path / "manifest.json").write_text('{"format": "fer-sweep-dataset"}')
    with pytest.raises(ManifestError, match="missing key"):
        load_split(str(tmp_path), "train")


def test_arrow_ipc_shards_and_small_shards(synth_dir, ingested, tmp_path, monkeypatch):
    import fer_core.data.shards as shards

    out = tmp_path / "arrow"
    ingest(IngestOptions(src=str(synth_dir), out=str(out), shard_format="arrow", mislabels=False, quiet=True))
    a = load_split(str(out), "train")
    b = load_split(str(ingested), "train")
    assert (a.images == b.images).all() and a.ids == b.ids
    # many small shards load into the same array
    orig = shards.write_shards
    monkeypatch.setattr("fer_core.data.ingest.write_shards", lambda *a, **k: orig(*a, **{**k, "shard_mb": 0.1}))
    out2 = tmp_path / "small"
    m = ingest(IngestOptions(src=str(synth_dir), out=str(out2), mislabels=False, quiet=True))
    assert sum(s["split"] == "train" for s in m["shards"]) > 1
    c = load_split(str(out2), "train")
    assert (c.images == b.images).all() and (c.labels == b.labels).all()
    assert np.array_equal(c.images.reshape(len(c), -1)[-1], b.images.reshape(len(b), -1)[-1])
