"""Stop a trial once its validation metric has collapsed from its peak.

FER models overfit and then *collapse*: validation accuracy peaks, then falls in late epochs.
`CollapseStopper` is the Ray Tune stopper; `collapse_check` applies the same rule to a plain
sequence (the plain-Optuna benchmark path, the dashboard) and `collapse_state` returns the state
that says where and why (the trainable's ``collapse_reason``). All run every value through
`CollapseState.update`, so they cannot disagree, and the reason is `CollapseState`'s.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

from ray.tune.stopper import Stopper

from fer_core.validate import check_int, check_number

__all__ = ["CollapseState", "CollapseStopper", "ReportedCollapseStopper", "collapse_check", "collapse_state"]

# Gaps within this (relative) distance of the margin count as equal to it, so that decimal inputs
# behave as written: peak 0.60, window mean 0.58, margin 0.02 does not stop.
_REL_TOL = 1e-9


def _validate(*, mode: str, grace_period: int, window: int, margin: float, patience: int, relative: bool) -> None:
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    for name, value in (("window", window), ("grace_period", grace_period), ("patience", patience)):
        check_int(value, name, kind=int)
    check_int(window, "window", low=1)
    if grace_period < window:
        raise ValueError(f"grace_period must be >= window ({window!r}), got {grace_period!r}")
    check_number(margin, "margin", low=0, finite=False, kind=(int, float), rule="a number >= 0")
    check_int(patience, "patience", low=0)
    if not isinstance(relative, bool):
        raise ValueError(f"relative must be True or False, got {relative!r}")


def _as_float(value: Any, metric: str) -> float:
    """None -> NaN; numbers (python, numpy, 0-d tensors) -> float; anything else is an error."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric {metric!r} must be a number, got {value!r}") from None


def _plain(value: Any) -> Any:
    """numpy / torch scalars -> python scalars, so summaries are picklable and JSON-friendly."""
    return value.item() if hasattr(value, "item") else value


