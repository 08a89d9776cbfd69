"""The layers only point down: import-linter's contracts in pyproject.toml ([tool.importlinter]).

fer_cli  >  dashboards (review) | release  >  sweeps  >  experiment_store  >  fer_core
fer_core:  train  >  data | models | losses  >  base modules (errors, atomic, storage, ...)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fer_cli", "dashboards", "release", "sweeps", "experiment_store", "fer_core")
LINT = str(Path(sys.executable).with_name("lint-imports"))


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd), "HOME": str(cwd), "NO_COLOR": "1"}
    return subprocess.run([LINT, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_layers_hold():
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "3 kept, 0 broken" in out.stdout


@pytest.mark.parametrize(
    "module, planted, contract",
    [
        ("fer_core/errors.py", "import dashboards.cli", "the fer command > review"),  # the core composing the CLI
        ("sweeps/results.py", "import release.export", "the fer command > review"),  # a sweep reaching up
        ("dashboards/report.py", "import release.confirm", "the fer command > review"),  # review and release apart
        ("fer_core/data/split.py", "import fer_core.train.config", "fer_core: train"),
        ("fer_core/storage.py", "import fer_core.data.manifest", "base modules"),
    ],
)
def test_an_upward_import_breaks_a_contract(tmp_path, module, planted, contract):
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n\ndef _planted():\n    {planted}\n")
    out = _lint(tmp_path)
    assert out.returncode == 1, out.stdout[-3000:]
    assert "Broken contracts" in out.stdout, out.stdout[-3000:]
    assert contract in out.stdout.split("Broken contracts", 1)[1], out.stdout[-3000:]
