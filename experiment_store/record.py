"""``sweep.json``: what a sweep was and what it found, as one typed, versioned record.

Written by the sweep when it ends (and again when a resume or an extension ends), read by the
review and release commands. Fields a reader relies on are typed and checked when the file is read;
a file from an older fer-sweep (no ``format`` field, the same shape) reads as version 1; one from a
newer fer-sweep (``format_version`` above ``FORMAT_VERSION``) is refused with the fix. Keys this
version does not know are kept (``extra``) and written back unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fer_core.errors import FerError

__all__ = ["SweepRecord", "DataRef", "FORMAT", "FORMAT_VERSION", "RecordError"]

FORMAT = "fer-sweep-experiment"
FORMAT_VERSION = 1


class RecordError(FerError):
    """A ``sweep.json`` that is not a sweep record this version can read."""


@dataclass
class DataRef:
    """The data set a sweep trained on."""

    uri: str
    version: str
    classes: list[str] = field(default_factory=list)
    train: int = 0
    val: int = 0


@dataclass
class SweepRecord:
    """One sweep experiment's record (``sweep.json``)."""

    name: str
    command: str
    data: DataRef
    space: dict  # the search space as sweeps.space writes it (params, fixed)
    base_config: dict  # trainer config under every trial: base < fixed < sampled
    max_epochs: int
    score_window: int = 3
    space_file: str | None = None
    settings: dict = field(default_factory=dict)  # the sweep's command-line settings
    objective: str = ""
    trials: int = 0
    outcomes: dict = field(default_factory=dict)  # outcome -> number of trials
    epochs_total: int = 0
    wall_s: float | None = None  # wall time of the first run that finished (resumes: ``resumes``)
    compute_s: float | None = None  # sum of the trials' times
    best: dict | None = None  # the best trial's row of trials.parquet
    resumes: list = field(default_factory=list)  # {command, wall_s, finished} per resume/extension
    experiment_dir: str | None = None
    user: str | None = None  # who launched it (login name on the driver)
    started: str | None = None  # ISO 8601 UTC
    finished: str | None = None
    optuna: dict | None = None  # {"storage": URL (secrets redacted), "study": name}
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["data"] = dataclasses.asdict(self.data)
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "sweep.json") -> SweepRecord:
        if not isinstance(raw, dict):
            raise RecordError(f"{where}: not a sweep record (a JSON {type(raw).__name__}, not an object)")
        fmt = raw.get("format", FORMAT)
        version = raw.get("format_version", 1)
        if fmt != FORMAT:
            raise RecordError(f"{where}: format {fmt!r} is not {FORMAT!r}; is this a sweep's sweep.json?")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise RecordError(
                f"{where}: written by a newer fer-sweep (format version {version!r}, this one reads "
                f"up to {FORMAT_VERSION}); upgrade fer-sweep"
            )
        for key, kind in (("name", str), ("data", dict), ("space", dict), ("base_config", dict), ("max_epochs", int)):
            if not isinstance(raw.get(key), kind) or isinstance(raw.get(key), bool):
                raise RecordError(
                    f"{where}: {key!r} is missing or not a {kind.__name__}; the file is damaged or "
                    "not written by sweeps/regularization.py"
                )
        data = raw["data"]
        if not isinstance(data.get("version"), str) or not isinstance(data.get("classes", []), list):
            raise RecordError(f"{where}: 'data' lacks the data set's version (or its classes are not a list)")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in raw.items() if k in known and k not in ("data", "extra")}
        values["data"] = DataRef(
            uri=str(data.get("uri", "")),
            version=data["version"],
            classes=[str(c) for c in data.get("classes", [])],
            train=int(data.get("train") or 0),
            val=int(data.get("val") or 0),
        )
        values.setdefault("command", "")
        values["format"], values["format_version"] = FORMAT, FORMAT_VERSION
        return cls(**values, extra={k: v for k, v in raw.items() if k not in known})
