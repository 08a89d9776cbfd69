"""One sweep experiment on storage - the only code that writes or reads its files.

An experiment is a folder ``<storage>/<name>`` on any file system ``fer_core.storage`` opens (a local
path, ``file://``, ``s3://``, ``gs://``, a shared mount):

- ``sweep.json``: the record (``SweepRecord``), written last;
- ``trials.parquet``: a row per trial (``trial_id``, ``outcome``, ``stop_reason``, ``score``, ``peak``,
  ``peak_epoch``, ``final``, ``drop_from_peak``, ``epochs``, ``time_s``, ``config/<key>`` per sampled
  hyperparameter); ``epochs.parquet``: a row per trial-epoch; ``summary.txt``: the printed table;
- ``confirm.parquet`` and ``confirm.json``: ``fer confirm``'s runs and ranking;
- Ray Tune's own files: ``experiment_state-*.json``, ``tuner.pkl``, searcher state and one folder
  per trial (``params.json``, ``result.json`` with a JSON result per line, ``error.txt`` when it
  failed, checkpoints), read here while a sweep runs (``read_trial``).

Writes are all-or-nothing per file (``Location.write_bytes``); the record goes last, so a reader that
finds ``sweep.json`` finds the tables it describes.

    >>> store = ExperimentStore("s3://bucket/sweeps/reg1")
    >>> store.read_record().best["score"], len(store.read_rows(TRIALS))
"""

from __future__ import annotations

import hashlib
import io
import json
import math

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fer_core.errors import FerError
from fer_core.jsonio import dumps
from fer_core.storage import Location, StorageError, locate, redact

from .record import RecordError, SweepRecord

__all__ = ["ExperimentStore", "ExperimentError", "RECORD", "TRIALS", "EPOCHS", "SUMMARY", "CONFIRM_TABLE",
           "CONFIRM_RECORD", "MARKERS", "rows_table", "experiment_dir_of"]

RECORD = "sweep.json"
TRIALS = "trials.parquet"
EPOCHS = "epochs.parquet"
SUMMARY = "summary.txt"
CONFIRM_TABLE = "confirm.parquet"
CONFIRM_RECORD = "confirm.json"
#: Files that make a folder an experiment (``--overwrite`` replaces nothing else).
MARKERS = (RECORD, "tuner.pkl", "experiment_state-*.json")


class ExperimentError(FerError):
    """A folder that is not a sweep's experiment folder, or one whose files cannot be read."""


def rows_table(rows: list[dict]) -> pa.Table:
    """Rows (dicts) as an Arrow table; a column whose values mix types (a list and a float) becomes text."""
    if not rows:
        return pa.table({"trial_id": pa.array([], pa.string())})
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    columns = {}
    for k in keys:
        values = [r.get(k) for r in rows]
        try:
            columns[k] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[k] = pa.array([None if v is None else str(v) for v in values], pa.string())
    return pa.table(columns)


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


