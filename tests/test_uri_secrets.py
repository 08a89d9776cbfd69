"""A secret in a storage URI (``user:password@``, ``secret_key=...``) never reaches a file, stdout or stderr of the
single-run commands: the run folder, its checkpoints and their messages keep the URI redacted (credentials
come from the environment; the sweep's own record has always been redacted, see ``test_sweep_secrets``)."""

from __future__ import annotations

from pathlib import Path

import pytest

SECRET = "SECRETxyz123"


def _files_holding(root: Path, secret: str) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes())


def test_a_run_keeps_no_secret_of_its_data_uri(ingested, tmp_path, capsys):
    from fer_cli.main import main
    from fer_core.train import load_checkpoint

    data = f"file://{ingested}?secret_key={SECRET}"
    out = tmp_path / "run"
    args = ["train", "--set", f"data={data}", "--set", "model=fer_cnn_tiny", "--set", "threads=1", "--out", str(out)]
    assert main([*args, "--set", "epochs=1", "--quiet"]) == 0
    assert _files_holding(out, SECRET) == []  # config.yaml, checkpoint.pt, best.pt, result.json, metrics.jsonl
    recorded = f"file://{ingested}?secret_key=***"
    assert f"data: {recorded}" in (out / "config.yaml").read_text()
    assert load_checkpoint(out / "checkpoint")["config"]["data"] == recorded
    # a resume compares the configs as recorded: the same URI with its secret given again is the same config
    assert main([*args, "--set", "epochs=1", "--resume", "--quiet"]) == 0
    assert main([*args, "--set", "epochs=2", "--resume", "--quiet"]) == 2  # another config: refused, named
    said = capsys.readouterr()
    assert "epochs: 1 -> 2" in said.err
    assert SECRET not in said.out + said.err
    assert main(["evaluate", str(out), "--data", data]) == 0
    said = capsys.readouterr()
    assert SECRET not in said.out + said.err and _files_holding(out, SECRET) == []
    assert main(["evaluate", str(out)]) == 2  # the run's own record of its data has no secret to use: one line
    err = capsys.readouterr().err
    assert "recorded with its secrets redacted" in err and err.count("\n") == 1


def test_errors_and_messages_name_uris_without_their_secrets(tmp_path, capsys):
    from fer_cli.main import main
    from fer_core.storage import redact_text

    assert main(["data", "report", f"file://{tmp_path}/nodata?secret_key={SECRET}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nodata?secret_key=***" in err and SECRET not in err
    assert redact_text(f"s3://AKID:{SECRET}@bkt/d?endpoint_override=h:9&token={SECRET}: gone (file:///x?key=k).") == (
        "s3://bkt/d?endpoint_override=h:9&token=***: gone (file:///x?key=***)."
    )
    assert redact_text("sqlite:////abs/optuna.db and /local/path stay as they are") == (
        "sqlite:////abs/optuna.db and /local/path stay as they are"
    )


@pytest.mark.slow
def test_ingest_into_a_uri_prints_it_without_its_secret(synth_dir, tmp_path, capsys):
    from fer_cli.main import main

    out = tmp_path / "data"
    assert main(["data", "ingest", str(synth_dir), "--out", f"file://{out}?secret_key={SECRET}", "--quiet"]) == 0
    said = capsys.readouterr()
    assert SECRET not in said.out + said.err and "secret_key=***" in said.out
    assert _files_holding(out, SECRET) == []
