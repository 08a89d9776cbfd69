"""RAF-DB basic: a label list (``name label`` per line, labels 1-7) plus an image folder.

The release ships ``EmoLabel/list_patition_label.txt`` and ``Image/aligned/<stem>_aligned.jpg``
(or ``Image/original/<name>``); names start with ``train_`` or ``test_``, which gives the split.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from ..images import decode_files
from .base import ESCAPES, Skipped, SourceData, escapes

RAFDB_CLASSES = ("surprise", "fear", "disgust", "happy", "sad", "angry", "neutral")  # labels 1..7
LIST_NAMES = ("list_patition_label.txt", "list_partition_label.txt")
IMAGE_DIRS = ("Image/aligned", "Image/original", "aligned", "original", "images", "Image", ".")


def find_rafdb_list(root: Path) -> Path | None:
    """The label list file under root (RAF-DB spells it 'patition'), or None."""
    for sub in ("EmoLabel", "."):
        for name in LIST_NAMES:
            if (root / sub / name).is_file():
                return root / sub / name
    return None


def _resolve(root: Path, image_dirs: list[Path], name: str) -> tuple[Path | None, str]:
    """The image file a list entry names, or None and why not.

    A name that leads outside the source folder ('../x.png', an absolute path, a symlink to
    elsewhere) is refused, even when the file it points at exists.
    """
    if "\0" in name:
        return None, f"name {name!r} contains a NUL byte"
    if Path(name).is_absolute():  # the list names files relative to the image folder
        if escapes(Path(name), root):
            return None, f"{ESCAPES}: {name!r}"
        return None, f"absolute path {name!r}; name the file relative to the image folder"
    stem, suffix = Path(name).stem, Path(name).suffix
    escaped = False
    for d in image_dirs:
        for candidate in (d / name, d / f"{stem}_aligned{suffix}", d / f"{stem}_aligned.jpg"):
            if escapes(candidate, root):
                escaped = True
            elif candidate.is_file():
                return candidate, ""
    if escaped:
        return None, f"{ESCAPES}: {name!r}"
    return None, f"image {name!r} not found under {', '.join(map(str, image_dirs))}"


def read_rafdb(
    root: Path, *, size: int, color: str, name: str, workers: int | None = None, progress: bool | None = None
) -> SourceData:
    list_file = find_rafdb_list(root)
    if list_file is None:
        raise DataError(f"{root}: no RAF-DB label list ({LIST_NAMES[0]}) in it or in EmoLabel/")
    image_dirs = [root / d for d in IMAGE_DIRS if (root / d).is_dir()]
    paths: list[Path] = []
    labels: list[str] = []
    splits: list[str | None] = []
    skipped: list[Skipped] = []
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{list_file}: cannot read ({exc})") from None
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        item = f"{list_file.name} line {line_no}"
        parts = line.split()
        if len(parts) != 2:
            skipped.append(Skipped(item, f"expected 'name label', found {line.strip()[:60]!r}"))
            continue
        fname, raw = parts
        if not raw.isdigit() or not 1 <= int(raw) <= len(RAFDB_CLASSES):
            skipped.append(Skipped(item, f"unknown label {raw!r} (RAF-DB labels are 1-7)"))
            continue
        path, why = _resolve(root, image_dirs, fname)
        if path is None:
            skipped.append(Skipped(item, why))
            continue
        paths.append(path)
        labels.append(RAFDB_CLASSES[int(raw) - 1])
        prefix = fname.split("_", 1)[0].lower()
        splits.append(prefix if prefix in ("train", "test") else None)
    decoded = decode_files(paths, size, color, workers=workers, progress=progress)
    for idx, reason in decoded.failures:
        skipped.append(Skipped(str(paths[idx].relative_to(root)), reason))
    ok = decoded.ok.tolist()
    return SourceData(
        name=name,
        path=str(root),
        format="rafdb",
        images=decoded.images,
        labels=[labels[i] for i in ok],
        ids=[f"{name}:{paths[i].relative_to(root).as_posix()}" for i in ok],
        splits=[splits[i] for i in ok],
        skipped=skipped,
    )
