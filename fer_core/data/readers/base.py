"""What every reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")

_SPLIT_ALIASES = {
    "train": "train", "training": "train", "trn": "train",
    "val": "val", "valid": "val", "validation": "val", "publictest": "val", "dev": "val",
    "test": "test", "testing": "test", "privatetest": "test",
}


def normalize_split(name: str) -> str | None:
    """'Training' -> 'train', 'PublicTest' -> 'val', 'validation' -> 'val'; None if not a split name."""
    return _SPLIT_ALIASES.get(name.strip().lower().replace("_", "").replace("-", ""))


@dataclass
class Skipped:
    item: str      # a path relative to the source, or "row 17"
    reason: str


@dataclass
class SourceData:
    """One source's decoded images. Labels are canonical class names; split is None when the
    source has no splits of its own."""

    name: str
    path: str
    format: str
    images: np.ndarray            # (N, size, size, C) uint8
    labels: list[str]             # canonical class names
    ids: list[str]                # stable ids ("<name>:<relative path>" or "<name>:row<k>")
    splits: list[str | None]
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)
