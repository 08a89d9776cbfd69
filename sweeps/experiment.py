"""A sweep's experiment as one object for review and release: ``load_experiment(uri) -> Experiment``.

The files are read through ``experiment_store`` (a local folder or any storage URI). A finished
sweep (``sweeps/regularization.py``) leaves ``trials.parquet``, ``epochs.parquet`` and ``sweep.json``
in ``<storage>/<name>/``. While it runs the tables do not exist yet; then the trials are read from
Tune's own files instead (``sweeps.live``), and trials without a final result are ``running``. The
data set's ``manifest.json`` (at ``sweep.json``'s ``data.uri``) adds class counts per split and the
quality summary when it is readable; a dashboard never fails for lack of it.

    >>> exp = load_experiment("runs/sweeps/reg1")
    >>> exp.name, len(exp.trials), exp.outcome_counts()["completed"], exp.best["score"]
    >>> exp.record.max_epochs, exp.params[0].range_text()     # sweep.json (a SweepRecord), its space
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiment_store import EPOCHS, MAIN_OUTCOMES, TRIALS, DataRef, ExperimentError, ExperimentStore, SweepRecord
from fer_core.errors import FerError
from fer_core.numbers import is_finite as _finite
from fer_core.storage import StorageError

from .space import Param, SearchSpace, trial_config

__all__ = ["Experiment", "load_experiment", "ExperimentError"]


@dataclass
class Experiment:
    store: ExperimentStore
    name: str
    trials: list[dict]  # trials.parquet rows (or their live equivalent)
    epochs: list[dict]  # epochs.parquet rows, ordered by trial and epoch
    params: list[Param]  # the searched space (sweeps.space), in order
    fixed: dict
    classes: list[str]
    record: SweepRecord | None = None  # sweep.json (None while the sweep runs)
    manifest: dict | None = None  # the data set's manifest.json, when readable
    live: bool = False  # read from Tune's files: the sweep is running (or was interrupted)
    space_inferred: bool = False  # no sweep.json: the space was inferred from the sampled values
    notes: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        """The experiment's location as shown and recorded: a local path, or its URI (secrets redacted)."""
        return self.store.location.path if self.store.local else self.store.uri

    # -- derived facts ------------------------------------------------------------------------------
    def outcome_counts(self) -> dict[str, int]:
        counts = {o.value: 0 for o in MAIN_OUTCOMES}
        for t in self.trials:
            counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
        return counts

    @property
    def scored(self) -> list[dict]:
        """Trials with a finite score, best first."""
        return sorted((t for t in self.trials if _finite(t.get("score"))), key=lambda t: -t["score"])

    @property
    def best(self) -> dict | None:
        scored = self.scored
        return scored[0] if scored else None

    @property
    def compute_s(self) -> float:
        return float(sum(t.get("time_s") or 0.0 for t in self.trials if _finite(t.get("time_s"))))

    @property
    def wall_s(self) -> float | None:
        return self.record.wall_s if self.record is not None else None

    @property
    def epochs_total(self) -> int:
        return int(sum(t.get("epochs") or 0 for t in self.trials))

    @property
    def command(self) -> str | None:
        return self.record.command if self.record is not None else None

    @property
    def data(self) -> DataRef | None:
        """The data set the sweep trained on (None while the sweep runs)."""
        return self.record.data if self.record is not None else None

    @property
    def max_epochs(self) -> int | None:
        """Each trial's epoch budget (None while the sweep runs)."""
        return self.record.max_epochs if self.record is not None else None

    @property
    def objective(self) -> str:
        return self.record.objective if self.record is not None else ""

    def history(self, trial_id: str) -> list[dict]:
        return self._by_trial().get(trial_id, [])

    def _by_trial(self) -> dict[str, list[dict]]:
        if not hasattr(self, "_history_index"):
            index: dict[str, list[dict]] = {}
            for row in self.epochs:
                index.setdefault(row["trial_id"], []).append(row)
            self._history_index = index
        return self._history_index

    def value(self, trial: dict, param: str) -> Any:
        """A trial's value of a hyperparameter; ``None`` when it does not exist for that trial."""
        v = trial.get(f"config/{param}")
        return None if isinstance(v, float) and math.isnan(v) else v

    @property
    def score_window(self) -> int:
        return int((self.record.score_window if self.record is not None else None) or 3)

    def trial(self, trial_id: str) -> dict:
        for row in self.trials:
            if row["trial_id"] == trial_id:
                return row
        raise ExperimentError(f"{self.where}: no trial {trial_id!r} in trials.parquet")

    def sampled(self, row: dict) -> dict:
        """The values the trial sampled, from its ``config/<key>`` columns.

        A null cell means the parameter was absent (a conditional one whose ``when`` did not hold),
        unless the space says it was active - then null is the sampled value (a ``null`` choice).
        """
        columns = {k.removeprefix("config/"): v for k, v in row.items() if k.startswith("config/")}
        if self.space_inferred:
            return {k: v for k, v in columns.items() if v is not None}
        values: dict[str, Any] = {}
        for p in self.params:
            if p.active(values):
                values[p.name] = _as_choice(columns.get(p.name), p.choices)
        values.update({k: v for k, v in columns.items() if k not in values and v is not None})
        return values

    def config(self, row: dict):
        """The trial's full trainer config (a ``TrainConfig``): base config < the space's fixed keys < its
        sampled values."""
        from fer_core.train.config import ConfigError

        base = self.record.base_config if self.record is not None else {}
        try:
            return trial_config(
                base, self.fixed, _uncoerce(self.sampled(row)), where=f"{self.where} trial {row['trial_id']}"
            )
        except ConfigError as exc:
            raise ExperimentError(
                f"{exc} (the experiment's sweep.json and trials.parquet do not give a valid "
                "trainer config; was it written by another version of "
                "sweeps/regularization.py?)"
            ) from None


