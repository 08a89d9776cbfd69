"""What works against a real S3-compatible server (moto on 127.0.0.1, see ``s3server.py``) today.

- pyarrow's ``FileSystem.from_uri("s3://...")`` (what ``fer_core.data.manifest.resolve_uri`` and Ray Tune's
  storage use) reaches the server through ``AWS_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL_S3``, or through the
  URI's own ``?endpoint_override=HOST:PORT&scheme=http``; the fixture's environment is enough for a subprocess.
- A data set uploaded to S3 loads (``load_split``) and reports (``fer data report``, checksums verified).
- A real smoke sweep with ``--data s3://...`` and ``--storage s3://...`` finishes and leaves Tune's
  experiment state, the trial folders with checkpoints, and ``trials.parquet`` / ``epochs.parquet`` in the
  bucket (the local Ray started by the driver passes the driver's environment to its workers).

Not covered because it does not work yet: ``fer data ingest --out s3://...`` (ingest writes local folders
only), and ``sweep.json`` / ``summary.txt`` for a sweep on S3 (written only for local storage).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest

pytestmark = pytest.mark.slow  # the session's moto server takes seconds to start

ROOT = Path(__file__).resolve().parents[1]


def _files(fs: pafs.FileSystem, root: str) -> dict[str, int]:
    """Every object under ``root`` (relative path -> size)."""
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return {i.path[len(root.rstrip("/")) + 1 :]: i.size for i in infos if i.type == pafs.FileType.File}


def _upload(src: Path, fs: pafs.FileSystem, dest: str) -> None:
    pafs.copy_files(str(src), dest, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def _roundtrip(uri: str) -> None:
    """Write, read, list and delete an object through ``FileSystem.from_uri(uri)``."""
    fs, root = pafs.FileSystem.from_uri(uri)
    assert isinstance(fs, pafs.S3FileSystem)
    with fs.open_output_stream(f"{root}/a/hello.txt") as fh:
        fh.write(b"hello s3")
    with fs.open_input_stream(f"{root}/a/hello.txt") as fh:
        assert fh.read() == b"hello s3"
    assert _files(fs, root) == {"a/hello.txt": 8}
    fs.delete_file(f"{root}/a/hello.txt")
    assert fs.get_file_info(f"{root}/a/hello.txt").type == pafs.FileType.NotFound
    assert _files(fs, root) == {}


# ----------------------------------------------------------------------------------------------
# The fixture and pyarrow
# ----------------------------------------------------------------------------------------------


def test_server_is_local_and_buckets_are_fresh(s3_server):
    assert s3_server.endpoint.startswith("http://127.0.0.1:")
    assert s3_server.env["AWS_ENDPOINT_URL"] == s3_server.endpoint
    a, b = s3_server.new_bucket(), s3_server.new_bucket()
    assert a != b
    fs = s3_server.filesystem()
    assert {a, b} <= {i.path for i in fs.get_file_info(pafs.FileSelector(""))}
    assert _files(fs, a) == {}


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
def test_from_uri_honours_the_endpoint_variables(s3_server, s3_bucket, monkeypatch, variable):
    s3_server.apply(monkeypatch)
    if variable != "AWS_ENDPOINT_URL":
        monkeypatch.delenv("AWS_ENDPOINT_URL")
        monkeypatch.setenv(variable, s3_server.endpoint)
    _roundtrip(f"s3://{s3_bucket}/env")


def test_from_uri_honours_endpoint_override_in_the_uri(s3_server, s3_bucket, monkeypatch):
    s3_server.apply(monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # the URI's own endpoint wins
    _roundtrip(s3_server.uri(s3_bucket, "query"))


def test_the_fixture_environment_is_enough_for_a_subprocess(s3_server, s3_bucket):
    code = (
        "import sys, pyarrow.fs as f\nfs, p = f.FileSystem.from_uri(sys.argv[1])\n"
        "with fs.open_output_stream(p + '/x') as fh: fh.write(b'from a subprocess')\n"
        "print(fs.open_input_stream(p + '/x').read().decode())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, f"s3://{s3_bucket}/sub"],
        env=s3_server.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "from a subprocess"
    assert _files(s3_server.filesystem(), s3_bucket) == {"sub/x": 17}


# ----------------------------------------------------------------------------------------------
# Data sets on S3
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def s3_dataset(s3_server, s3_bucket, ingested) -> str:
    """The session's ingested data set (manifest + shards + report), uploaded to s3://<bucket>/data/fer."""
    _upload(ingested, s3_server.filesystem(), f"{s3_bucket}/data/fer")
    return f"s3://{s3_bucket}/data/fer"