class ExperimentStore:
    """The experiment at ``uri`` (it need not exist yet: the sweep creates it)."""

    def __init__(self, uri: str | Location):
        self.location = uri if isinstance(uri, Location) else locate(uri)

    # -- where -------------------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        """The location as given, secrets redacted (for messages and records)."""
        return redact(self.location.uri)

    @property
    def name(self) -> str:
        return self.location.name

    @property
    def local(self) -> bool:
        return self.location.local

    def __str__(self) -> str:
        return self.uri

    def file(self, name: str) -> Location:
        return self.location.child(name)

    def has(self, name: str) -> bool:
        try:
            return self.file(name).is_file()
        except StorageError:
            return False

    def exists(self) -> bool:
        return self.location.is_dir()

    # -- the record ----------------------------------------------------------------------------------
    def read_record(self) -> SweepRecord | None:
        """``sweep.json`` (None when the sweep has not written it yet)."""
        loc = self.file(RECORD)
        if not loc.is_file():
            return None
        try:
            raw = json.loads(loc.read_text())
        except json.JSONDecodeError as exc:
            raise ExperimentError(f"{loc}: not valid JSON ({exc})") from None
        except StorageError as exc:
            raise ExperimentError(str(exc)) from None
        try:
            return SweepRecord.from_dict(raw, where=str(loc))
        except RecordError as exc:
            raise ExperimentError(str(exc)) from None

    def write_record(self, record: SweepRecord) -> None:
        self.file(RECORD).write_text(dumps(record.to_dict(), indent=2) + "\n")

    # -- results -------------------------------------------------------------------------------------
    def write_tables(self, trials: list[dict], epochs: list[dict]) -> tuple[pa.Table, pa.Table]:
        """``trials.parquet`` and ``epochs.parquet`` from rows (``sweeps.results.trial_rows`` / ``epoch_rows``)."""
        tables = rows_table(trials), rows_table(epochs)
        self.file(TRIALS).write_bytes(_parquet_bytes(tables[0]))
        self.file(EPOCHS).write_bytes(_parquet_bytes(tables[1]))
        return tables

    def write_results(self, trials: list[dict], epochs: list[dict], summary: str, record: SweepRecord) -> None:
        """The tables, the summary, then the record (so a reader that sees the record sees the rest)."""
        self.write_tables(trials, epochs)
        self.file(SUMMARY).write_text(summary + "\n")
        self.write_record(record)

    def read_rows(self, name: str) -> list[dict] | None:
        """The rows of one of the experiment's Parquet tables (None when it is missing); NaN reads as None."""
        loc = self.file(name)
        if not loc.is_file():
            return None
        try:
            rows = pq.read_table(pa.BufferReader(loc.read_bytes())).to_pylist()
        except StorageError as exc:
            raise ExperimentError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise ExperimentError(f"{loc}: not a readable Parquet table ({exc})") from None
        for row in rows:
            for k, v in row.items():
                if isinstance(v, float) and math.isnan(v):
                    row[k] = None
        return rows

    def tables_current(self) -> bool:
        """Whether the tables exist and are newer than every trial's ``result.json`` (a resumed sweep's are not)."""
        trials, epochs = self.file(TRIALS).info(), self.file(EPOCHS).info()
        if trials.type != pafs.FileType.File or epochs.type != pafs.FileType.File:
            return False
        written = trials.mtime.timestamp() if trials.mtime else 0.0
        for folder in self.trial_folders():
            info = self.file(f"{folder}/result.json").info()
            if info.type == pafs.FileType.File and info.mtime and info.mtime.timestamp() > written + 1.0:
                return False
        return True

    # -- confirmation --------------------------------------------------------------------------------
    def write_confirm(self, table: pa.Table, record: dict) -> None:
        self.file(CONFIRM_TABLE).write_bytes(_parquet_bytes(table))
        self.file(CONFIRM_RECORD).write_text(dumps(record, indent=2) + "\n")

    # -- Ray Tune's trial folders (a running or interrupted sweep) ---------------------------------------
    def trial_folders(self) -> list[str]:
        """Names of the trial folders (those holding ``result.json`` or ``params.json``), sorted."""
        names = []
        for info in self.location.list():
            if info.type != pafs.FileType.Directory:
                continue
            name = info.base_name
            if self.has(f"{name}/result.json") or self.has(f"{name}/params.json"):
                names.append(name)
        return sorted(names)

    def read_trial(self, folder: str) -> tuple[dict, list[dict], bool]:
        """(sampled params, results so far, errored) of one trial folder; a line being written is skipped."""
        results: list[dict] = []
        try:
            text = self.file(f"{folder}/result.json").read_text() if self.has(f"{folder}/result.json") else ""
        except StorageError:
            text = ""
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)           # Python's json reads the NaN Tune writes
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                results.append(row)
        params: dict = {}
        try:
            loaded = json.loads(self.file(f"{folder}/params.json").read_text())
            params = loaded if isinstance(loaded, dict) else {}
        except (StorageError, json.JSONDecodeError):
            pass
        if not params and results:
            params = dict(results[-1].get("config") or {})
        return params, results, self.has(f"{folder}/error.txt")

    # -- change detection (the live dashboard) -----------------------------------------------------------
    def fingerprint(self) -> str:
        """Changes whenever a file a page is built from changes (names, sizes, modification times)."""
        h = hashlib.sha256()
        names = [RECORD, TRIALS, EPOCHS, CONFIRM_TABLE]
        try:
            folders = self.trial_folders()
        except StorageError:
            folders = []
        names += [f"{d}/result.json" for d in folders] + [f"{d}/error.txt" for d in folders]
        for name in names:
            try:
                info = self.file(name).info()
            except StorageError:
                continue
            if info.type == pafs.FileType.File:
                h.update(f"{name}:{info.size}:{info.mtime_ns}\n".encode())
        return h.hexdigest()[:16]


def experiment_dir_of(store: ExperimentStore) -> str:
    """How a record names the experiment: the absolute path when local, the (redacted) URI otherwise."""
    return store.location.path if store.local else store.uri
