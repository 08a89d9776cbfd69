"""Read a user's CSV file (a FER2013 CSV, a relabels file) row by row, with one clear error per way
it can be unreadable: compressed, not UTF-8, badly quoted.

    >>> for line_no, row in csv_rows(path, "relabels file"):
    ...     ...

``line_no`` is the file line on which the row starts (the header is line 1).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from ..errors import DataError

# Leading bytes of the archive and compression formats a CSV most often arrives in. Read as text
# they fail somewhere in the middle with a decoding error that does not say what the file is.
_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed", "decompress it first (gunzip -k FILE)"),
    (
        b"PK\x03\x04",
        "a zip archive",
        "extract the CSV from it first (unzip FILE); an Excel .xlsx is a zip too: save it as CSV UTF-8",
    ),
    (b"PK\x05\x06", "an empty zip archive", "extract the CSV from the archive you meant"),
    (b"BZh", "bzip2-compressed", "decompress it first (bunzip2 -k FILE)"),
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it first (unxz -k FILE)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "decompress it first (unzstd FILE)"),
    (b"\xff\xfe", "UTF-16 text", "save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text", "save it as UTF-8"),
)


def _check_not_binary(path: Path, what: str) -> None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise DataError(f"{path}: cannot open {what} ({exc.strerror or exc})") from None
    for magic, kind, todo in _MAGIC:
        if head.startswith(magic):
            raise DataError(f"{path}: {what} is {kind}, not a plain CSV; {todo.replace('FILE', path.name)}")


def _first_bad_utf8(path: Path) -> tuple[int, int]:
    """(line, byte offset) of the first byte that is not UTF-8. Only called once decoding has failed,
    so reading the file whole again costs nothing in the normal case."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return raw.count(b"\n", 0, exc.start) + 1, exc.start
    return 0, 0


def csv_rows(path: str | Path, what: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) for each row of the CSV at ``path``; ``what`` names the file in errors.

    Raises DataError (naming the file and line, and what to do) for a compressed or UTF-16 file,
    bytes that are not UTF-8, a field over the csv module's size limit, and a quoted field that
    runs over a line end (an unterminated quote that would swallow the rows after it; neither
    file type has fields spanning lines).
    """
    path = Path(path)
    _check_not_binary(path, what)
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"{path}: cannot open {what} ({exc.strerror or exc})") from None
    with handle:
        reader = csv.reader(handle)
        start = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                line, offset = _first_bad_utf8(path)
                raise DataError(
                    f"{path} line {line}: {what} is not UTF-8 text (byte {offset} cannot be "
                    "decoded); save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet)"
                ) from None
            except csv.Error as exc:
                raise DataError(
                    f"{path} line {start}: malformed CSV ({exc}); check the quoting near this line "
                    "(an unterminated quote runs on into later rows)"
                ) from None
            if reader.line_num > start:
                raise DataError(
                    f"{path} line {start}: a quoted field runs over {reader.line_num - start + 1} "
                    "lines (an unterminated quote?); fix the quoting on this line"
                )
            yield start, row
            start = reader.line_num + 1