class CollapseState:
    """One trial's collapse bookkeeping. ``update(value)`` applies the rule to the next value.

    See `CollapseStopper` for the rule and the arguments. ``metric`` and ``time_label`` only name
    things in the ``reason`` string. Once ``update`` has returned True the state is frozen: later
    values change nothing and ``update`` keeps returning True.
    """

    def __init__(
        self,
        *,
        mode: str = "max",
        grace_period: int = 5,
        window: int = 3,
        margin: float = 0.02,
        patience: int = 0,
        relative: bool = False,
        metric: str = "value",
        time_label: str = "result",
    ):
        _validate(
            mode=mode, grace_period=grace_period, window=window, margin=margin, patience=patience, relative=relative
        )
        self.mode, self.grace_period, self.window = mode, grace_period, window
        self.margin, self.patience, self.relative = float(margin), patience, relative
        self.metric, self.time_label = metric, time_label
        self._sign = 1.0 if mode == "max" else -1.0
        self._recent: deque = deque(maxlen=window)  # signed values, NaN for non-finite ones
        self.num_results = 0
        self.peak: float | None = None  # best finite value so far (max or min by mode)
        self.peak_time: Any = None
        self.final: float | None = None  # the last value, as reported (NaN for None)
        self.smoothed: float = math.nan  # mean of the last `window` values
        # The reference a fall is measured from: the best mean of `window` values in a row so far
        # (the peak itself with window 1), and the time of that window's last value.
        self.smoothed_peak: float | None = None
        self.smoothed_peak_time: Any = None
        self.gap: float = math.nan  # how much worse `smoothed` is than `smoothed_peak`
        self.streak = 0  # consecutive collapsed results since the grace period
        self._smoothed_peak_index = 0  # 1-based result number of the best window's last value
        self._at_peak = False  # the latest value equals the (single-value) peak
        self.stopped = False
        self.stop_time: Any = None
        self.reason: str | None = None

    def update(self, value: Any, time: Any = None) -> bool:
        """Feed the next value (``time`` defaults to its 1-based index); True means stop."""
        if self.stopped:
            # A stopped trial stays stopped; a late result changes nothing.
            return True
        v = _as_float(value, self.metric)
        self.num_results += 1
        time = self.num_results if time is None else _plain(time)
        self.final = v
        signed = self._sign * v if math.isfinite(v) else math.nan
        self._recent.append(signed)
        if not math.isnan(signed) and (self.peak is None or signed > self._sign * self.peak):
            self.peak, self.peak_time = v, time  # ties keep the first time the peak was reached
        # A finite value has just set the peak if there was none, so the peak is not None here.
        self._at_peak = not math.isnan(signed) and self.peak is not None and signed == self._sign * self.peak
        mean_signed = math.fsum(self._recent) / len(self._recent)  # NaN if any value is NaN
        self.smoothed = self._sign * mean_signed
        full = len(self._recent) == self.window
        best = self.smoothed_peak
        if full and not math.isnan(mean_signed) and (best is None or mean_signed > self._sign * best):
            # ties keep the first such window
            self.smoothed_peak, self.smoothed_peak_time = self.smoothed, time
            self._smoothed_peak_index = self.num_results
        best = self.smoothed_peak
        self.gap = (self._sign * best - mean_signed) if best is not None else math.nan

        # Still in the grace period: never stop, and patience has not started counting.
        if self.num_results < self.grace_period:
            return False
        # Not collapsed (or recovered): patience starts over.
        if not self._collapsed():
            self.streak = 0
            return False
        self.streak += 1
        # Collapsed, but not yet for patience + 1 results in a row.
        if self.streak <= self.patience:
            return False
        self.stopped, self.stop_time, self.reason = True, time, self._reason()
        return True

    def _threshold(self, peak: float) -> float:
        return self.margin * abs(peak) if self.relative else self.margin

    def _collapsed(self) -> bool:
        if math.isnan(self.gap):  # a non-finite value in the window is the worst possible value
            return True
        best = self.smoothed_peak
        assert best is not None  # the gap is NaN until a full, finite window has set it
        # The best window overlaps the latest one, or the latest value is back at the peak: not falling.
        if self._smoothed_peak_index > self.num_results - self.window or self._at_peak:
            return False
        threshold = self._threshold(best)
        return self.gap > threshold + _REL_TOL * max(1.0, abs(best))

    def _reference(self) -> str:
        """What the fall is measured from, in words: the peak itself (window 1) or the best window mean."""
        if self.window == 1:
            return "the peak" if self.mode == "max" else "the minimum"
        return f"the {'best' if self.mode == 'max' else 'lowest'} mean of {self.window} in a row"

    def _reason(self) -> str:
        side, best = ("below", "the peak") if self.mode == "max" else ("above", "the minimum")
        last = f"mean of last {self.window} {self.metric}"
        if self.peak is None:
            text = f"collapsed: {last} is not finite and no finite value was ever reported"
        elif math.isnan(self.gap):
            text = (
                f"collapsed: {last} is not finite (a NaN/inf value in the window); "
                f"{best} was {self.peak:.4g} at {self.time_label} {self.peak_time}"
            )
        else:
            ref = self.smoothed_peak
            assert ref is not None  # a finite gap was measured from it
            share = f" ({self.gap / abs(ref):.1%} of {self._reference()})" if self.relative and ref else ""
            ending = "at" if self.window == 1 else "ending at"
            text = (
                f"collapsed: {last} {self.smoothed:.4g} is {self.gap:.4g}{share} {side} "
                f"{self._reference()} {ref:.4g} {ending} {self.time_label} {self.smoothed_peak_time}"
            )
        if self.patience:
            text += f", {self.streak} results in a row (patience {self.patience})"
        return text

    def epoch_reason(self) -> str | None:
        """The reason as a trial records it in its own results (``collapse_reason``; None until stopped),
        times as 1-based epochs: ``collapsed at epoch 6: mean of last 2 val_acc 0.540 is 0.055 below
        the best mean of 2 in a row 0.595 ending at epoch 3 (peak 0.600 at epoch 2)``."""
        if not self.stopped:
            return None
        side = "below" if self.mode == "max" else "above"
        peak = math.nan if self.peak is None else self.peak
        ref = math.nan if self.smoothed_peak is None else self.smoothed_peak
        text = f"collapsed at epoch {self.stop_time}: mean of last {self.window} {self.metric} {self.smoothed:.3f} "
        if self.window == 1 or math.isnan(self.gap):
            best = "the peak" if self.mode == "max" else "the minimum"
            return text + f"is {self.gap:.3f} {side} {best} {peak:.3f} at epoch {self.peak_time or 0}"
        peak_word = "peak" if self.mode == "max" else "minimum"
        return text + (
            f"is {self.gap:.3f} {side} {self._reference()} {ref:.3f} ending at epoch {self.smoothed_peak_time or 0} "
            f"({peak_word} {peak:.3f} at epoch {self.peak_time or 0})"
        )

    def summary(self) -> dict[str, Any]:
        """Plain-python record of this trial (see `CollapseStopper.summary`)."""
        return {
            "peak": self.peak,
            "peak_epoch": self.peak_time,
            "final": self.final,
            "smoothed": self.smoothed,
            "smoothed_peak": self.smoothed_peak,
            "smoothed_peak_epoch": self.smoothed_peak_time,
            "gap": self.gap,
            "num_results": self.num_results,
            "stopped": self.stopped,
            "stop_epoch": self.stop_time,
            "reason": self.reason,
        }


