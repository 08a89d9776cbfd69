"""Files on any storage: a local path, ``file://``, ``s3://``, ``gs://``, ``hdfs://`` (pyarrow file systems).

    >>> loc = locate("s3://bucket/sweeps/reg1")          # or "runs/sweeps/reg1", "file:///shared/sweeps/reg1"
    >>> loc.child("sweep.json").write_text("{}")         # all-or-nothing on every backend
    >>> loc.child("sweep.json").read_text()

Writes are all-or-nothing: on a local or mounted file system a temp file is renamed over the target
(``fer_core.atomic``); on an object store one PUT writes a whole object or nothing. A folder of
several files is written files first and its index (``manifest.json``, ``sweep.json``) last, so a
reader that finds the index finds everything it names (``upload_dir``).

Credentials come from each file system's standard environment and config files (AWS_* variables
and ``~/.aws`` for S3, application default credentials for GCS); a URI may carry options in its
query string (``?endpoint_override=...``), and ``redact`` removes secrets from a URI before it is
shown or recorded anywhere.
"""

from __future__ import annotations

import builtins
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow.fs as pafs

from .errors import FerError
from .safepaths import is_uri

__all__ = ["Location", "locate", "redact", "StorageError", "check_folder", "folder_writer", "working_copy"]

#: Query parameters and URI parts that hold secrets (pyarrow's S3 options, SAS tokens, passwords).
_SECRET_KEYS = re.compile(r"(secret|token|password|passwd|key|credential|signature|sig)", re.I)
_SAFE_KEYS = {
    "endpoint_override",
    "scheme",
    "region",
    "anonymous",
    "allow_bucket_creation",
    "allow_bucket_deletion",
    "force_virtual_addressing",
    "role_arn",
    "session_name",
    "external_id",
    "load_frequency",
    "retry_limit_s",
    "connect_timeout",
    "request_timeout",
    "project_id",
}


class StorageError(FerError):
    """A location that cannot be opened, read or written."""


def redact(uri: str | os.PathLike) -> str:
    """``uri`` without secrets: no ``user:password@``, and secret-looking query values replaced by ``***``."""
    text = str(uri)
    if not is_uri(text):
        return text
    parts = urlsplit(text)
    netloc = parts.netloc.rsplit("@", 1)[-1] if "@" in parts.netloc else parts.netloc
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, v if k in _SAFE_KEYS or not _SECRET_KEYS.search(k) else "***") for k, v in pairs]
    if netloc == parts.netloc and query == pairs:
        return text  # nothing secret: exactly as given (sqlite:////abs/path stays intact)
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*:/"), parts.fragment))


_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"()<>,;]+")


def redact_text(text: str) -> str:
    """``text`` (a message) with every URI in it ``redact``-ed."""

    def one(m: re.Match) -> str:
        uri = m.group(0)
        end = uri.rstrip(":.")  # the sentence's punctuation after the URI stays
        return redact(end) + uri[len(end) :]

    return _URI_IN_TEXT.sub(one, text)


