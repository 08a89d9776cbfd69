"""Write files and folders so that a failure, or a kill at any moment, loses nothing.

Files: written to a temp file beside the target, flushed, then renamed over it (``os.replace`` is
atomic on POSIX file systems), so a reader sees the old file or the new one, never half of one.

Folders (``atomic_dir``): built in a temp folder ``.NAME.tmp-HOST-PID`` beside the target, then
swapped in:

- where the kernel can exchange two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``), the
  new folder and the old one trade places atomically and the old one (now under the temp name) is
  deleted: at no moment is ``NAME`` missing;
- elsewhere, the old folder is renamed to ``.NAME.old-HOST-PID``, the new one to ``NAME``, and the
  old one is deleted. A kill between the two renames leaves ``NAME`` missing for a moment; the next
  command that writes ``NAME`` (or ``recover(NAME)``) renames the old folder back first.

Leftovers of a killed command (temp folders, files and old copies whose process is gone) are
removed by the next write of the same target on the same host; leftovers of a process that still
runs, or that ran on another host (a shared file system), are left alone.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import FerError

__all__ = ["write_bytes", "write_text", "atomic_dir", "check_target", "recover"]

_HOST = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:64] or "host"


def _tag() -> str:
    return f"{_HOST}-{os.getpid()}"


def _step(name: str) -> None:
    """A named point between the steps of a folder swap (tests kill the process here; a no-op)."""


def _dead(tag: str) -> bool:
    """Whether the process that made a leftover tagged ``HOST-PID`` is gone (False when unknown)."""
    host, _, pid = tag.rpartition("-")
    if host != _HOST or not pid.isdigit():
        return False  # another host's, or not ours: leave it alone
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists, owned by someone else
    return False


def _leftovers(path: Path, kind: str) -> list[tuple[Path, str]]:
    """(path, tag) of ``.NAME.<kind>-TAG`` entries beside ``path``."""
    prefix = f".{path.name}.{kind}-"
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    return [(path.parent / n, n[len(prefix) :]) for n in names if n.startswith(prefix)]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def recover(path: str | os.PathLike) -> None:
    """Undo what a killed write of ``path`` left behind (see the module doc); a no-op when nothing did."""
    path = Path(path)
    for old, tag in _leftovers(path, "old"):
        if not _dead(tag):
            continue
        if not path.exists() and not path.is_symlink():
            os.replace(old, path)  # killed between the two renames: the previous content is back
        else:
            _remove(old)  # killed while deleting the replaced copy
    for tmp, tag in _leftovers(path, "tmp"):
        if _dead(tag):
            _remove(tmp)
    if not path.exists():
        foreign = [old.name for old, _ in _leftovers(path, "old")]
        if foreign:
            raise FerError(
                f"{path} is missing, but {', '.join(foreign)} beside it holds its previous content: "
                "a replace on another host or by a running command was interrupted or is under way; "
                f"if none is running, rename it back to {path.name}"
            )


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temp file beside ``path`` and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale, tag in _leftovers(path, "tmp"):  # a killed earlier write of this file
        if _dead(tag):
            _remove(stale)
    tmp = path.with_name(f".{path.name}.tmp-{_tag()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the two existing paths ``a`` and ``b`` in one step; False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _put_new(tmp: Path, out_dir: Path, flag: str) -> None:
    """Rename ``tmp`` to ``out_dir``, which must be missing or empty. The kernel checks that in the rename itself,
    so a folder another command filled since ``check_target`` (two writers of one new ``--out``) is refused,
    not replaced."""
    try:
        os.rename(tmp, out_dir)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise FerError(
            f"{out_dir}: was written by another command while this one ran, and is kept; this command's result "
            f"is discarded - pass --overwrite to replace it, or choose another {flag}"
        ) from None


def check_target(
    out_dir: str | os.PathLike,
    overwrite: bool,
    *,
    kind: str = "folder",
    markers: tuple[str, ...] = (),
    protect: tuple = (),
    flag: str = "--out",
) -> Path:
    """Refuse early (before any work) a target that cannot or may not be replaced; see ``safepaths``."""
    from .safepaths import check_replaceable, check_writable

    out_dir = Path(out_dir)
    recover(out_dir)
    check_replaceable(out_dir, kind=kind, markers=markers, overwrite=overwrite, protect=protect, flag=flag)
    check_writable(out_dir.parent, flag=flag, target=out_dir)
    return out_dir


@contextmanager
def atomic_dir(
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    kind: str = "folder",
    markers: tuple[str, ...] = (),
    protect: tuple = (),
    flag: str = "--out",
) -> Iterator[Path]:
    """Yield a temp folder beside ``out_dir``; on success it replaces ``out_dir`` (see the module doc).

    ``out_dir`` is checked first (``check_target``: it may only be replaced with ``overwrite`` and
    when it holds one of ``markers``, i.e. it is a ``kind`` this project wrote). On any error the
    temp folder is removed and ``out_dir`` is left exactly as it was.
    """
    out_dir = check_target(out_dir, overwrite, kind=kind, markers=markers, protect=protect, flag=flag)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{_tag()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _step("built")
    try:
        if not overwrite or not out_dir.exists():
            _put_new(tmp, out_dir, flag)
            _step("swapped")
            return
        if _exchange(tmp, out_dir):  # out_dir is new now; tmp holds the previous content
            _step("swapped")
            shutil.rmtree(tmp, ignore_errors=True)
            return
        old = out_dir.with_name(f".{out_dir.name}.old-{_tag()}")
        os.replace(out_dir, old)
        _step("moved-old")
        try:
            os.replace(tmp, out_dir)
        except OSError:
            os.replace(old, out_dir)
            raise
        _step("swapped")
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FerError(
            f"{out_dir}: could not put the new folder in place ({exc.strerror or exc}); "
            "the previous content is unchanged"
        ) from None
