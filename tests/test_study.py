"""One persistent Optuna study per experiment: another process can open it, and ``--extend`` continues it.
``--optuna-storage`` is checked before Ray starts; a file that is not an Optuna journal is refused, untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from fer_core.errors import FerError
from subprocs import clean_env, run_sweep
from sweeps.optuna_storage import check_storage, open_storage

_READ_STUDY = """
import json, sys, optuna
from sweeps.optuna_storage import open_storage
study = optuna.load_study(study_name=sys.argv[2], storage=open_storage(sys.argv[1]))
print(json.dumps([{"number": t.number, "state": t.state.name, "value": t.value,
                   "steps": sorted(t.intermediate_values), "params": t.params} for t in study.trials]))
"""


def _study(url: str, name: str) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-c", _READ_STUDY, url, name], env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.mark.slow
@pytest.mark.e2e
def test_the_study_is_shared_and_extended(ingested, tmp_path):
    storage = tmp_path / "sweeps"
    exp = storage / "study"
    run_sweep(
        "--smoke",
        "--samples",
        "3",
        "--max-epochs",
        "3",
        "--grace-period",
        "1",
        "--concurrency",
        "1",
        "--num-cpus",
        "2",
        "--wandb-mode",
        "disabled",
        "--data",
        ingested,
        "--storage",
        storage,
        "--name",
        "study",
    )
    record = json.loads((exp / "sweep.json").read_text())
    url = f"sqlite:///{exp}/optuna.db"
    assert record["optuna"] == {"storage": url, "study": "study"}

    # a second process opens the study: every trial finished, in the state its outcome says
    trials = {t["trial_id"]: t for t in pq.read_table(exp / "trials.parquet").to_pylist()}
    study = _study(url, "study")
    assert len(study) == 3
    state_of = {"completed": "COMPLETE", "stopped by ASHA": "PRUNED", "collapsed": "PRUNED", "errored": "FAIL"}
    assert sorted(t["state"] for t in study) == sorted(state_of[t["outcome"]] for t in trials.values())
    completed = sorted(t["score"] for t in trials.values() if t["outcome"] == "completed")
    assert sorted(t["value"] for t in study if t["state"] == "COMPLETE") == pytest.approx(completed)
    for t in study:
        if t["state"] == "PRUNED":
            assert t["steps"] and max(t["steps"]) < 3  # its intermediate values, up to where it stopped

    # --extend 2: a new Tune run on the same study; the tables and the record hold all five trials
    out = run_sweep(
        "--name", "study", "--storage", storage, "--extend", "2", "--num-cpus", "2", "--wandb-mode", "disabled"
    )
    assert "2 more trials" in out.stderr
    study = _study(url, "study")
    assert [t["number"] for t in study] == [0, 1, 2, 3, 4] and all(t["state"] != "RUNNING" for t in study)
    rows = pq.read_table(exp / "trials.parquet").to_pylist()
    assert len(rows) == 5 and set(trials) <= {r["trial_id"] for r in rows}
    extended = json.loads((exp / "sweep.json").read_text())
    assert extended["trials"] == 5 and extended["command"] == record["command"]
    assert extended["wall_s"] == record["wall_s"] and "--extend 2" in extended["resumes"][0]["command"]
    assert extended["settings"]["max_epochs"] == 3  # the launch's settings, not the defaults
    assert pq.read_table(exp / "epochs.parquet").num_rows == sum(r["epochs"] for r in rows)


NOT_JOURNALS = {
    "text": b"hello\n",
    "binary": bytes(range(256)) * 4,
    "json without op_code": b'{"a": 1}\n',
    "a json list": b"[1, 2]\n",
    "one line, no newline": b"x" * 100_000,
}


@pytest.mark.parametrize("content", NOT_JOURNALS.values(), ids=NOT_JOURNALS)
def test_a_file_that_is_not_an_optuna_journal_is_refused_and_left_untouched(tmp_path, content):
    path = tmp_path / "notes.log"
    path.write_bytes(content)
    url = f"journal:{path}"
    for call in (check_storage, open_storage):  # before Ray (the driver's check) and where the study opens
        with pytest.raises(FerError, match="is not an Optuna journal file; choose another path") as err:
            call(url)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert path.read_bytes() == content


def test_a_journal_optuna_wrote_is_accepted_and_an_unreadable_one_is_a_one_line_error(tmp_path):
    import optuna

    path = tmp_path / "study.log"
    for fresh in (path, tmp_path / "empty.log"):
        check_storage(f"journal:{fresh}")  # a new file (Optuna creates it) ...
    (tmp_path / "empty.log").touch()
    check_storage(f"journal:{tmp_path / 'empty.log'}")  # ... or an empty one
    optuna.create_study(study_name="s", storage=open_storage(f"journal:{path}")).optimize(lambda t: 1.0, n_trials=2)
    check_storage(f"journal:{path}")
    assert len(optuna.load_study(study_name="s", storage=open_storage(f"journal:{path}")).trials) == 2
    # a journal damaged after its first record: Optuna's own reading fails, reported as one line
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = tmp_path / "damaged.log"
    damaged.write_bytes(lines[0] + b"garbage\n" + b"".join(lines[1:]))
    check_storage(f"journal:{damaged}")  # its first line is a journal record
    with pytest.raises(FerError, match=r"damaged\.log: cannot read the Optuna journal \(JSONDecodeError") as err:
        open_storage(f"journal:{damaged}")
    assert "\n" not in str(err.value)


def test_journal_paths_that_cannot_be_a_journal_file(tmp_path):
    with pytest.raises(FerError, match="journal: needs a file path"):
        check_storage("journal:")
    with pytest.raises(FerError, match=r"missing: no such folder"):
        check_storage(f"journal:{tmp_path / 'missing' / 'study.log'}")
    with pytest.raises(FerError, match=r"is a folder, not a file; choose another path"):
        check_storage(f"journal:{tmp_path}")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FerError, match=r"fifo is not a regular file; choose another path"):
        check_storage(f"journal:{fifo}")  # opening it to read would wait for a writer
    with pytest.raises(FerError, match="expected an SQLAlchemy URL"):
        check_storage(str(tmp_path / "optuna.log"))
    for url in ("memory", f"sqlite:///{tmp_path}/optuna.db", "postgresql://user@host/db"):
        check_storage(url)  # no connection is made before the sweep starts
    assert not (tmp_path / "optuna.db").exists()


def test_the_driver_refuses_a_non_journal_before_starting_ray(tmp_path, capsys):
    from sweeps.driver import main

    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    storage = tmp_path / "sweeps"
    storage.mkdir()
    # --data does not exist either: were the journal not checked first, the sweep would stop there, before Ray
    argv = ["--storage", str(storage), "--name", "x", "--data", str(tmp_path / "no-data")]
    assert main([*argv, "--optuna-storage", f"journal:{notes}"]) == 2
    err = capsys.readouterr().err
    assert f"{notes} is not an Optuna journal file" in err and "Traceback" not in err
    assert notes.read_text() == "hello\n" and not list(storage.iterdir())


def _journal_with_study(path, name: str, trials: int) -> None:
    import optuna

    study = optuna.create_study(study_name=name, storage=open_storage(f"journal:{path}"))
    for i in range(trials):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.1 * i))


def test_a_new_experiment_refuses_a_study_of_its_name_in_the_shared_storage(tmp_path, capsys):
    """A teammate's experiment of the same name (in another storage folder) already has its study in the shared
    journal: a new experiment would start from its trials, so it is refused before anything starts."""
    from sweeps.driver import main

    journal = tmp_path / "team" / "optuna.log"
    journal.parent.mkdir()
    _journal_with_study(journal, "reg1", trials=3)
    before = journal.read_bytes()
    storage = tmp_path / "mine"
    storage.mkdir()
    argv = ["--storage", str(storage), "--data", str(tmp_path / "no-data"), "--optuna-storage", f"journal:{journal}"]
    assert main([*argv, "--name", "reg1"]) == 2
    err = capsys.readouterr().err
    assert "already holds a study named 'reg1' (3 trials)" in err and "--name" in err and "Traceback" not in err
    assert journal.read_bytes() == before and not list(storage.iterdir())
    assert main([*argv, "--name", "reg2"]) == 2  # another name passes this check: the missing data stops it next
    err = capsys.readouterr().err
    assert "no-data" in err and "study" not in err


@pytest.mark.slow
@pytest.mark.e2e
def test_overwrite_replaces_the_experiments_study_in_a_shared_storage(ingested, tmp_path):
    journal = tmp_path / "optuna.log"
    storage = tmp_path / "sweeps"
    args = ["--data", ingested, "--storage", storage, "--name", "reg", "--optuna-storage", f"journal:{journal}"]
    small = [
        "--max-epochs",
        "1",
        "--grace-period",
        "1",
        "--concurrency",
        "1",
        "--num-cpus",
        "2",
        "--wandb-mode",
        "disabled",
    ]
    run_sweep(*args, *small, "--samples", "2")
    assert len(_study(f"journal:{journal}", "reg")) == 2
    out = run_sweep(*args, *small, "--samples", "1", "--overwrite")
    assert "removed its Optuna study reg" in out.stderr
    study = _study(f"journal:{journal}", "reg")  # the new sweep's trial alone: TPE did not start from the old two
    assert [t["number"] for t in study] == [0] and study[0]["state"] == "COMPLETE"
