"""Which paths a command may create, write or replace: the rules that keep a typo from deleting work.

- A name that becomes a folder (an experiment's ``--name``) is one path component: letters,
  digits, ``-``, ``_`` and ``.``, starting with a letter or digit (so never ``.``, ``..``, a hidden
  name or something that reads as an option), at most 128 characters; the folder it names must
  resolve inside its storage (a symlink that points out of it is refused too).
- An existing, non-empty folder is replaced only with ``--overwrite``, and only when it is the kind
  of folder the command writes (it holds one of that kind's marker files, e.g. ``manifest.json``
  for a data set): ``--overwrite`` replaces a data set with a data set, never a home folder or a
  folder of photos.
- Never replaced, whatever they hold: the file system root, the home folder, the current folder or
  a folder above it, and a folder that holds the command's own input (ingest's source, the sweep's
  data set).
- The folder a target goes into must be writable before any work starts (not after minutes of
  hashing or training).
- An existing file is replaced only when the command itself wrote it.

Checks here only read (the write probe leaves nothing behind); they raise ``FerError`` naming the
flag, the path and what to do.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import FerError

__all__ = [
    "NAME_RULE",
    "is_uri",
    "check_name",
    "child",
    "check_replaceable",
    "check_writable",
    "check_file_replaceable",
]

NAME_RULE = (
    "one folder name of letters, digits, '-', '_' and '.', starting with a letter or digit, at most 128 characters"
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_uri(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a storage URI (``s3://...``, ``file://...``) rather than a local path."""
    return "://" in str(path)


def check_name(name: str, flag: str = "--name") -> str:
    """``name`` itself when it is a safe folder name (see the module doc), else a ``FerError``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise FerError(f"{flag} {name!r}: must be {NAME_RULE} (no '/', '..' or spaces); choose another {flag}")
    return name


def child(root: str, name: str, flag: str = "--name") -> str:
    """``root/name`` for a checked ``name``; for a local ``root``, refused unless it resolves inside ``root``."""
    check_name(name, flag)
    joined = f"{root.rstrip('/')}/{name}"
    if not is_uri(root):
        base = Path(root).resolve()
        target = Path(joined).resolve()
        if target.parent != base:
            raise FerError(
                f"{flag} {name!r}: {joined} resolves to {target}, outside {base} (a symbolic link?); "
                f"choose another {flag}"
            )
    return joined


def _contains(parent: Path, path: Path) -> bool:
    return path == parent or parent in path.parents


def _never_replaced(out: Path, protect: Iterable) -> str | None:
    """Why ``out`` (resolved) may never be written as a whole, or None."""
    if out == Path(out.anchor):
        return "is the root of the file system"
    home = Path.home().resolve()
    if out == home:
        return "is your home folder"
    cwd = Path.cwd().resolve()
    if _contains(out, cwd):
        return "is the current folder or a folder above it"
    for p in protect:
        if p is None or is_uri(p):
            continue
        p = Path(p).resolve()
        if _contains(out, p):
            return f"holds this command's input {p}"
    return None


def _has_marker(folder: Path, markers: Iterable[str]) -> bool:
    return any(any(folder.glob(m)) if any(c in m for c in "*?[") else (folder / m).exists() for m in markers)


def check_replaceable(
    out: str | os.PathLike,
    *,
    kind: str,
    markers: tuple[str, ...] = (),
    overwrite: bool,
    protect: Iterable = (),
    flag: str = "--out",
) -> Path:
    """Refuse to write the folder ``out`` where the module doc's rules say no; returns ``out``."""
    out = Path(out)
    resolved = out.resolve()
    if out.exists() and not out.is_dir():
        raise FerError(f"{flag} {out}: exists and is not a folder; choose another {flag}")
    reason = _never_replaced(resolved, protect)
    if reason:
        raise FerError(f"{flag} {out}: {reason}; it is never replaced - choose a new folder for {flag}")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FerError(
                f"{out}: already exists and is not empty; pass --overwrite to replace it or choose another {flag}"
            )
        if markers and not _has_marker(out, markers):
            raise FerError(
                f"{flag} {out}: is not a {kind} (it has no {' or '.join(markers)}), so --overwrite will "
                f"not replace it: --overwrite only replaces a {kind} that fer wrote. Choose another "
                f"{flag}, or remove the folder yourself if you mean it"
            )
    return out


def check_writable(folder: str | os.PathLike, *, flag: str = "--out", target: str | os.PathLike | None = None) -> None:
    """Refuse early when files cannot be created in ``folder`` (or, if it does not exist yet, the
    nearest folder above it, where it would be created): read-only, no permission, or full."""
    folder = Path(folder).resolve()
    probe_in = folder
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    shown = target if target is not None else folder
    if not probe_in.is_dir():
        raise FerError(f"{flag} {shown}: {probe_in} is not a folder; choose another {flag}")
    try:
        fd, name = tempfile.mkstemp(prefix=".fer-write-probe-", dir=probe_in)
        try:
            os.write(fd, b"fer")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        what = (
            "the disk is full"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else "it is read-only"
            if exc.errno == errno.EROFS
            else exc.strerror or str(exc)
        )
        raise FerError(
            f"{flag} {shown}: cannot write in {probe_in} ({what}); choose another {flag}"
            + (" or free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "")
        ) from None


def check_file_replaceable(
    path: str | os.PathLike, *, is_ours: Callable[[Path], bool], what: str, flag: str = "--out"
) -> Path:
    """Refuse to overwrite an existing file at ``path`` that this command did not write (``is_ours``)."""
    path = Path(path)
    if path.is_dir():
        raise FerError(f"{flag} {path}: is a folder; give the file to write, e.g. {path / 'out'}")
    if path.exists():
        try:
            ours = is_ours(path)
        except Exception:  # noqa: BLE001 - a file the check cannot even parse is not one of ours
            ours = False
        if not ours:
            raise FerError(
                f"{flag} {path}: exists and is not {what} written by fer, so it is not replaced; "
                f"choose another {flag} or remove the file yourself"
            )
    check_writable(path.parent, flag=flag, target=path)
    return path
