"""Search spaces as YAML: parsed, validated against the trainer's config, turned into an Optuna define-by-run space.

    # sweeps/spaces/regularization.yaml
    fixed:                      # every trial's config (trainer keys)
      lr_schedule: cosine
    params:                     # searched, in this order
      l2: {type: float, low: 1.0e-6, high: 1.0e-2, log: true}
      loss: {type: categorical, choices: [ce, focal]}
      focal_gamma: {type: float, low: 0.5, high: 4.0, when: {loss: focal}}   # conditional
    start:                      # optional: trials evaluated first (Ray Tune's points_to_evaluate)
      - {l2: 1.0e-6, loss: ce}  # e.g. the recipe a team runs today; a missing parameter is sampled

    >>> space = load_space("sweeps/spaces/regularization.yaml")
    >>> space.sample(optuna_trial)          # {"l2": 3e-4, "loss": "focal", "focal_gamma": 1.7, ...}

Every key must be a trainer config key (``fer train --keys``); every bound and choice is checked by
building a real ``TrainConfig`` with it, so a bad space fails before any trial starts, naming the
key. ``when`` makes a parameter exist only when earlier parameters have the given values (Optuna's
define-by-run: TPE then models it only where it exists). ``start`` lists configurations the sweep
tries first, before the sampler draws (Optuna's ``enqueue_trial``): the known-good recipe, so a
sweep is measured against it; each value is checked against its parameter's range or choices.

A space as ``sweep.json`` records it (``SearchSpace.to_dict``) reads back with ``SearchSpace.from_dict``
(no validation: it was valid when the sweep wrote it). ``trial_config`` is the one rule for a trial's
trainer config: the sweep's base config < the space's fixed keys < the trial's sampled values.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fer_core.errors import FerError
from fer_core.validate import ARG_SEMI, check_number
from fer_core.yamlio import read_yaml

if TYPE_CHECKING:
    from fer_core.train.config import TrainConfig

# fer_core.train (torch) is imported where a config is built or checked: reading a recorded space
# (the dashboard) does not need it.

__all__ = ["Param", "SearchSpace", "SpaceError", "load_space", "parse_space", "trial_config"]

TYPES = ("float", "int", "categorical")


class SpaceError(FerError, ValueError):
    """A search space that cannot be used; the message names the file and key."""


def _when_pairs(when: dict) -> tuple[tuple[str, tuple], ...]:
    """``{key: value or [values]}`` (the YAML and ``sweep.json`` form) as ``((key, allowed values), ...)``."""
    return tuple((k, tuple(v) if isinstance(v, (list, tuple)) else (v,)) for k, v in when.items())


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter. ``when``: ``((key, allowed values), ...)``; a mapping
    ``{key: value or [values]}`` (the YAML and ``sweep.json`` form) is turned into that."""

    name: str
    type: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    when: tuple[tuple[str, tuple], ...] = ()

    def __post_init__(self):
        if isinstance(self.when, dict):
            object.__setattr__(self, "when", _when_pairs(self.when))

    @property
    def numeric(self) -> bool:
        return self.type in ("float", "int")

    def active(self, values: dict) -> bool:
        """Whether the parameter exists given the values sampled before it (its ``when`` holds)."""
        return all(values.get(k) in allowed for k, allowed in self.when)

    def suggest(self, trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            assert self.low is not None and self.high is not None  # a numeric parameter has its range
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(self.name, list(self.choices))

    def _range(self, log: str) -> str:
        if self.type == "categorical":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        return f"[{self.low:g}, {self.high:g}]" + (log if self.log else "")

    @property
    def condition(self) -> str:
        """``loss in ['focal']``: when the parameter exists ("" when always)."""
        return " and ".join(f"{k} in {list(v)}" for k, v in self.when)

    def describe(self) -> str:
        """One line of the sweep's log: ``focal_gamma: float [0.5, 4] if loss in ['focal']``."""
        cond = " if " + self.condition if self.when else ""
        return f"{self.name}: {self.type} {self._range(' log')}{cond}"

    def range_text(self) -> str:
        """The range as the review page shows it: ``[0.0001, 0.01], log scale - only when loss in ['focal']``."""
        cond = " - only when " + self.condition if self.when else ""
        return f"{self._range(', log scale')}{cond}"


@dataclass
class SearchSpace:
    params: list[Param]
    fixed: dict = field(default_factory=dict)
    source: str = "space"
    start: list[dict] = field(default_factory=list)  # trials evaluated first (points_to_evaluate)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def sample(self, trial) -> dict:
        """Optuna define-by-run: suggest each active parameter in order; returns the sampled values."""
        values: dict[str, Any] = {}
        for p in self.params:
            if p.active(values):
                values[p.name] = p.suggest(trial)
        return values

    def define_by_run(self, trial) -> None:
        """``sample`` for Ray's OptunaSearch, which takes the suggested parameters as the config."""
        self.sample(trial)

    def config(self, values: dict, base: dict | None = None) -> TrainConfig:
        """The trial's trainer config: ``base`` < ``fixed`` < sampled ``values`` (``trial_config``)."""
        return trial_config(base, self.fixed, values, where=f"{self.source} (trial config)")

    def describe(self) -> list[str]:
        lines = [p.describe() for p in self.params] + [f"{k} = {v!r} (fixed)" for k, v in self.fixed.items()]
        return lines + ["first trial: " + ", ".join(f"{k}={v!r}" for k, v in point.items()) for point in self.start]

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"fixed": dict(self.fixed), "params": {}}
        for p in self.params:
            d: dict[str, Any] = {"type": p.type}
            if p.type == "categorical":
                d["choices"] = list(p.choices)
            else:
                d.update(low=p.low, high=p.high, log=p.log)
                if p.step is not None:
                    d["step"] = p.step
            if p.when:
                d["when"] = {k: list(v) for k, v in p.when}
            out["params"][p.name] = d
        if self.start:
            out["start"] = [dict(point) for point in self.start]
        return out

    @classmethod
    def from_dict(cls, raw: dict, source: str = "space") -> SearchSpace:
        """The space ``to_dict`` wrote (``sweep.json``'s ``space``), read back without validation."""
        params = [
            Param(
                name=str(name),
                type=spec.get("type", "float"),
                low=spec.get("low"),
                high=spec.get("high"),
                log=bool(spec.get("log", False)),
                step=spec.get("step"),
                choices=tuple(spec.get("choices") or ()),
                when=_when_pairs(dict(spec.get("when") or {})),
            )
            for name, spec in (raw.get("params") or {}).items()
        ]
        start = [dict(point) for point in raw.get("start") or ()]
        return cls(params=params, fixed=dict(raw.get("fixed") or {}), source=source, start=start)


