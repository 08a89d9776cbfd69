"""Where a sweep's Optuna study lives (``--optuna-storage``), so a team can open it, extend it and watch it.

Forms:

- ``sqlite:///path/optuna.db``, ``postgresql://user@host/db``, ``mysql+pymysql://...``: an RDB storage
  (SQLAlchemy URL; the default for an experiment on local storage is ``sqlite:///<experiment>/optuna.db``);
- ``journal:/shared/path/optuna.log``: Optuna's journal file storage, for a shared file system where
  SQLite's locking is not safe (NFS); the file must be new, empty or a journal Optuna wrote - any other
  file is refused before the sweep starts (``check_storage``), untouched;
- ``memory``: no storage - the study lives only inside Tune's searcher state (nobody else can open
  it and ``--extend`` cannot continue it).

An object store (``s3://``) cannot hold a study: experiments there need an RDB URL or a journal on a
shared file system. The study's name is the experiment's name. Open it with Optuna
(``optuna.load_study(study_name=NAME, storage=URL)``) or ``optuna-dashboard URL``.
"""

from __future__ import annotations

import json
import os

from fer_core.errors import FerError
from fer_core.storage import redact

__all__ = ["default_storage_url", "check_storage", "open_storage", "study_trials", "MEMORY"]

MEMORY = "memory"


def default_storage_url(experiment_path: str | None) -> str | None:
    """``sqlite:///<experiment>/optuna.db`` for a local experiment; None for one on an object store."""
    return None if experiment_path is None else f"sqlite:///{experiment_path.rstrip('/')}/optuna.db"


def check_storage(url: str) -> None:
    """The checks of ``url`` that need no connection, made before the sweep starts (``FerError``): its form,
    and for a journal a file that is new, empty or an Optuna journal (a file fer did not write is never
    appended to) in an existing folder."""
    if url == MEMORY:
        return
    if url.startswith("journal:"):
        _check_journal(url, url[len("journal:") :])
        return
    if "://" not in url:
        raise FerError(
            f"--optuna-storage {redact(url)}: expected an SQLAlchemy URL (sqlite:///path/optuna.db, "
            "postgresql://user@host/db), journal:/path/file.log or memory"
        )


#: How much of a journal's first line is read to tell whether it is one (an Optuna record is far shorter).
JOURNAL_HEAD_BYTES = 64 * 1024


def _check_journal(url: str, path: str) -> None:
    """``path`` may hold an Optuna journal: a new file in an existing folder, an empty file, or a file whose
    first line is an Optuna journal record (JournalFileBackend writes one JSON object with an ``op_code``
    per line)."""
    if not path:
        raise FerError("--optuna-storage journal: needs a file path, e.g. journal:/shared/optuna/reg1.log")
    if os.path.isdir(path):
        raise FerError(f"--optuna-storage {url}: {path} is a folder, not a file; choose another path")
    if not os.path.exists(path):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FerError(f"--optuna-storage {url}: {folder}: no such folder; create it or choose another path")
        return
    if not os.path.isfile(path):  # a FIFO or a device: opening it could block, and it holds no journal
        raise FerError(f"--optuna-storage {url}: {path} is not a regular file; choose another path")
    try:
        with open(path, "rb") as fh:
            head = fh.readline(JOURNAL_HEAD_BYTES)
    except OSError as exc:
        raise FerError(f"--optuna-storage {url}: cannot read the journal ({exc.strerror or exc})") from None
    if head and not _is_journal_record(head):
        raise FerError(
            f"--optuna-storage {url}: {path} is not an Optuna journal file; choose another path "
            "(a new file, or a journal an earlier sweep wrote)"
        )


def _is_journal_record(line: bytes) -> bool:
    """A whole line (newline-terminated) holding a JSON object with an ``op_code``: Optuna's journal format."""
    if not line.endswith(b"\n"):
        return False  # longer than JOURNAL_HEAD_BYTES, or a file with no line break: not what Optuna writes
    try:
        record = json.loads(line.decode("utf-8"))
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return False
    return isinstance(record, dict) and "op_code" in record


def open_storage(url: str):
    """An Optuna storage for ``url`` (see the module doc); None for ``memory``. ``url`` is checked first
    (``check_storage``); a storage that cannot be opened or read is a ``FerError``."""
    import optuna

    check_storage(url)
    if url == MEMORY:
        return None
    if url.startswith("journal:"):
        path = url[len("journal:") :]
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        try:
            return JournalStorage(JournalFileBackend(path))
        except OSError as exc:
            raise FerError(f"--optuna-storage {url}: cannot open the journal ({exc.strerror or exc})") from None
        except Exception as exc:  # noqa: BLE001 - Optuna replays the whole file: JSON, Unicode, KeyError, ...
            raise FerError(
                f"--optuna-storage {url}: {path}: cannot read the Optuna journal ({_first_line(exc)}); "
                "it is damaged or not a journal: choose another path"
            ) from None
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many types for bad URLs or servers
        raise FerError(f"--optuna-storage {redact(url)}: cannot open the study storage ({_first_line(exc)})") from None


def study_trials(storage, name: str) -> int | None:
    """How many trials the study ``name`` holds in ``storage`` (an open Optuna storage); None when it has none
    of that name."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return len(storage.get_all_trials(study_id, deepcopy=False))


def _first_line(exc: Exception) -> str:
    """``JSONDecodeError: Expecting value: line 2 column 1 (char 71)``: an exception as one short line."""
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}".rstrip(": ")