def _as_choice(value, choices: tuple | None):
    """A categorical value that ``trials.parquet`` stored as text (a column of mixed types) back as the choice."""
    if isinstance(value, str) and choices and value not in choices:
        for c in choices:
            if str(c) == value:
                return c
    return value


def _uncoerce(params: dict) -> dict:
    """Numbers a mixed-type column turned into text (``"0.25"``) back into numbers, for non-text keys."""
    from dataclasses import fields

    import yaml

    from fer_core.train.config import TrainConfig

    text_keys = {f.name for f in fields(TrainConfig) if "str" in str(f.type)}
    out = {}
    for k, v in params.items():
        if isinstance(v, str) and k not in text_keys:
            try:
                v = yaml.safe_load(v)
            except yaml.YAMLError:
                pass
        out[k] = v
    return out


def _infer_params(trials: list[dict]) -> list[Param]:
    """Without ``sweep.json`` (a running sweep): each sampled key, typed from its values."""
    names: list[str] = []
    for t in trials:
        names.extend(k[7:] for k in t if k.startswith("config/") and k[7:] not in names)
    out = []
    for name in names:
        values = [v for t in trials if (v := t.get(f"config/{name}")) is not None]
        numeric = [v for v in values if _finite(v)]
        if values and len(numeric) == len(values) and not all(isinstance(v, int) for v in values):
            out.append(Param(name, "float", low=min(numeric), high=max(numeric)))
        else:
            out.append(Param(name, "categorical", choices=tuple(sorted(set(values), key=str))))
    return out


def _classes(record: SweepRecord | None, epochs: list[dict]) -> list[str]:
    classes = record.data.classes if record is not None else None
    if classes:
        return [str(c) for c in classes]
    keys: list[str] = []
    for row in epochs[:1]:
        keys = [k.removeprefix("val_recall_") for k in row if k.startswith("val_recall_")]
    return keys


def _manifest(record: SweepRecord | None, notes: list[str]) -> dict | None:
    uri = record.data.uri if record is not None else None
    if not uri:
        return None
    from fer_core.data.manifest import read_manifest

    try:
        return read_manifest(str(uri)).data
    except FerError as exc:
        notes.append(
            f"the data set's manifest is not readable from here ({exc}); class counts are "
            "from sweep.json and the quality summary is missing"
        )
        return None


def load_experiment(uri: str | Path, *, finished: bool = False) -> Experiment:
    """Read an experiment (finished: the tables; running: Tune's trial folders) from a folder or URI.

    ``finished=True`` (exporting, confirming): only a sweep that ended, i.e. one with ``sweep.json`` and
    ``trials.parquet``, is accepted; anything else is an error that names the missing file.
    """
    try:
        store = ExperimentStore(str(uri))
        return _load(store, finished)
    except StorageError as exc:
        raise ExperimentError(str(exc)) from None


def _load(store: ExperimentStore, finished: bool) -> Experiment:
    if not store.exists():
        is_file = store.local and Path(store.location.path).exists()
        raise ExperimentError(
            f"{store}: not a folder; pass the sweep's experiment folder"
            if is_file
            else f"{store}: no such experiment folder; pass <storage>/<name> of a sweep "
            "(sweeps/regularization.py writes it, e.g. runs/sweeps/regularization-<date>-<time>)"
        )
    notes: list[str] = []
    if finished:
        for name in ("sweep.json", TRIALS):
            if not store.has(name):
                raise ExperimentError(
                    f"{store}: not a finished sweep experiment: {store.file(name)} is missing "
                    "(sweeps/regularization.py writes sweep.json and trials.parquet when the sweep ends; "
                    "continue an interrupted one with "
                    "--resume --name <experiment>)"
                )
    record = store.read_record()
    if finished:
        trials, live = store.read_rows(TRIALS) or [], False
        epochs = store.read_rows(EPOCHS) or []
    elif store.tables_current():
        trials, epochs, live = store.read_rows(TRIALS) or [], store.read_rows(EPOCHS) or [], False
    else:
        from .live import read_tune_trials

        found = read_tune_trials(store, max_epochs=record.max_epochs if record is not None else None)
        if found is None:
            absent = [n for n in ("sweep.json", TRIALS, EPOCHS) if not store.has(n)]
            missing = " and ".join(absent) if absent else f"a {TRIALS} and {EPOCHS} as current as sweep.json"
            raise ExperimentError(
                f"{store}: not a sweep experiment folder: missing {missing} (written by "
                "sweeps/regularization.py when a sweep ends), and no Tune trial folders (*/result.json) "
                "to read a running sweep from"
            )
        trials, epochs = found
        live = True
        notes.append(
            "read from Tune's trial folders (the sweep is running or was interrupted): "
            "trials without a final result are shown as running"
        )
    if record is None:
        notes.append(
            "sweep.json is not written yet: the search space is inferred from the sampled values, "
            "and the data set and command are not known"
        )
    epochs.sort(key=lambda r: (str(r.get("trial_id")), r.get("epoch") or 0))
    if record is not None and record.space:
        space = SearchSpace.from_dict(record.space, source=f"{store} sweep.json")
        params, fixed, inferred = space.params, space.fixed, False
    else:
        params, fixed, inferred = _infer_params(trials), {}, True
    return Experiment(
        store=store,
        name=str((record.name if record is not None else None) or store.name),
        trials=trials,
        epochs=epochs,
        params=params,
        fixed=fixed,
        classes=_classes(record, epochs),
        record=record,
        manifest=None if finished else _manifest(record, notes),
        live=live,
        space_inferred=inferred,
        notes=notes,
    )
