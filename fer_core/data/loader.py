"""Load one split of a data set into one contiguous uint8 array, without decoding any image.

    >>> split = load_split("data/default", "train")             # or "s3://bucket/fer/v1", "file:///..."
    >>> x, y = split.tensors()                                   # (N, C, H, W) uint8 (channels_last), (N,) int64

Each shard's bytes are read once, checked against the manifest's sha256, and the pixel column is
copied straight into the output array.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

from ..errors import ManifestError
from .manifest import MANIFEST, Manifest, read_manifest
from .readers.base import SPLITS


@dataclass
class Split:
    name: str
    images: np.ndarray  # (N, H, W, C) uint8, C-contiguous
    labels: np.ndarray  # (N,) int64
    ids: list[str]
    manifest: Manifest

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    def __len__(self) -> int:
        return len(self.labels)

    def tensors(self):
        """Zero-copy torch tensors: images as (N, C, H, W) uint8 in channels_last layout, labels int64."""
        import torch

        x = torch.from_numpy(self.images).permute(0, 3, 1, 2)
        return x, torch.from_numpy(self.labels)


def _read_shard(
    manifest: Manifest, entry: dict, verify: bool, columns: tuple[str, ...] = ("id", "label", "pixels")
) -> pa.Table:
    path = manifest.path(entry["path"])
    try:
        with manifest.fs.open_input_file(path) as fh:
            buf = fh.read_buffer()
    except (FileNotFoundError, OSError) as exc:
        raise ManifestError(f"{path}: shard listed in the manifest cannot be read ({exc})") from None
    if verify:
        digest = hashlib.sha256(memoryview(buf)).hexdigest()
        if digest != entry["sha256"]:
            raise ManifestError(
                f"{path}: checksum mismatch (file changed or corrupt since ingest); "
                "re-run 'fer data ingest' or restore the file"
            )
    reader = pa.BufferReader(buf)
    try:
        if entry.get("format", "parquet") == "arrow":
            table = feather.read_table(reader, columns=list(columns))
        else:
            table = pq.read_table(reader, columns=list(columns))
    except (pa.ArrowException, OSError) as exc:  # reachable with verify=False or a forged checksum
        raise ManifestError(
            f"{path}: not a readable {entry.get('format', 'parquet')} shard "
            f"({' '.join(str(exc).split())}); "
            "re-run 'fer data ingest' or restore the file"
        ) from None
    if table.num_rows != entry["rows"]:
        raise ManifestError(
            f"{path}: {table.num_rows} rows, manifest says {entry['rows']}; "
            "re-run 'fer data ingest' or restore the file"
        )
    return table


def load_split(
    uri: str, split: str, *, expected_version: str | None = None, verify: bool = True, with_ids: bool = True
) -> Split:
    """Load ``split`` ('train', 'val' or 'test') of the data set at ``uri``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    manifest = read_manifest(uri, expected_version)
    h, w, c = manifest.image_shape
    entries = manifest.shards(split)
    total = sum(e["rows"] for e in entries)
    images = np.empty((total, h, w, c), dtype=np.uint8)
    flat = images.reshape(total, h * w * c)
    labels = np.empty(total, dtype=np.int64)
    ids: list[str] = []
    pos = 0
    for entry in entries:
        table = _read_shard(manifest, entry, verify)
        for chunk in table.column("pixels").chunks:
            n = len(chunk)
            data = np.frombuffer(chunk.buffers()[1], dtype=np.uint8, count=(chunk.offset + n) * h * w * c)
            flat[pos : pos + n] = data[chunk.offset * h * w * c :].reshape(n, h * w * c)
            pos += n
        labels[pos - table.num_rows : pos] = table.column("label").to_numpy()
        if with_ids:
            ids += table.column("id").to_pylist()
    return Split(name=split, images=images, labels=labels, ids=ids, manifest=manifest)


def verify_dataset(manifest: Manifest) -> dict:
    """Check every shard against the manifest: sha256, row count, that its rows belong to its split,
    that labels are valid class indices, and that the per-split, per-class counts match ``counts``.

    Reads every shard once (what ``fer data report`` does). Raises ManifestError naming the first
    shard (or count) that does not match; returns a summary.
    """
    classes = manifest.classes
    found = {s: [0] * len(classes) for s in SPLITS}
    for entry in manifest.data["shards"]:
        path = manifest.path(entry["path"])
        table = _read_shard(manifest, entry, True, columns=("split", "label"))
        if entry["split"] not in found or set(table.column("split").to_pylist()) - {entry["split"]}:
            raise ManifestError(
                f"{path}: holds rows of another split than its manifest entry "
                f"({entry['split']!r}); re-run 'fer data ingest'"
            )
        labels = table.column("label").to_numpy()
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ManifestError(
                f"{path}: label {int(labels.max())} is not one of the {len(classes)} classes; re-run 'fer data ingest'"
            )
        for k, n in enumerate(np.bincount(labels, minlength=len(classes)).tolist()):
            found[entry["split"]][k] += n
    where = manifest.path(MANIFEST)
    counts = manifest.data["counts"]
    for split in SPLITS:
        listed = counts.get(split, {}) if isinstance(counts, dict) else {}
        extra = sorted(set(listed) - set(classes))
        if extra:
            raise ManifestError(
                f"{where}: counts name class(es) {', '.join(map(str, extra))} that are not in "
                "'classes'; the manifest was edited or is corrupt: re-run 'fer data ingest'"
            )
        for k, name in enumerate(classes):
            if listed.get(name, 0) != found[split][k]:
                raise ManifestError(
                    f"{where}: counts say {listed.get(name, 0)} {split} images of {name!r}, "
                    f"the shards hold {found[split][k]}; the manifest was edited or is "
                    "corrupt: re-run 'fer data ingest'"
                )
    total = sum(map(sum, found.values()))
    if manifest.data.get("total", total) != total:
        raise ManifestError(
            f"{where}: total says {manifest.data['total']}, the shards hold {total} images; re-run 'fer data ingest'"
        )
    return {"shards": len(manifest.data["shards"]), "images": total}
