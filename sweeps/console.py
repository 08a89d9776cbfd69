"""What a sweep prints while it runs: a few readable lines instead of Ray Tune's tables and result boxes.

- one line when a trial starts: its sampled values;
- one line when it ends: outcome, epochs, score, peak (and its epoch), final; or that it errored;
- a status line every ``every_s`` seconds and at the end: trials by state and outcome, the best score
  so far, epochs done of the budget, elapsed time and an upper bound of the time left (trials stopped
  early make the real time shorter).

``--verbose`` gives Ray Tune's own output back instead (``RunConfig(verbose=...)``).

    trial 3a1f_00002 started: model=fer_cnn_small l2=0.00031 loss=focal focal_gamma=1.7 lr=0.0012 batch_size=64
    trial 3a1f_00002 completed: 20 epochs, score 0.4450, peak 0.4612 at epoch 14, final 0.4391
    [02:41] 2 running, 0 pending, 5 ended (2 completed, 2 stopped by ASHA, 1 collapsed) | best 0.4450
            (3a1f_00002) | 84 of 240 epochs | about 5m left at most
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from ray import tune

from fer_core.numbers import duration, fmt
from sweeps.results import classify

__all__ = ["CompactReporter", "STATUS_EVERY_S"]

STATUS_EVERY_S = 30.0


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


class CompactReporter(tune.Callback):
    """Prints the sweep's progress as compact lines (see the module docstring)."""

    def __init__(
        self,
        *,
        samples: int | None,
        max_epochs: int,
        concurrency: int,
        params: list[str],
        every_s: float = STATUS_EVERY_S,
        out: IO[str] | None = None,
        clock=time.monotonic,
    ):
        self.samples, self.max_epochs, self.concurrency = samples, max_epochs, max(1, concurrency)
        self.params, self.every_s, self.out, self.clock = params, every_s, out, clock
        self.started = self.last_status = clock()
        self.epochs: dict[str, int] = {}  # trial id -> epochs reported (its latest attempt)
        self.best: tuple[float, str] | None = None
        self.done_at_start: int | None = None  # epochs done before this run (a resume), for the rate

    # -- output -------------------------------------------------------------------------------------
    def _say(self, line: str) -> None:
        print(line, file=self.out or sys.stdout, flush=True)

    # -- Tune's callback hooks --------------------------------------------------------------------------
    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if self.done_at_start is None:
            self.done_at_start = sum(int((getattr(t, "last_result", None) or {}).get("epoch") or 0) for t in trials)

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        config = trial.config or {}
        values = " ".join(f"{k}={_value(config[k])}" for k in self.params if k in config)
        self._say(f"trial {trial.trial_id} started: {values}")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        epoch = result.get("epoch")
        if isinstance(epoch, int):
            self.epochs[trial.trial_id] = epoch
        score = result.get("score")
        if isinstance(score, float) and score == score and (self.best is None or score > self.best[0]):
            self.best = (score, trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        last = dict(trial.last_result or {})
        outcome, reason = classify(last, errored=False, max_epochs=self.max_epochs)
        self._say(
            f"trial {trial.trial_id} {outcome}: {int(last.get('epoch') or 0)} epochs, score "
            f"{fmt(last.get('score'))}, peak {fmt(last.get('peak'))} at epoch {last.get('peak_epoch') or '-'}, "
            f"final {fmt(last.get('final'))}" + (f" ({reason})" if outcome != "completed" else "")
        )

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        where = getattr(trial, "local_path", None) or getattr(trial, "path", None) or ""
        self._say(
            f"trial {trial.trial_id} errored after {self.epochs.get(trial.trial_id, 0)} epochs"
            + (f" (error.txt in {where})" if where else "")
        )

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self._say(f"trial {trial.trial_id} failed; retrying it from its last checkpoint")

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if self.clock() - self.last_status >= self.every_s:
            self._say(self.status(trials))

    def on_experiment_end(self, trials: list, **info) -> None:
        self._say(self.status(trials))

    # -- the status line --------------------------------------------------------------------------------
    def status(self, trials: list) -> str:
        """The status line, from Tune's trials (a resumed sweep's earlier trials count too)."""
        self.last_status = now = self.clock()
        states = [getattr(t, "status", "") for t in trials]
        running, pending = states.count("RUNNING"), states.count("PENDING")
        counts: dict[str, int] = {}
        done = 0
        for t in trials:
            last = dict(getattr(t, "last_result", None) or {})
            done += int(last.get("epoch") or 0)
            score = last.get("score")
            if isinstance(score, float) and score == score and (self.best is None or score > self.best[0]):
                self.best = (score, t.trial_id)
            if t.status == "ERROR":
                outcome = "errored"
            elif t.status == "TERMINATED":
                outcome = classify(last, errored=False, max_epochs=self.max_epochs)[0]
            else:
                continue
            counts[outcome] = counts.get(outcome, 0) + 1
        ended = sum(counts.values())
        elapsed = now - self.started
        best = f"best {fmt(self.best[0])} ({self.best[1]})" if self.best else "no score yet"
        by_outcome = ", ".join(f"{n} {o}" for o, n in counts.items())
        if self.samples is None:  # the time budget decides how many trials run: no total to count down
            return (
                f"[{duration(elapsed)}] {running} running, {pending} pending, {ended} ended"
                f"{f' ({by_outcome})' if by_outcome else ''} | {best} | {done} epochs"
            )
        total = max(self.samples, len(trials))
        budget = total * self.max_epochs
        line = (
            f"[{duration(elapsed)}] {running} running, {pending} pending, {ended} of {total} ended"
            f"{f' ({by_outcome})' if by_outcome else ''} | {best} | {done} of {budget} epochs"
        )
        run_here = done - (self.done_at_start or 0)
        if run_here > 0 and ended < total:
            line += f" | {duration(elapsed / run_here * (budget - done))} left at most"
        return line