def trial_config(base: dict | None, fixed: dict | None, sampled: dict, *, where: str) -> TrainConfig:
    """A trial's trainer config, validated: the sweep's ``base`` config < the space's ``fixed`` keys < the
    trial's ``sampled`` values (raises ``ConfigError`` naming ``where``)."""
    from fer_core.train.config import resolve_config

    return resolve_config({**(base or {}), **(fixed or {}), **sampled}, where=where)


def _num(where: str, key: str, value) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > sys.float_info.max:
        digits = math.floor(value.bit_length() * math.log10(2)) + 1  # check_number's float() would overflow
        raise SpaceError(f"{where}: {key} must be a finite number; got an integer of about {digits} digits")
    check_number(value, key, kind=(int, float), error=SpaceError, template=ARG_SEMI, prefix=f"{where}: ")
    return value


def _check_value(where: str, name: str, value, fixed: dict) -> None:
    from fer_core.train.config import ConfigError, resolve_config

    try:
        resolve_config({**fixed, name: value}, where=where)
    except ConfigError as exc:
        raise SpaceError(f"{where}: value {value!r} is not valid for the trainer: {exc}") from None


def _check_sampled(where: str, name: str, low, high, step, fixed: dict) -> None:
    """A float parameter's values between its bounds are ones the trainer takes: one of them is tried."""
    from fer_core.train.config import ConfigError, resolve_config

    probe = float(low) + float(step) if step is not None else float(low) + (float(high) - float(low)) * 0.5
    if step is None and probe.is_integer():
        probe += min(0.5, (float(high) - float(low)) / 4)
    if probe > float(high):
        return
    try:
        resolve_config({**fixed, name: probe}, where=where)
    except ConfigError as exc:
        raise SpaceError(
            f"{where}: type float samples values such as {probe:g} that the trainer refuses ({exc}); "
            "use type: int for a whole-number key"
        ) from None