@dataclass(frozen=True)
class Location:
    """A file or folder on one file system: ``fs`` and the ``path`` inside it; ``uri`` as the user gave it."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return redact(self.uri)

    def sibling(self, name: str) -> Location:
        """The location ``name`` in the same folder (``best.yaml`` -> ``best-2.yaml``)."""
        parent = self.path.rstrip("/").rsplit("/", 1)[0]
        head, sep, query = self.uri.partition("?")
        uri = f"{head.rstrip('/').rsplit('/', 1)[0]}/{name}" + (f"?{query}" if sep else "")
        return Location(self.fs, f"{parent}/{name}", uri)

    def child(self, *parts: str) -> Location:
        rel = "/".join(p.strip("/") for p in parts if p)
        base_uri = self.uri
        if is_uri(base_uri) and "?" in base_uri:  # keep the query (endpoint options) at the end
            head, query = base_uri.split("?", 1)
            uri = f"{head.rstrip('/')}/{rel}?{query}"
        else:
            uri = f"{str(base_uri).rstrip('/')}/{rel}"
        return Location(self.fs, f"{self.path.rstrip('/')}/{rel}", uri)

    # -- reading ---------------------------------------------------------------------------------
    def info(self) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self.path)
        except OSError as exc:
            raise StorageError(f"{self}: cannot reach it ({exc})") from None

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        """A folder, or (object stores) a prefix with objects under it."""
        info = self.info()
        if info.type == pafs.FileType.Directory:
            return True
        if info.type == pafs.FileType.NotFound and not self.local:
            return bool(self.list())
        return False

    def list(self, *, recursive: bool = False) -> list[pafs.FileInfo]:
        """Entries under this folder (none when it does not exist)."""
        try:
            return self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True, recursive=recursive))
        except (OSError, FileNotFoundError) as exc:
            if isinstance(exc, FileNotFoundError):
                return []
            raise StorageError(f"{self}: cannot list it ({exc})") from None

    def read_bytes(self) -> bytes:
        try:
            with self.fs.open_input_stream(self.path) as fh:
                return fh.read()
        except FileNotFoundError:
            raise StorageError(f"{self}: no such file") from None
        except OSError as exc:
            raise StorageError(f"{self}: cannot read it ({exc})") from None

    def read_text(self) -> str:
        try:
            return self.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StorageError(f"{self}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None

    # -- writing ---------------------------------------------------------------------------------
    def write_bytes(self, data: bytes) -> None:
        """Write the whole file, or leave the old one (or none): temp file + rename, or one PUT."""
        if self.local:
            from .atomic import write_bytes

            write_bytes(self.path, data)
            return
        try:
            with self.fs.open_output_stream(self.path) as fh:
                fh.write(data)
        except OSError as exc:
            raise StorageError(f"{self}: cannot write it ({exc})") from None

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def delete(self) -> None:
        """Remove this file or folder (with everything under it); a no-op when it does not exist."""
        info = self.info()
        try:
            if info.type == pafs.FileType.File:
                self.fs.delete_file(self.path)
            elif info.type == pafs.FileType.Directory or (not self.local and self.list()):
                self.fs.delete_dir(self.path)
        except OSError as exc:
            raise StorageError(f"{self}: cannot delete it ({exc})") from None

    # builtins.list: in this class ``list`` is the method above
    def upload_dir(self, local: str | os.PathLike, *, last: tuple[str, ...] = ()) -> builtins.list[str]:
        """Copy the files of the local folder ``local`` to this location; the ``last`` names (relative
        paths, e.g. ``manifest.json``) are written after all others. Returns the relative paths written."""
        local = Path(local)
        files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
        order = [f for f in files if f not in last] + [f for f in last if f in files]
        for rel in order:
            self.child(rel).write_bytes((local / rel).read_bytes())
        return order

    def download_dir(self, local: str | os.PathLike) -> builtins.list[str]:
        """Copy every file under this folder into the local folder ``local``; returns the relative paths."""
        local = Path(local)
        base = self.path.rstrip("/") + "/"
        out = []
        for info in self.list(recursive=True):
            if info.type != pafs.FileType.File:
                continue
            rel = info.path[len(base) :] if info.path.startswith(base) else info.base_name
            if rel.startswith("/") or ".." in Path(rel).parts:
                continue
            target = local / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(Location(self.fs, info.path, self.uri).read_bytes())
            out.append(rel)
        return out


def locate(uri: str | os.PathLike) -> Location:
    """The ``Location`` of a local path or a URI pyarrow understands (``file://``, ``s3://``, ``gs://``, ...)."""
    text = os.fspath(uri)
    if is_uri(text):
        if any(v == "***" for _, v in parse_qsl(urlsplit(text).query, keep_blank_values=True)):
            raise StorageError(
                f"{text}: recorded with its secrets redacted (***); give the URI with its credentials again, or put "
                "them in the environment (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and leave them out of it"
            )
        try:
            fs, path = pafs.FileSystem.from_uri(text)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for schemes and credentials
            raise StorageError(f"{redact(text)}: cannot open this location ({exc})") from None
        return Location(fs, path.rstrip("/") or path, text)
    return Location(pafs.LocalFileSystem(), os.path.abspath(text), text)


def check_folder(
    uri: str | os.PathLike,
    *,
    overwrite: bool,
    kind: str,
    markers: tuple[str, ...] = (),
    protect: tuple = (),
    flag: str = "--out",
) -> None:
    """Refuse early a folder target that may not be written (``fer_core.safepaths``'s rules, on any storage)."""
    if not is_uri(uri):
        from .atomic import check_target

        check_target(uri, overwrite, kind=kind, markers=markers, protect=protect, flag=flag)
        return
    loc = locate(uri)
    if loc.is_file():
        raise StorageError(f"{flag} {loc}: exists and is not a folder; choose another {flag}")
    if loc.is_dir():
        if not overwrite:
            raise StorageError(
                f"{loc}: already exists and is not empty; pass --overwrite to replace it or choose another {flag}"
            )
        plain = [m for m in markers if not any(c in m for c in "*?[")]
        if plain and not any(loc.child(m).is_file() for m in plain):
            raise StorageError(
                f"{flag} {loc}: is not a {kind} (it has no {' or '.join(plain)}), so --overwrite will "
                f"not replace it; choose another {flag}"
            )


@contextmanager
def folder_writer(
    uri: str | os.PathLike,
    *,
    overwrite: bool = False,
    kind: str = "folder",
    markers: tuple[str, ...] = (),
    protect: tuple = (),
    flag: str = "--out",
    last: tuple[str, ...] = (),
) -> Iterator[Path]:
    """Yield a local temp folder to fill; on success it becomes the folder at ``uri``, on failure nothing changes.

    Local targets are swapped in whole (``fer_core.atomic.atomic_dir``). On an object store the files
    are uploaded one whole object each, the ``last`` ones (the folder's index, e.g. ``manifest.json``)
    after all others, and objects of the previous content that the new one does not have are removed
    once the index is written: a reader finds either the old index or the new one, and every file the
    index it found names (checksums tell a file replaced meanwhile).
    """
    if not is_uri(uri):
        from .atomic import atomic_dir

        with atomic_dir(uri, overwrite=overwrite, kind=kind, markers=markers, protect=protect, flag=flag) as tmp:
            yield tmp
        return
    check_folder(uri, overwrite=overwrite, kind=kind, markers=markers, protect=protect, flag=flag)
    loc = locate(uri)
    with tempfile.TemporaryDirectory(prefix="fer-upload-") as tmp:
        yield Path(tmp)
        before = {info.path for info in loc.list(recursive=True) if info.type == pafs.FileType.File}
        if before and not overwrite:  # empty when checked: another command wrote it since (an object store
            # has no atomic check-and-write, so this narrows the race to the upload itself)
            raise StorageError(
                f"{loc}: was written by another command while this one ran, and is kept; this command's result "
                f"is discarded - pass --overwrite to replace it, or choose another {flag}"
            )
        written = {loc.child(rel).path for rel in loc.upload_dir(tmp, last=last)}
        for stale in sorted(before - written):
            try:
                loc.fs.delete_file(stale)
            except OSError as exc:
                raise StorageError(
                    f"{loc}: the new content is in place, but a file of the previous one could not "
                    f"be removed ({stale}: {exc})"
                ) from None


@contextmanager
def working_copy(uri: str | os.PathLike, *, download: bool = True) -> Iterator[tuple[Path, Location | None]]:
    """A local folder to work in for the folder at ``uri``: ``(uri itself, None)`` when it is local;
    for a storage URI a temp copy (its files downloaded when ``download``) and its ``Location``, to
    which the caller uploads what it wrote (``Location.upload_dir``). The temp copy is removed at the end."""
    if not is_uri(uri) or locate(uri).local:
        yield Path(locate(uri).path), None
        return
    loc = locate(uri)
    with tempfile.TemporaryDirectory(prefix="fer-work-") as tmp:
        local = Path(tmp) / (loc.name or "run")
        local.mkdir()
        if download and loc.is_dir():
            loc.download_dir(local)
        yield local, loc
