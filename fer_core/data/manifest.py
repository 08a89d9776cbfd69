"""The data set manifest: what is in the shards, how it was made, and a content-hash version.

Read from a local path or any pyarrow filesystem URI (file://, s3://, gs://, hdfs://).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from ..errors import ManifestError

MANIFEST = "manifest.json"
FORMAT = "fer-sweep-dataset"
FORMAT_VERSION = 1
REQUIRED = ("format", "format_version", "name", "version", "classes", "image_shape", "counts", "shards")


def content_version(classes: list[str], image_shape: list[int], shards: list[dict]) -> str:
    """A version that changes whenever the content does: a hash of classes, shape and shard checksums."""
    key = json.dumps({"classes": classes, "image_shape": image_shape,
                      "shards": [(s["split"], s["rows"], s["sha256"]) for s in shards]}, sort_keys=True)
    return "v" + hashlib.sha256(key.encode()).hexdigest()[:16]


def resolve_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path or a URI pyarrow understands."""
    if "://" in uri:
        try:
            return pafs.FileSystem.from_uri(uri)
        except Exception as exc:  # pyarrow raises several types for unknown schemes / credentials
            raise ManifestError(f"{uri}: cannot open this location ({exc})") from None
    import os
    return pafs.LocalFileSystem(), os.path.abspath(uri)


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
        return tuple(self.data["image_shape"])  # type: ignore[return-value]

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
        raise ManifestError(f"{uri}: no readable {MANIFEST} ({exc}); is this a folder written by "
                            "'fer data ingest'?") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ManifestError(f"{path}: missing key(s) {', '.join(missing)}")
    if data["format"] != FORMAT or data["format_version"] > FORMAT_VERSION:
        raise ManifestError(f"{path}: format {data['format']!r} v{data['format_version']} is not "
                            f"{FORMAT} v{FORMAT_VERSION} or older; upgrade fer-sweep")
    if expected_version is not None and data["version"] != expected_version:
        raise ManifestError(f"{path}: data version is {data['version']}, expected {expected_version}; "
                            "re-run with the matching data set or update the expected version")
    return Manifest(fs=fs, root=root, data=data)
