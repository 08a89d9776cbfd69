"""Readers turn a real FER layout on disk into one SourceData (images, labels, ids, source splits).

Formats: ``folders`` (ROOT/<class>/* or ROOT/<split>/<class>/*), ``fer2013-csv``
(emotion,pixels[,Usage]) and ``rafdb`` (a label list plus an image folder). ``auto`` picks one
from what the path looks like.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from .base import Skipped, SourceData, is_utf8, shown
from .fer2013 import read_fer2013_csv
from .folders import read_folders
from .rafdb import find_rafdb_list, read_rafdb

FORMATS = ("auto", "folders", "fer2013-csv", "rafdb")


def detect_format(path: Path) -> str:
    """Guess the layout of ``path``: a .csv file is FER2013, a folder with a RAF-DB label list is
    RAF-DB, any other folder is class folders."""
    if not path.exists():
        raise DataError(f"{path}: no such file or directory; check the path you gave to ingest")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "fer2013-csv"
        raise DataError(f"{path}: a single file must be a FER2013-style .csv; for images pass their folder")
    if find_rafdb_list(path) is not None:
        return "rafdb"
    return "folders"


def read_source(
    path: str | Path,
    fmt: str = "auto",
    *,
    size: int = 48,
    color: str = "grayscale",
    name: str | None = None,
    workers: int | None = None,
    progress: bool | None = None,
) -> SourceData:
    """Read one source in the given (or detected) format."""
    path = Path(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(path)
    elif not path.exists():
        raise DataError(f"{path}: no such file or directory; check the path you gave to ingest")
    if not is_utf8(path):  # the ids, the manifest and the report name the source
        raise DataError(f"{shown(path)}: a folder or file name in this path is not valid UTF-8; rename it")
    name = name or path.stem or path.name
    if fmt == "fer2013-csv":
        return read_fer2013_csv(path, size=size, color=color, name=name, progress=progress)
    if fmt == "rafdb":
        return read_rafdb(path, size=size, color=color, name=name, workers=workers, progress=progress)
    return read_folders(path, size=size, color=color, name=name, workers=workers, progress=progress)


__all__ = ["FORMATS", "SourceData", "Skipped", "detect_format", "read_source"]