def test_load_split_reads_a_data_set_on_s3(s3_server, s3_dataset, ingested, monkeypatch):
    from fer_core.data.loader import load_split

    s3_server.apply(monkeypatch)
    local = load_split(str(ingested), "train")
    remote = load_split(s3_dataset, "train", expected_version=local.manifest.version)  # checksums verified
    assert isinstance(remote.manifest.fs, pafs.S3FileSystem)
    assert remote.ids == local.ids and np.array_equal(remote.labels, local.labels)
    assert np.array_equal(remote.images, local.images) and len(remote) > 0
    # the endpoint in the URI works too (only the credentials come from the environment)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    bucket = s3_dataset.removeprefix("s3://").split("/")[0]
    val = load_split(s3_server.uri(bucket, "data/fer"), "val")
    assert np.array_equal(val.labels, load_split(str(ingested), "val").labels)


@pytest.mark.e2e
def test_fer_data_report_verifies_a_data_set_on_s3(s3_server, s3_dataset, ingested):
    import json

    version = json.loads((ingested / "manifest.json").read_text())["version"]
    out = subprocess.run(
        [sys.executable, "-m", "fer_cli", "data", "report", s3_dataset],
        cwd=ROOT,
        env=s3_server.subprocess_env({**os.environ, "PYTHONPATH": str(ROOT)}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"version {version}" in out.stdout
    assert "shards against the manifest: checksums, rows and counts match" in out.stdout


# ----------------------------------------------------------------------------------------------
# Trial checkpoints on S3 (a sweep with ``--storage s3://...``)
# ----------------------------------------------------------------------------------------------


def test_a_trial_resumed_from_a_checkpoint_on_s3_reads_it_then_deletes_the_download(
    s3_server, s3_bucket, brightness_data, tmp_path, monkeypatch
):
    """What a retried or restored trial does on a node (``sweeps.trainable.trial_start``): its Tune checkpoint
    lives on S3, so it is downloaded to the node's temp folder, read, and deleted once the trial has read it.
    Ray's ``Checkpoint.to_directory()`` would leave that copy behind, one per resume."""
    import tempfile

    from ray import tune
    from ray.train import Checkpoint

    from fer_core.train import train
    from sweeps.space import trial_config
    from sweeps.trainable import trial_start

    base = {"model": "fer_cnn_tiny", "epochs": 3, "batch_size": 32, "device": "cpu"}
    fs = s3_server.filesystem()
    where = f"{s3_bucket}/sweep/trial_0/checkpoint_000001"

    def keep_epoch_2(metrics: dict, checkpoint_dir: str | None) -> None:  # as a sweep on s3:// storage keeps it
        if metrics["epoch"] == 2:
            _upload(Path(checkpoint_dir), fs, where)

    whole = train(trial_config(base, {}, {"lr": 2e-3}, where="test"), brightness_data, report=keep_epoch_2)
    node_tmp = tmp_path / "node-tmp"
    node_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(node_tmp))  # where Ray downloads a remote checkpoint to
    stored = Checkpoint(path=where, filesystem=fs)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: stored)  # what Tune hands a trial it resumes

    with trial_start({"lr": 2e-3}, base, {}) as (cfg, folder, history):
        assert cfg.lr == 2e-3 and cfg.epochs == 3
        assert folder is not None and Path(folder).parent == node_tmp  # a download of the stored checkpoint
        assert history == [h["val_acc"] for h in whole.history[:2]]
        resumed = train(cfg, brightness_data, resume=folder, progress=False)
    for key in ("epoch", "train_loss", "val_loss", "val_acc"):  # CPU: a resume is exact
        assert [h[key] for h in resumed.history] == [h[key] for h in whole.history], key
    assert not list(node_tmp.glob("checkpoint_tmp_*")), sorted(p.name for p in node_tmp.iterdir())
    assert list(_files(fs, where)) == ["checkpoint.pt"]  # the stored checkpoint itself is untouched


def test_a_folder_another_command_wrote_meanwhile_on_s3_is_kept_without_overwrite(
    s3_server, s3_bucket, tmp_path, monkeypatch
):
    """Two writers of one new ``s3://`` folder without ``--overwrite``: the second to finish is refused, and the
    first one's objects stay (it used to delete them as the previous content's)."""
    from fer_core.storage import StorageError, folder_writer, locate

    s3_server.apply(monkeypatch)
    uri = s3_server.uri(s3_bucket, "shared/data")
    fs = s3_server.filesystem()
    with pytest.raises(StorageError, match="was written by another command while this one ran") as err:
        with folder_writer(uri, kind="data set", markers=("manifest.json",)) as tmp:
            (tmp / "shard-B.parquet").write_bytes(b"B")
            (tmp / "manifest.json").write_text("B")
            locate(uri).upload_dir(_local_folder(tmp_path / "first", {"shard-A.parquet": b"A", "manifest.json": b"A"}))
    assert "--overwrite" in str(err.value)
    assert _files(fs, f"{s3_bucket}/shared/data") == {"shard-A.parquet": 1, "manifest.json": 1}
    with folder_writer(uri, overwrite=True, kind="data set", markers=("manifest.json",)) as tmp:
        (tmp / "manifest.json").write_text("C")
    assert _files(fs, f"{s3_bucket}/shared/data") == {"manifest.json": 1}


def _local_folder(path: Path, files: dict[str, bytes]) -> Path:
    path.mkdir(parents=True)
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path
