"""The linters run in the suite: ruff (lint and format) on the code and the tests, mypy on the packages
([tool.ruff] and [tool.mypy] in pyproject.toml). The tools are the test extra's, next to this interpreter."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # mypy takes tens of seconds without its cache

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PACKAGES = ["fer_core", "experiment_store", "sweeps", "release", "dashboards", "fer_cli"]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    exe = BIN / tool
    if not exe.is_file():
        pytest.fail(f"{tool} is not installed next to {sys.executable}; pip install -e '.[test]'")
    return subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_check_passes():
    out = _run("ruff", "check", "--no-cache", *PACKAGES, "benchmarks", "tests")
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_is_applied():
    out = _run("ruff", "format", "--check", "--no-cache", *PACKAGES, "benchmarks", "scripts", "tests")
    assert out.returncode == 0, out.stdout + out.stderr + "\nrun: .venv/bin/ruff format ."


def test_mypy_passes():
    out = _run("mypy", *PACKAGES)
    assert out.returncode == 0, out.stdout + out.stderr
