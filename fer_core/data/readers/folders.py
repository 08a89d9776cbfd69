"""Class folders: ROOT/<class>/* (CK+48, many Kaggle sets) or ROOT/<split>/<class>/* (FER2013 images)."""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import DataError
from .. import classes
from ..images import decode_files
from .base import ESCAPES, NOT_UTF8, NOT_UTF8_FOLDER, Skipped, SourceData, escapes, is_utf8, normalize_split, shown


def _visible_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def _item(f: Path, root: Path) -> str:
    """How a skipped file is listed: its path in the source, printable even when its name is not UTF-8."""
    return shown(f.relative_to(root))


def _not_utf8(f: Path, root: Path) -> str | None:
    """Why ``f`` cannot be used as named (its name or a folder's on the way is not UTF-8), or None."""
    if not is_utf8(f.name):
        return NOT_UTF8
    if not is_utf8(f.relative_to(root)):
        return NOT_UTF8_FOLDER
    return None


def read_folders(
    root: Path, *, size: int, color: str, name: str, workers: int | None = None, progress: bool | None = None
) -> SourceData:
    try:
        top = _visible_dirs(root)
    except OSError as exc:
        raise DataError(f"{root}: cannot list folder ({exc.strerror or exc})") from None
    if not top:
        raise DataError(f"{root}: no class folders found; expected ROOT/<class>/* or ROOT/<split>/<class>/*")
    split_names = [normalize_split(p.name) for p in top]
    split_layout = all(s is not None for s in split_names)
    if any(s is not None for s in split_names) and not split_layout:
        odd = [shown(p.name) for p, s in zip(top, split_names, strict=True) if s is None]
        raise DataError(
            f"{root}: mixes split folders with other folders ({', '.join(odd)}); "
            "use ROOT/<class>/* or ROOT/<split>/<class>/* (train, val|validation, test)"
        )

    paths: list[Path] = []
    labels: list[str] = []
    splits: list[str | None] = []
    skipped: list[Skipped] = []
    groups = [(p, s) for p, s in zip(top, split_names, strict=True)] if split_layout else [(root, None)]
    for base, split in groups:
        for class_dir in _visible_dirs(base):
            label = classes.normalize(class_dir.name)
            files = _files_under(class_dir)
            for f in files:
                bad_name = _not_utf8(f, root)
                if bad_name is not None:  # its id could be written nowhere: skip it before decoding
                    skipped.append(Skipped(_item(f, root), bad_name))
                    continue
                if label is None:
                    skipped.append(Skipped(_item(f, root), f"unknown label {class_dir.name!r}"))
                    continue
                if escapes(f, root):  # a symlink (or a linked folder) to a file outside the source
                    reason = f"{ESCAPES} (links to {shown(os.path.realpath(f))})"
                    skipped.append(Skipped(_item(f, root), reason))
                    continue
                paths.append(f)
                labels.append(label)
                splits.append(split)
        if split_layout:
            loose = [f for f in base.iterdir() if f.is_file() and not f.name.startswith(".")]
            skipped += [Skipped(_item(f, root), "file outside a class folder") for f in sorted(loose)]

    decoded = decode_files(paths, size, color, workers=workers, progress=progress)
    for idx, reason in decoded.failures:
        skipped.append(Skipped(_item(paths[idx], root), reason))
    ok = decoded.ok.tolist()
    return SourceData(
        name=name,
        path=str(root),
        format="folders",
        images=decoded.images,
        labels=[labels[i] for i in ok],
        ids=[f"{name}:{paths[i].relative_to(root).as_posix()}" for i in ok],
        splits=[splits[i] for i in ok],
        skipped=skipped,
    )