class CollapseStopper(Stopper):
    """Stop a trial once the recent mean of its metric has fallen clearly below its peak.

    The rule, per trial: from its ``grace_period``-th result on, the smoothed recent value is the
    mean of its last ``window`` values of ``metric``, and the reference it is measured from is the
    best such mean so far: the best mean of ``window`` results in a row (highest in "max" mode,
    lowest in "min" mode; with ``window=1``, the peak itself). The trial has *collapsed* when that
    best window ended before the last ``window`` results began, the latest value is not back at the
    single-value peak, and the smoothed value is worse than the reference by more than ``margin``
    (metric units; with ``relative=True`` a fraction of the reference's magnitude). The trial
    stops at the first result that completes ``patience + 1`` collapsed results in a row; a result
    that is not collapsed resets the count. So the earliest possible stop is result
    ``grace_period + patience``.

    Why windows on both sides: a fall is a sustained drop, and a one-epoch spike is not a level the
    curve ever held. On real FER2013 curves (README, "On real data") a one-result peak stopped a run
    at epoch 47 that passed that peak from epoch 57 on; measured from the best 3-epoch mean it
    runs on, while the unregularized probe that does fall is still stopped.

    Example:

        >>> stopper = CollapseStopper("val_acc", grace_period=3, window=2, margin=0.02)
        >>> curve = [0.50, 0.58, 0.60, 0.60, 0.59, 0.55, 0.52]
        >>> [stopper("t1", {"val_acc": a, "training_iteration": i})
        ...  for i, a in enumerate(curve, 1)]
        [False, False, False, False, False, True, True]
        >>> print(stopper.summary("t1")["reason"])  # doctest: +NORMALIZE_WHITESPACE
        collapsed: mean of last 2 val_acc 0.57 is 0.03 below the best mean of 2 in a row 0.6
        ending at training_iteration 4
        >>> collapse_check(curve, grace_period=3, window=2, margin=0.02)
        6

    In a sweep: ``tune.RunConfig(stop=CombinedStopper(CollapseStopper(...),
    MaximumIterationStopper(max_iter=50)))``; put this stopper first, because `CombinedStopper`
    stops asking at the first stopper that says True, and then write `stopped_trials()` to the
    trials table. Ray calls stoppers in the driver, so nothing here reaches the trial's results
    by itself.

    Args:
        metric: Result key to watch, e.g. "val_acc" or "val_loss". Every result must contain it
            (a misconfigured metric raises instead of silently never stopping).
        mode: "max" if higher is better (accuracy), "min" if lower is better (loss).
        grace_period: Number of results a trial reports before it can be stopped (>= window,
            so the window is full at the first check). Counted in results, not in ``time_attr``.
        window: Number of most recent results averaged into the smoothed value (>= 1).
        margin: How much worse than the best window mean the smoothed value must be to count as
            collapsed, strictly: in metric units (0.02 = 2 accuracy points), or with ``relative=True``
            as a fraction of that mean's magnitude (0.05 = 5% of it). A gap equal to the margin (to
            within 1e-9 relative) is not a collapse.
        patience: Number of further consecutive collapsed results tolerated before stopping
            (0: stop at the first collapsed result).
        relative: Read ``margin`` as a fraction of the best window mean instead of metric units.
        time_attr: Result key recorded as the epoch of the peak and of the stop
            ("training_iteration", added by Tune; or e.g. "epoch"). If a result lacks it, the
            trial's 1-based result count is used.

    Notes:
        - NaN, +-inf and None values count as the worst possible value: they never become the
          peak, and while one is among the last ``window`` values the smoothed value is NaN and
          the result counts as collapsed. A diverged trial therefore stops once past the grace
          period (with ``patience < window``); a NaN inside the grace period that has left the
          window by then is forgiven.
        - Only a fall counts: while the best window overlaps the last ``window`` values, or the
          latest value is back at the peak, the trial is not collapsed, however far the window mean
          lags a steeply rising curve. So the earliest stop comes ``window`` results after the best
          window ended.
        - Early stopping favours configurations that peak early: keep ``grace_period`` past the
          slow starters' warm-up and record the reasons (`stopped_trials`).
        - The state (one `CollapseState` per trial, with a bounded deque) is plain picklable data.
    """

    def __init__(
        self,
        metric: str = "val_acc",
        *,
        mode: str = "max",
        grace_period: int = 5,
        window: int = 3,
        margin: float = 0.02,
        patience: int = 0,
        relative: bool = False,
        time_attr: str = "training_iteration",
    ):
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"metric must be a non-empty string, got {metric!r}")
        if not isinstance(time_attr, str) or not time_attr:
            raise ValueError(f"time_attr must be a non-empty string, got {time_attr!r}")
        self._rule: dict[str, Any] = dict(
            mode=mode, grace_period=grace_period, window=window, margin=margin, patience=patience, relative=relative
        )
        _validate(**self._rule)
        self._metric, self._time_attr = metric, time_attr
        self._trials: dict[str, CollapseState] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if self._metric not in result:
            raise ValueError(
                f"CollapseStopper: metric {self._metric!r} is not in the result of trial "
                f"{trial_id!r}; the result has keys {sorted(map(str, result))}"
            )
        state = self._trials.get(trial_id)
        if state is None:
            state = self._trials[trial_id] = CollapseState(
                **self._rule, metric=self._metric, time_label=self._time_attr
            )
        return state.update(result[self._metric], result.get(self._time_attr))

    def stop_all(self) -> bool:
        return False

    def summary(self, trial_id: str) -> dict[str, Any]:
        """The trial's record: metric, mode, peak, peak_epoch, final (last value), smoothed
        (mean of the last ``window`` values; at the stop once stopped), gap (how much worse
        smoothed is than the peak), num_results, stopped, stop_epoch and reason (None until
        stopped). Epochs are ``time_attr`` values."""
        if trial_id not in self._trials:
            raise KeyError(f"no results seen for trial {trial_id!r} ({len(self._trials)} trials seen)")
        return {"metric": self._metric, "mode": self._rule["mode"], **self._trials[trial_id].summary()}

    def stopped_trials(self) -> dict[str, dict[str, Any]]:
        """``{trial_id: summary}`` for every trial this stopper stopped, in first-seen order."""
        return {tid: self.summary(tid) for tid, state in self._trials.items() if state.stopped}


