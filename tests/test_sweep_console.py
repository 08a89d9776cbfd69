"""The sweep's compact terminal lines (``sweeps.console.CompactReporter``), driven by hand."""

from __future__ import annotations

import io
from types import SimpleNamespace

from sweeps.console import CompactReporter


def _trial(trial_id: str, status: str, last: dict | None = None, config: dict | None = None):
    return SimpleNamespace(trial_id=trial_id, status=status, last_result=last or {}, config=config or {})


def test_start_end_and_status_lines():
    now = [0.0]
    out = io.StringIO()
    rep = CompactReporter(
        samples=3,
        max_epochs=10,
        concurrency=2,
        params=["lr", "loss", "focal_gamma"],
        every_s=30,
        out=out,
        clock=lambda: now[0],
    )
    a = _trial("a", "RUNNING", config={"lr": 0.00123456, "loss": "ce", "model": "x"})
    b = _trial("b", "PENDING")
    rep.on_step_begin(0, [a, b])
    rep.on_trial_start(0, [a, b], a)
    for e in (1, 2):
        a.last_result = {
            "epoch": e,
            "score": 0.3 + e / 100,
            "peak": 0.32,
            "peak_epoch": 2,
            "final": 0.32,
            "trial_status": "running",
        }
        rep.on_trial_result(0, [a, b], a, a.last_result)
    now[0] = 10.0
    rep.on_step_end(0, [a, b])  # before every_s: no status line
    a.status = "TERMINATED"
    rep.on_trial_complete(0, [a, b], a)
    now[0] = 40.0
    rep.on_step_end(0, [a, b])
    lines = out.getvalue().splitlines()
    assert lines[0] == "trial a started: lr=0.00123 loss=ce"
    assert lines[1].startswith("trial a stopped by ASHA: 2 epochs, score 0.3200, peak 0.3200 at epoch 2, final 0.3200")
    assert lines[2] == (
        "[40.0 s] 0 running, 1 pending, 1 of 3 ended (1 stopped by ASHA) | best 0.3200 (a) | "
        "2 of 30 epochs | 9 min 20 s left at most"
    )  # 40 s for 2 epochs, 28 to go
    assert len(lines) == 3


def test_a_resumed_sweep_counts_its_earlier_trials_and_rates_only_this_run():
    out = io.StringIO()
    now = [0.0]
    rep = CompactReporter(samples=2, max_epochs=4, concurrency=1, params=[], out=out, clock=lambda: now[0])
    done = _trial("a", "TERMINATED", {"epoch": 4, "score": 0.5, "trial_status": "completed"})
    err = _trial("b", "ERROR", {"epoch": 1})
    rep.on_step_begin(0, [done, err])
    now[0] = 5.0
    rep.on_experiment_end([done, err])
    assert out.getvalue().strip() == (
        "[5.0 s] 0 running, 0 pending, 2 of 2 ended (1 completed, 1 errored) | best 0.5000 (a) | 5 of 8 epochs"
    )


def test_a_sweep_the_time_budget_sizes_counts_trials_without_a_total():
    out = io.StringIO()
    now = [0.0]
    rep = CompactReporter(samples=None, max_epochs=4, concurrency=2, params=[], out=out, clock=lambda: now[0])
    done = _trial("a", "TERMINATED", {"epoch": 4, "score": 0.5, "trial_status": "completed"})
    running = _trial("b", "RUNNING", {"epoch": 1, "score": 0.3})
    rep.on_step_begin(0, [done, running])
    now[0] = 65.0
    rep.on_experiment_end([done, running])
    assert out.getvalue().strip() == (
        "[1 min 05 s] 1 running, 0 pending, 1 ended (1 completed) | best 0.5000 (a) | 5 epochs"
    )
