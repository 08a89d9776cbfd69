"""The data set manifest: what is in the shards, how it was made, and a content-hash version.

Read from a local path or any pyarrow filesystem URI (file://, s3://, gs://, hdfs://).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pyarrow.fs as pafs

from ..errors import ManifestError
from ..storage import redact, redact_text

MANIFEST = "manifest.json"
FORMAT = "fer-sweep-dataset"
FORMAT_VERSION = 1
REQUIRED = ("format", "format_version", "name", "version", "classes", "image_shape", "counts", "shards")


def content_version(classes: list[str], image_shape: list[int], shards: list[dict]) -> str:
    """A version that changes whenever the content does: a hash of classes, shape and shard checksums."""
    key = json.dumps(
        {
            "classes": classes,
            "image_shape": image_shape,
            "shards": [(s["split"], s["rows"], s["sha256"]) for s in shards],
        },
        sort_keys=True,
    )
    return "v" + hashlib.sha256(key.encode()).hexdigest()[:16]


def resolve_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path or a URI pyarrow understands (``fer_core.storage.locate``)."""
    from ..storage import StorageError, locate

    try:
        loc = locate(uri)
    except StorageError as exc:
        raise ManifestError(str(exc)) from None
    return loc.fs, loc.path


@dataclass
class Manifest:
    fs: pafs.FileSystem
    root: str
    data: dict[str, Any]

    @property
    def version(self) -> str:
        return self.data["version"]

    @property
    def classes(self) -> list[str]:
        return self.data["classes"]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.data["image_shape"])

    def shards(self, split: str) -> list[dict]:
        return [s for s in self.data["shards"] if s["split"] == split]

    def path(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}"


def read_manifest(uri: str, expected_version: str | None = None) -> Manifest:
    """Read and validate ``<uri>/manifest.json``; refuse one whose version is not ``expected_version``."""
    fs, root = resolve_uri(str(uri))
    path = f"{root.rstrip('/')}/{MANIFEST}"
    try:
        with fs.open_input_stream(path) as fh:
            raw = fh.read()
    except (FileNotFoundError, OSError) as exc:
        raise ManifestError(
            f"{redact(uri)}: no readable {MANIFEST} ({redact_text(str(exc))}); "
            "is this a folder written by 'fer data ingest'?"
        ) from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: not a manifest (a JSON {type(data).__name__}, not an object)")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ManifestError(f"{path}: missing key(s) {', '.join(missing)}")
    if data["format"] != FORMAT or data["format_version"] > FORMAT_VERSION:
        raise ManifestError(
            f"{path}: format {data['format']!r} v{data['format_version']} is not "
            f"{FORMAT} v{FORMAT_VERSION} or older; upgrade fer-sweep"
        )
    _check_shard_entries(path, data["shards"])
    # The version is a hash of the content, so recompute it: an edited manifest (two class names
    # swapped, a shard listed twice) would otherwise keep its old version, pass a version pin and
    # silently change what the labels mean.
    actual = content_version(data["classes"], data["image_shape"], data["shards"])
    if actual != data["version"]:
        raise ManifestError(
            f"{path}: classes, image shape or shard list do not match the data version "
            f"{data['version']} (they hash to {actual}); the manifest was edited or is "
            "corrupt: re-run 'fer data ingest' to rebuild the data set"
        )
    if expected_version is not None and data["version"] != expected_version:
        raise ManifestError(
            f"{path}: data version is {data['version']}, expected {expected_version}; "
            "re-run with the matching data set or update the expected version"
        )
    return Manifest(fs=fs, root=root, data=data)


def _check_shard_entries(path: str, shards: object) -> None:
    """Every shard entry has the keys the loader needs and names a file inside the data set folder."""
    if not isinstance(shards, list):
        raise ManifestError(f"{path}: 'shards' is not a list; re-run 'fer data ingest'")
    for k, entry in enumerate(shards):
        missing = [
            key for key in ("path", "split", "rows", "sha256") if not isinstance(entry, dict) or key not in entry
        ]
        if missing:
            raise ManifestError(f"{path}: shard entry {k} lacks {', '.join(missing)}; re-run 'fer data ingest'")
        rel = str(entry["path"])
        # Shards are written as plain names beside the manifest; a path that leaves the folder
        # (absolute, '..', another URI) is not one of ours and is not read.
        if "://" in rel or "\\" in rel or PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
            raise ManifestError(
                f"{path}: shard entry {k} path {rel!r} leaves the data set folder; re-run 'fer data ingest'"
            )