def collapse_check(
    values: Sequence[Any],
    *,
    mode: str = "max",
    grace_period: int = 5,
    window: int = 3,
    margin: float = 0.02,
    patience: int = 0,
    relative: bool = False,
) -> int | None:
    """The 1-based index at which `CollapseStopper`'s rule stops ``values``, or None if never.

    Same arguments and the same code path (`CollapseState.update`) as the stopper.

        >>> collapse_check([0.5, 0.6, 0.6, 0.5, 0.4], grace_period=3, window=2, margin=0.05)
        5
    """
    state = collapse_state(
        values, mode=mode, grace_period=grace_period, window=window, margin=margin, patience=patience, relative=relative
    )
    return state.stop_time if state.stopped else None


def collapse_state(values: Sequence[Any], *, metric: str = "value", **rule) -> CollapseState:
    """The `CollapseState` after feeding it ``values`` (1-based times) up to the first stop, if any:
    where and why the rule stopped them (``stop_time``, ``reason``, ``epoch_reason()``), or that it did not."""
    state = CollapseState(**rule, metric=metric)
    for value in values:
        if state.update(value):
            break
    return state


class ReportedCollapseStopper(Stopper):
    """Stop a trial as soon as its own result says it has collapsed (``result["collapsed"]``).

    The trainable applies the collapse rule (``collapse_state``, the same rule as `CollapseStopper`)
    to the trial's whole validation history, which it restores from the trial's checkpoint on a
    retry or a resume. This stopper keeps no state of its own, so a resumed sweep stops every trial
    at exactly the epoch an uninterrupted sweep would - unlike a stateful stopper, which Tune
    restores as it was pickled when the experiment started (empty).
    """

    def __init__(self, key: str = "collapsed"):
        self.key = key

    def __call__(self, trial_id: str, result: dict) -> bool:
        return bool(result.get(self.key))

    def stop_all(self) -> bool:
        return False
