"""``decisions.json``: what the team decided from an experiment, on record beside it.

Today one kind of decision: ``fer export-best`` promoting a trial's configuration (which trial, the
ranking key and its value, the score, the file written, when and by whom). Each export appends its
entries; the experiment page and the team's index show them, so everyone sees which configuration
was promoted, when and on what evidence. The file is a JSON list, rewritten whole (atomically on
every storage) on each append.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from .store import ExperimentError, ExperimentStore

__all__ = ["DECISIONS", "Decision", "read_decisions", "record_decisions"]

DECISIONS = "decisions.json"


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
    loc = store.file(DECISIONS)
    if not loc.is_file():
        return []
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
    """Append ``new`` to the experiment's decisions (the file is replaced whole, never half-written)."""
    from fer_core.jsonio import dumps

    entries = [asdict(d) for d in [*read_decisions(store), *new]]
    store.file(DECISIONS).write_text(dumps(entries, indent=2) + "\n")
