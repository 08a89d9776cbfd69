"""The experiment store: the one owner of what a sweep experiment is on storage (any URI).

``ExperimentStore`` reads and writes an experiment's files; ``SweepRecord`` is its typed, versioned
``sweep.json``; ``Outcome`` is a trial's outcome (``trials.parquet``'s ``outcome`` column). The sweep
and ``fer confirm`` write through it; the dashboard, ``fer export-best``, ``fer retrain`` and ``fer
confirm`` read through it.
"""

from .confirm_results import COLUMNS as CONFIRM_COLUMNS, confirm_table, read_confirm, summarize
from .decisions import DECISIONS, DECISIONS_DIR, Decision, read_decisions, record_decisions
from .outcome import MAIN_OUTCOMES, Outcome
from .record import FORMAT, FORMAT_VERSION, DataRef, RecordError, SweepRecord
from .store import (
    CONFIRM_RECORD,
    CONFIRM_TABLE,
    EPOCHS,
    MARKERS,
    RECORD,
    SUMMARY,
    TRIALS,
    ExperimentError,
    ExperimentStore,
    experiment_dir_of,
    rows_table,
)

__all__ = [
    "ExperimentStore",
    "ExperimentError",
    "SweepRecord",
    "DataRef",
    "RecordError",
    "FORMAT",
    "FORMAT_VERSION",
    "Outcome",
    "MAIN_OUTCOMES",
    "RECORD",
    "TRIALS",
    "EPOCHS",
    "SUMMARY",
    "CONFIRM_TABLE",
    "CONFIRM_RECORD",
    "MARKERS",
    "rows_table",
    "experiment_dir_of",
    "CONFIRM_COLUMNS",
    "confirm_table",
    "read_confirm",
    "summarize",
    "DECISIONS",
    "DECISIONS_DIR",
    "Decision",
    "read_decisions",
    "record_decisions",
]