def parse_space(raw: Any, source: str = "space") -> SearchSpace:
    """Validate a parsed YAML space (see the module docstring); raises ``SpaceError`` naming the key."""
    from fer_core.train.config import ConfigError, TrainConfig, resolve_config

    if not isinstance(raw, dict):
        raise SpaceError(f"{source}: must be a mapping with 'params' (and optionally 'fixed')")
    unknown = set(raw) - {"params", "fixed", "description", "start"}
    if unknown:
        raise SpaceError(
            f"{source}: unknown top-level key(s) {sorted(unknown)}; expected params, fixed, start, description"
        )
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise SpaceError(f"{source}: 'fixed' must be a mapping of trainer config keys")
    valid = set(TrainConfig.keys())
    for key in fixed:
        if key not in valid:
            raise SpaceError(
                f"{source}: fixed.{key} is not a trainer config key; valid keys: {', '.join(sorted(valid))}"
            )
    try:
        resolve_config(dict(fixed), where=f"{source}: fixed")
    except ConfigError as exc:
        raise SpaceError(str(exc)) from None
    params_raw = raw.get("params")
    if not isinstance(params_raw, dict) or not params_raw:
        raise SpaceError(f"{source}: 'params' must map at least one trainer config key to its range")
    params: list[Param] = []
    seen: dict[str, Param] = {}
    for name, spec in params_raw.items():
        where = f"{source}: params.{name}"
        if name not in valid:
            raise SpaceError(f"{where}: not a trainer config key; valid keys: {', '.join(sorted(valid))}")
        if name in fixed:
            raise SpaceError(f"{where}: also set in 'fixed'; a key is either searched or fixed")
        if not isinstance(spec, dict):
            raise SpaceError(f"{where}: must be a mapping like {{type: float, low: 0.0, high: 0.5}}")
        extra = set(spec) - {"type", "low", "high", "log", "step", "choices", "when"}
        if extra:
            raise SpaceError(
                f"{where}: unknown field(s) {sorted(extra)}; fields: type, low, high, log, step, choices, when"
            )
        kind = spec.get("type")
        if kind not in TYPES:
            raise SpaceError(f"{where}: type must be one of {', '.join(TYPES)}; got {kind!r}")
        when = _parse_when(where, spec.get("when"), seen)
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise SpaceError(f"{where}: categorical needs a non-empty list 'choices'")
            if len(set(map(repr, choices))) != len(choices):
                raise SpaceError(f"{where}: choices repeat a value: {choices!r}")
            for c in choices:
                if not isinstance(c, (str, int, float, bool)) and c is not None:
                    raise SpaceError(f"{where}: choices must be plain values (str, number, bool, null); got {c!r}")
                _check_value(where, name, c, fixed)
            param = Param(name, kind, choices=tuple(choices), when=when)
        else:
            if "choices" in spec:
                raise SpaceError(f"{where}: 'choices' is for categorical parameters")
            low, high = _num(where, "low", spec.get("low")), _num(where, "high", spec.get("high"))
            log = spec.get("log", False)
            if not isinstance(log, bool):
                raise SpaceError(f"{where}: log must be true or false; got {log!r}")
            if not low < high:
                raise SpaceError(f"{where}: needs low < high; got low={low!r}, high={high!r}")
            if log and low <= 0:
                raise SpaceError(f"{where}: a log scale needs low > 0; got low={low!r}")
            step = spec.get("step")
            if step is not None:
                step = _num(where, "step", step)
                if step <= 0 or log:
                    raise SpaceError(f"{where}: step must be > 0 and cannot go with log")
                if kind == "int" and not float(step).is_integer():
                    raise SpaceError(f"{where}: an int parameter's step must be an integer; got step={step!r}")
            if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
                raise SpaceError(f"{where}: int bounds must be integers; got low={low!r}, high={high!r}")
            for bound in (low, high):  # each bound must be a value the trainer takes (a range, a size limit)
                _check_value(where, name, int(bound) if kind == "int" else float(bound), fixed)
            if kind == "float":  # and so must what it samples in between (a whole-number key refuses 16.5)
                _check_sampled(where, name, low, high, step, fixed)
            param = Param(name, kind, low=low, high=high, log=log, step=step, when=when)
        params.append(param)
        seen[name] = param
    space = SearchSpace(params=params, fixed=dict(fixed), source=source)
    space.start = _parse_start(source, raw.get("start"), space)
    return space


