"""Where a sweep's Optuna study lives (``--optuna-storage``), so a team can open it, extend it and watch it.

Forms:

- ``sqlite:///path/optuna.db``, ``postgresql://user@host/db``, ``mysql+pymysql://...``: an RDB storage
  (SQLAlchemy URL; the default for an experiment on local storage is ``sqlite:///<experiment>/optuna.db``);
- ``journal:/shared/path/optuna.log``: Optuna's journal file storage, for a shared file system where
  SQLite's locking is not safe (NFS);
- ``memory``: no storage - the study lives only inside Tune's searcher state (nobody else can open
  it and ``--extend`` cannot continue it).

An object store (``s3://``) cannot hold a study: experiments there need an RDB URL or a journal on a
shared file system. The study's name is the experiment's name. Open it with Optuna
(``optuna.load_study(study_name=NAME, storage=URL)``) or ``optuna-dashboard URL``.
"""

from __future__ import annotations

from fer_core.errors import FerError
from fer_core.storage import redact

__all__ = ["default_storage_url", "open_storage", "MEMORY"]

MEMORY = "memory"


def default_storage_url(experiment_path: str | None) -> str | None:
    """``sqlite:///<experiment>/optuna.db`` for a local experiment; None for one on an object store."""
    return None if experiment_path is None else f"sqlite:///{experiment_path.rstrip('/')}/optuna.db"


def open_storage(url: str):
    """An Optuna storage for ``url`` (see the module doc); None for ``memory``."""
    import optuna

    if url == MEMORY:
        return None
    if url.startswith("journal:"):
        path = url[len("journal:") :]
        if not path:
            raise FerError("--optuna-storage journal: needs a file path, e.g. journal:/shared/optuna/reg1.log")
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        try:
            return JournalStorage(JournalFileBackend(path))
        except OSError as exc:
            raise FerError(f"--optuna-storage {url}: cannot open the journal ({exc.strerror or exc})") from None
    if "://" not in url:
        raise FerError(
            f"--optuna-storage {redact(url)}: expected an SQLAlchemy URL (sqlite:///path/optuna.db, "
            "postgresql://user@host/db), journal:/path/file.log or memory"
        )
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many types for bad URLs or servers
        raise FerError(
            f"--optuna-storage {redact(url)}: cannot open the study storage ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]})"
        ) from None
