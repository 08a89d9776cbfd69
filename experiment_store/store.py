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

__all__ = [
    "ExperimentStore",
    "ExperimentError",
    "RECORD",
    "TRIALS",
    "EPOCHS",
    "SUMMARY",
    "CONFIRM_TABLE",
    "CONFIRM_RECORD",
    "MARKERS",
    "rows_table",
    "experiment_dir_of",
]

RECORD = "sweep.json"
TRIALS = "trials.parquet"
EPOCHS = "epochs.parquet"
SUMMARY = "summary.txt"
CONFIRM_TABLE = "confirm.parquet"
CONFIRM_RECORD = "confirm.json"
#: Files that make a folder an experiment (``--overwrite`` replaces nothing else).
MARKERS = (RECORD, "tuner.pkl", "experiment_state-*.json")
TUNER_STATE = "tuner.pkl"
TUNER_COPY = ".tuner.pkl.launch"


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
                row = json.loads(line)  # Python's json reads the NaN Tune writes
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and all(_count(row, k) for k in ("epoch", "training_iteration")):
                results.append(row)  # (a row with a non-count epoch is not Tune's: it is skipped like a cut line)
        params: dict = {}
        try:
            loaded = json.loads(self.file(f"{folder}/params.json").read_text())
            params = loaded if isinstance(loaded, dict) else {}
        except (StorageError, json.JSONDecodeError):
            pass
        if not params and results:
            params = dict(results[-1].get("config") or {})
        return params, results, self.has(f"{folder}/error.txt")

    # -- Ray Tune's own state (what a resume restores) --------------------------------------------------
    def keep_tune_state_copy(self) -> None:
        """Keep a copy of ``tuner.pkl`` as written at the launch (call right after creating the Tuner).

        Ray re-uploads ``tuner.pkl`` (and its other state files) at every experiment snapshot of a
        resumed run, each time by truncating and rewriting the file: a driver killed during such an
        upload leaves it empty or cut short, and the next resume fails. Its content never changes
        after the launch, so the copy (``.tuner.pkl.launch``, a name Ray's sync ignores) repairs it.
        """
        data = self.file(TUNER_STATE).read_bytes()
        if _complete_pickle(data):
            self.file(TUNER_COPY).write_bytes(data)

    def repair_tune_state(self) -> list[str]:
        """Before a resume: undo what a driver killed while Ray wrote its state left behind; what was done.

        - an empty or cut-short ``tuner.pkl`` is restored from the launch's copy;
        - the newest snapshot (``experiment_state-<session>.json`` with its searcher files) is set
          aside (renamed ``*.damaged``) when it is cut short, so Ray restores the snapshot before it.
        """
        done = []
        tuner = self.file(TUNER_STATE)
        if not (tuner.is_file() and _complete_pickle(tuner.read_bytes())) and self.has(TUNER_COPY):
            tuner.write_bytes(self.file(TUNER_COPY).read_bytes())
            done.append(f"restored {TUNER_STATE} from the launch's copy (a killed driver had cut it short)")
        states = sorted(
            i.base_name
            for i in self.location.list()
            if i.base_name.startswith("experiment_state-") and i.base_name.endswith(".json")
        )
        for name in reversed(states[1:]):  # never the only one: Ray needs one to restore from
            session = name[len("experiment_state-") : -len(".json")]
            files = [name, f"searcher-state-{session}.pkl", f"search_gen_state-{session}.json"]
            if _snapshot_complete(self, files):
                break
            for f in files:
                if self.has(f):
                    self.file(f).sibling(f + ".damaged").write_bytes(self.file(f).read_bytes())
                    self.file(f).delete()
            done.append(
                f"set aside the snapshot {session} (cut short when a driver was killed); resuming from "
                "the one before it"
            )
        return done

    # -- change detection (the live dashboard) -----------------------------------------------------------
    def fingerprint(self) -> str:
        """Changes whenever a file a page is built from changes (names, sizes, modification times)."""
        h = hashlib.sha256()
        names = [RECORD, TRIALS, EPOCHS, CONFIRM_TABLE, "decisions.json"]
        try:
            folders = self.trial_folders()
            names += [f"decisions/{i.base_name}" for i in self.file("decisions").list()]  # experiment_store.decisions
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


def _count(row: dict, key: str) -> bool:
    """``row[key]``, when there, is a whole number >= 0 (an epoch, an iteration)."""
    value = row.get(key, 0)
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def experiment_dir_of(store: ExperimentStore) -> str:
    """How a record names the experiment: the absolute path when local, the (redacted) URI otherwise."""
    return store.location.path if store.local else store.uri


def _complete_pickle(data: bytes) -> bool:
    """Whether ``data`` is a whole pickle (parsed with ``pickletools``: nothing is run)."""
    import pickletools

    if not data:
        return False
    try:
        for op, _arg, _pos in pickletools.genops(data):
            if op.name == "STOP":
                return True
    except Exception:  # noqa: BLE001 - a cut-short pickle ends the parse early
        return False
    return False


def _snapshot_complete(store: ExperimentStore, files: list[str]) -> bool:
    """Whether a Tune snapshot's files (state JSON, searcher pickle, generator JSON) are all whole."""
    for name in files:
        if not store.has(name):
            continue
        data = store.file(name).read_bytes()
        if name.endswith(".pkl") or data[:1] == b"\x80":  # Ray's search_gen_state-*.json is a pickle
            if not _complete_pickle(data):
                return False
        else:
            try:
                json.loads(data)
            except ValueError:
                return False
    return True