def _parse_start(source: str, raw, space: SearchSpace) -> list[dict]:
    """``start``: a list of {parameter: value}; each value in its parameter's range or choices, each
    parameter present only where its ``when`` holds, and the whole point a valid trainer config."""
    from fer_core.train.config import ConfigError

    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(point, dict) and point for point in raw):
        raise SpaceError(f"{source}: 'start' must be a list of {{parameter: value}} mappings (trials run first)")
    by_name = {p.name: p for p in space.params}
    points = []
    for i, point in enumerate(raw):
        where = f"{source}: start[{i}]"
        for key, value in point.items():
            p = by_name.get(key)
            if p is None:
                raise SpaceError(f"{where}.{key}: not a searched parameter; searched: {', '.join(space.names)}")
            if p.type == "categorical":
                if value not in p.choices:
                    raise SpaceError(f"{where}.{key}: {value!r} is not among its choices {list(p.choices)}")
            else:
                num = _num(where, key, value)
                if p.type == "int" and not float(num).is_integer():
                    raise SpaceError(f"{where}.{key}: an int parameter; got {value!r}")
                assert p.low is not None and p.high is not None  # a numeric parameter has its range
                if not p.low <= num <= p.high:
                    raise SpaceError(f"{where}.{key}: {value!r} is outside its range [{p.low:g}, {p.high:g}]")
                point = {**point, key: int(num) if p.type == "int" else float(num)}
            if p.when and not all(point.get(k, None) in allowed for k, allowed in p.when):
                raise SpaceError(f"{where}.{key}: set, but it exists only when {p.condition}")
        try:
            space.config({k: v for k, v in point.items()})
        except ConfigError as exc:
            raise SpaceError(f"{where}: not a valid trainer config: {exc}") from None
        points.append(dict(point))
    return points


def _parse_when(where: str, when, seen: dict[str, Param]) -> tuple:
    if when is None:
        return ()
    if not isinstance(when, dict) or not when:
        raise SpaceError(f"{where}: 'when' must map an earlier categorical parameter to its value(s)")
    out = []
    for key, allowed in when.items():
        if key not in seen:
            raise SpaceError(f"{where}: 'when' refers to {key!r}, which is not a parameter listed before it")
        if seen[key].type != "categorical":
            raise SpaceError(f"{where}: 'when' can only test categorical parameters; {key!r} is {seen[key].type}")
        allowed = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        bad = [a for a in allowed if a not in seen[key].choices]
        if bad:
            raise SpaceError(
                f"{where}: 'when' {key} value(s) {bad!r} are not among its choices {list(seen[key].choices)}"
            )
        out.append((key, allowed))
    return tuple(out)


def load_space(path: str | Path) -> SearchSpace:
    return parse_space(read_yaml(path, "search space", SpaceError), source=str(path))
