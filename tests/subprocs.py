"""Running the sweep driver as a user does, in a subprocess: an environment without a Ray address (the test
starts its own local cluster) or progress bars, and the repository importable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict:
    """``os.environ`` with the repository on ``PYTHONPATH``, no progress bars or usage stats, and no
    ``RAY_ADDRESS`` (so a sweep starts its own Ray); ``extra`` added."""
    env = dict(os.environ, FER_NO_PROGRESS="1", RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT), **extra)
    env.pop("RAY_ADDRESS", None)
    return env


def run_sweep(*args, timeout: float = 400, check: bool = True) -> subprocess.CompletedProcess:
    """``python sweeps/regularization.py ARGS`` from the repository root; with ``check`` it must exit 0 (the
    assertion shows the end of its output)."""
    out = subprocess.run(
        [sys.executable, "sweeps/regularization.py", *map(str, args)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out
