"""The decisions record: what the team decided from an experiment, on record beside it.

Today one kind of decision: ``fer export-best`` promoting a trial's configuration (which trial, the
ranking key and its value, the score, the file written, when and by whom). Each export adds its
entries; the experiment page and the team's index show them, so everyone sees which configuration
was promoted, when and on what evidence.

Each export writes a file of its own, ``decisions/<UTC time>-<host>-<pid>-<random>.json`` (a JSON list),
whole, never appended to or rewritten. Exports by several people at once therefore never lose one
another's entries, on a shared folder as on an object store (which has no lock and no atomic
read-modify-write). ``decisions.json``, the single file older versions rewrote on every export, is still
read, before the folder's entries.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, fields

import pyarrow.fs as pafs

from fer_core.storage import Location

from .store import ExperimentError, ExperimentStore

__all__ = ["DECISIONS", "DECISIONS_DIR", "Decision", "read_decisions", "record_decisions"]

DECISIONS_DIR = "decisions"  # one file per export
DECISIONS = "decisions.json"  # the single file of older versions (read, no longer written)


@dataclass(frozen=True)
class Decision:
    action: str  # "export-best"
    trial_id: str
    by: str  # the ranking key: score | final | peak | confirmed
    rank: int  # the trial's rank by that key (1 = best)
    value: float | None  # its value of the ranking key (the confirmed mean for "confirmed")
    score: float | None  # the sweep's score of the trial (mean val acc of the last epochs)
    file: str  # what was written (a path or a redacted URI)
    time: str  # UTC, ISO 8601
    user: str | None = None  # who ran the command (from the environment)


def read_decisions(store: ExperimentStore) -> list[Decision]:
    """The experiment's decisions, oldest first ([] when none were recorded)."""
    files = [store.file(DECISIONS)] if store.file(DECISIONS).is_file() else []
    folder = store.file(DECISIONS_DIR)
    files += [
        folder.child(info.base_name)
        for info in sorted(folder.list(), key=lambda i: i.base_name)
        if info.type == pafs.FileType.File and info.base_name.endswith(".json") and not info.base_name.startswith(".")
    ]
    return [d for loc in files for d in _read(loc)]


def _read(loc: Location) -> list[Decision]:
    try:
        raw = json.loads(loc.read_text())
        if not isinstance(raw, list):
            raise ValueError("not a JSON list")
        known = {f.name for f in fields(Decision)}
        return [Decision(**{k: v for k, v in entry.items() if k in known}) for entry in raw]
    except (ValueError, TypeError, AttributeError) as exc:
        raise ExperimentError(
            f"{loc}: not a decisions file written by fer ({exc}); move it aside to start a new record"
        ) from None


def record_decisions(store: ExperimentStore, new: list[Decision]) -> None:
    """Put ``new`` on the experiment's record: a new file of their own, written whole (see the module doc)."""
    from fer_core.jsonio import dumps

    if not new:
        return
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{now % 1:.6f}"[1:] + "Z"
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40] or "host"
    name = f"{stamp}-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
    store.file(DECISIONS_DIR).child(name).write_text(dumps([asdict(d) for d in new], indent=2) + "\n")
