"""Apply a reviewed relabels.csv (``id,new_label``; new_label a class name or 'drop').

The review file written by the mislabel finder (mislabels.csv) has the same two columns among
others, so the reviewed file can be passed back as it is; rows with an empty new_label are ignored.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from . import classes
from .csvfile import csv_rows


def read_relabels(path: str | Path) -> dict[str, str | None]:
    """id -> canonical class name, or None for 'drop'. Errors name the file and row."""
    path = Path(path)
    out: dict[str, str | None] = {}
    rows = csv_rows(path, "relabels file")
    fields = [f.strip() for f in next(rows, (1, []))[1]]
    if "id" not in fields or "new_label" not in fields:
        raise DataError(f"{path}: needs columns 'id' and 'new_label' (found {', '.join(fields) or 'none'})")
    for row_no, cells in rows:
        if not cells:
            continue
        row = {k: v.strip() for k, v in zip(fields, cells, strict=False) if k}  # short/long rows: the cells there are
        row.setdefault("id", "")
        row.setdefault("new_label", "")
        new = row["new_label"]
        if not new:
            continue
        if not row["id"]:
            raise DataError(f"{path} row {row_no}: empty id")
        if new.lower() == "drop":
            out[row["id"]] = None
            continue
        canon = classes.normalize(new)
        if canon is None:
            raise DataError(
                f"{path} row {row_no}: unknown new_label {new!r}; use a class name "
                f"({', '.join(classes.CANONICAL)}) or 'drop'"
            )
        out[row["id"]] = canon
    return out
