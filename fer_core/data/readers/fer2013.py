"""FER2013 CSV: ``emotion,pixels[,Usage][,group]``, 2304 space-separated gray values (48x48) per row.

emotion: 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral.
Usage: Training -> train, PublicTest -> val, PrivateTest -> test.
group (or subject): who the face shows; images of one group stay in one split (empty: unknown).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ... import progress as prog
from ...errors import DataError
from ..csvfile import csv_rows
from ..images import from_pil
from .base import Skipped, SourceData, normalize_split

FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SIDE = 48


def _parse_pixels(text: str) -> np.ndarray:
    values = text.split()
    if len(values) != SIDE * SIDE:
        raise ValueError(f"expected {SIDE * SIDE} pixel values, found {len(values)}")
    try:
        arr = np.array(values, dtype=np.int32)
    except ValueError:
        bad = next(v for v in values if not v.lstrip("-").isdigit())
        raise ValueError(f"non-numeric pixel value {bad[:20]!r}") from None
    if arr.min() < 0 or arr.max() > 255:
        raise ValueError("pixel values must lie in 0..255")
    return arr.astype(np.uint8).reshape(SIDE, SIDE)


def read_fer2013_csv(path: Path, *, size: int, color: str, name: str, progress: bool | None = None) -> SourceData:
    images: list[np.ndarray] = []
    labels: list[str] = []
    ids: list[str] = []
    splits: list[str | None] = []
    groups: list[str | None] = []
    skipped: list[Skipped] = []
    rows = csv_rows(path, "FER2013 CSV")
    header = [h.strip().lower() for h in next(rows, (1, []))[1]]
    if "emotion" not in header or "pixels" not in header:
        raise DataError(
            f"{path}: header must contain 'emotion' and 'pixels' columns "
            f"(found {', '.join(header) or 'nothing'}); is this a FER2013 CSV?"
        )
    i_emo, i_pix = header.index("emotion"), header.index("pixels")
    i_use = header.index("usage") if "usage" in header else None
    i_group = next((header.index(k) for k in ("group", "subject") if k in header), None)
    for row_no, row in prog.bar(rows, desc="rows", unit="row", progress=progress):
        item = f"row {row_no}"
        if not row or all(not c.strip() for c in row):
            continue
        try:
            if len(row) < len(header):
                raise ValueError(f"expected {len(header)} columns, found {len(row)}")
            emo = row[i_emo].strip()
            if not emo.isdigit() or int(emo) >= len(FER2013_CLASSES):
                raise ValueError(f"unknown label {emo!r} (FER2013 emotions are 0-6)")
            split = None
            if i_use is not None:
                split = normalize_split(row[i_use])
                if split is None:
                    raise ValueError(f"unknown Usage {row[i_use]!r} (Training, PublicTest, PrivateTest)")
            gray = _parse_pixels(row[i_pix])
        except ValueError as exc:
            skipped.append(Skipped(item, str(exc)))
            continue
        if size == SIDE and color == "grayscale":
            img = gray[:, :, None]
        else:
            img = from_pil(Image.fromarray(gray, mode="L"), size, color)
        images.append(img)
        labels.append(FER2013_CLASSES[int(emo)])
        ids.append(f"{name}:row{row_no}")
        splits.append(split)
        groups.append(row[i_group].strip() or None if i_group is not None else None)
    c = 1 if color == "grayscale" else 3
    stacked = np.stack(images) if images else np.empty((0, size, size, c), dtype=np.uint8)
    return SourceData(
        name=name,
        path=str(path),
        format="fer2013-csv",
        images=stacked,
        labels=labels,
        ids=ids,
        splits=splits,
        skipped=skipped,
        groups=groups if i_group is not None else None,
    )
