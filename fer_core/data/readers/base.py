"""What every reader returns."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "trn": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "publictest": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
    "privatetest": "test",
}


def normalize_split(name: str) -> str | None:
    """'Training' -> 'train', 'PublicTest' -> 'val', 'validation' -> 'val'; None if not a split name."""
    return _SPLIT_ALIASES.get(name.strip().lower().replace("_", "").replace("-", ""))


ESCAPES = "path escapes the source folder"


def escapes(path: Path, root: Path) -> bool:
    """Whether ``path``, with every symlink and '..' resolved, lies outside the folder ``root``.

    Every file a source names (a list entry, a file in a class folder) must stay inside the source:
    a '../x.png' line or a symlink to elsewhere would otherwise pull in files the user never chose.
    """
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return os.path.commonpath([real_root, real]) != real_root


NOT_UTF8 = "file name is not valid UTF-8; rename it"
NOT_UTF8_FOLDER = "folder name is not valid UTF-8; rename it"


def is_utf8(name: str | os.PathLike) -> bool:
    """Whether a file name is valid UTF-8 text.

    Python hands a name that is not (a Latin-1 'café.png' from a zip made on Windows) over with
    each bad byte as a lone surrogate, which cannot be written to a report, a manifest or a shard.
    """
    try:
        os.fsdecode(name).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(name: str | os.PathLike) -> str:
    """A file name as printable text: bytes that are not UTF-8 escaped (b'caf\\xe9.png' -> 'caf\\xe9.png')."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


@dataclass
class Skipped:
    item: str  # a path relative to the source, or "row 17"
    reason: str


@dataclass
class SourceData:
    """One source's decoded images. Labels are canonical class names; split is None when the
    source has no splits of its own."""

    name: str
    path: str
    format: str
    images: np.ndarray  # (N, size, size, C) uint8
    labels: list[str]  # canonical class names
    ids: list[str]  # stable ids ("<name>:<relative path>" or "<name>:row<k>")
    splits: list[str | None]
    skipped: list[Skipped] = field(default_factory=list)
    groups: list[str | None] | None = None  # the subject of each image, when the source names one

    def __len__(self) -> int:
        return len(self.ids)
