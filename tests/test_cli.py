import json
import subprocess
import sys

import pytest

from fer_cli.main import main


def test_synth_ingest_report_round_trip(tmp_path, capsys):
    raw, data = tmp_path / "raw", tmp_path / "data"
    assert main(["data", "synth", "--out", str(raw), "--n", "300", "--seed", "1"]) == 0
    assert main(["data", "ingest", str(raw), "--out", str(data), "--no-mislabels", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "duplicates (pHash distance" in out and "version v" in out
    assert main(["data", "report", str(data), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["classes"] == ["happy", "neutral", "sad", "surprise"]
    assert sum(rep["totals"].values()) > 200
    assert main(["data", "report", str(data)]) == 0
    assert "class_counts.png" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.e2e
def test_errors_are_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fer_cli", "data", "ingest", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("fer: error:") and "missing: no such file or directory" in last


def test_every_flag_has_help():
    from fer_cli.main import get_parser

    parser = get_parser()
    stack = [parser]
    seen = 0
    while stack:
        p = stack.pop()
        for action in p._actions:
            if action.choices and isinstance(action.choices, dict):
                stack.extend(action.choices.values())
            elif action.dest != "help":
                assert action.help, f"{p.prog}: {action.dest} has no help"
                seen += 1
    assert seen > 25


def test_help_imports_neither_torch_nor_ray():
    """``fer --help`` and every ``fer <cmd> --help`` answer without importing torch or Ray (lazy imports):
    what made ``fer --help`` take 12-17 s."""
    code = (
        "import sys\nfrom fer_cli.main import get_parser\nparser = get_parser()\n"
        "for argv in (['--help'], ['sweep', '--help'], ['train', '--help'], ['data', 'ingest', '--help'],\n"
        "             ['dashboard', 'build', '--help'], ['export-best', '--help'], ['confirm', '--help'],\n"
        "             ['retrain', '--help']):\n"
        "    try:\n        parser.parse_args(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('torch', 'ray', 'optuna', 'wandb') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_fer_sweep_is_the_sweep_script(capsys):
    """``fer sweep`` takes the script's arguments and errors (one line, before Ray starts)."""
    assert main(["sweep", "--resume"]) == 2
    assert "fer: error: --resume needs --name" in capsys.readouterr().err
