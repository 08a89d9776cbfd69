"""Write images as Parquet or Arrow IPC (Feather v2) shards (one row per image) and the manifest beside them.

Columns: id (string), split (string), label (int16), source (string),
pixels (fixed_size_binary, H*W*C bytes, row-major HWC), phash (uint64).
Rows are grouped by split, so one split is read from its own shards only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

from .. import atomic, jsonio
from .manifest import FORMAT, FORMAT_VERSION, MANIFEST, content_version
from .readers.base import SPLITS

SHARD_FORMATS = {"parquet": ".parquet", "arrow": ".arrow"}


def schema(pixel_bytes: int) -> pa.Schema:
    return pa.schema(
        [
            ("id", pa.string()),
            ("split", pa.string()),
            ("label", pa.int16()),
            ("source", pa.string()),
            ("pixels", pa.binary(pixel_bytes)),
            ("phash", pa.uint64()),
        ]
    )


def _table(
    images: np.ndarray, labels: np.ndarray, ids: list[str], split: str, sources: list[str], phashes: np.ndarray
) -> pa.Table:
    n = len(ids)
    width = int(np.prod(images.shape[1:]))
    flat = np.ascontiguousarray(images).reshape(-1)
    pixels = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(flat)])
    return pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.array([split] * n, pa.string()),
            pa.array(labels.astype(np.int16)),
            pa.array(sources, pa.string()),
            pixels,
            pa.array(phashes.astype(np.uint64)),
        ],
        schema=schema(width),
    )


def _write(table: pa.Table, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        # Pixels barely compress (faces are noisy) and decompressing them would dominate loading,
        # so they are stored plain; ids and the other small columns get zstd.
        codecs = {name: "zstd" for name in table.column_names}
        codecs["pixels"] = "none"
        pq.write_table(
            table,
            path,
            compression=codecs,
            row_group_size=len(table) or 1,
            use_dictionary=["split", "source"],
            write_statistics=["label", "split"],
        )
    else:
        feather.write_feather(table, path, compression="uncompressed")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_shards(
    folder: Path,
    *,
    images: np.ndarray,
    labels: np.ndarray,
    ids: list[str],
    splits: np.ndarray,
    sources: list[str],
    phashes: np.ndarray,
    shard_format: str = "parquet",
    shard_mb: float = 32.0,
) -> list[dict]:
    """Write one split after another into ``folder``; returns the shard entries for the manifest."""
    if shard_format not in SHARD_FORMATS:
        raise ValueError(f"shard_format must be one of {sorted(SHARD_FORMATS)}, got {shard_format!r}")
    row_bytes = int(np.prod(images.shape[1:])) + 48
    rows_per_shard = max(1, int(shard_mb * 2**20 / row_bytes))
    entries = []
    for split in SPLITS:
        idx = np.flatnonzero(splits == split)
        for k, lo in enumerate(range(0, len(idx), rows_per_shard)):
            part = idx[lo : lo + rows_per_shard]
            name = f"{split}-{k:05d}{SHARD_FORMATS[shard_format]}"
            table = _table(
                images[part], labels[part], [ids[i] for i in part], split, [sources[i] for i in part], phashes[part]
            )
            _write(table, folder / name, shard_format)
            entries.append(
                {
                    "path": name,
                    "split": split,
                    "rows": len(part),
                    "format": shard_format,
                    "bytes": (folder / name).stat().st_size,
                    "sha256": _sha256(folder / name),
                }
            )
    return entries


def write_manifest(
    folder: Path,
    *,
    name: str,
    classes: list[str],
    image_shape: list[int],
    color: str,
    shards: list[dict],
    counts: dict,
    class_weights: list[float],
    ingest: dict,
    sources: list[dict],
    quality: dict,
    created: str,
) -> dict:
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": content_version(classes, image_shape, shards),
        "created": created,
        "classes": classes,
        "image_shape": image_shape,
        "color": color,
        "counts": counts,
        "total": sum(sum(c.values()) for c in counts.values()),
        "class_weights": dict(zip(classes, class_weights, strict=True)),
        "shards": shards,
        "ingest": ingest,
        "sources": sources,
        "quality": quality,
    }
    atomic.write_text(folder / MANIFEST, jsonio.dumps(manifest, indent=2) + "\n")
    return manifest
