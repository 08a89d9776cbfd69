"""The experiment store: the typed record, tables, redacted URIs, and repairing Tune's state after a kill."""

from __future__ import annotations

import json
import pickle

import pytest

from experiment_store import ExperimentError, ExperimentStore, SweepRecord
from experiment_store.record import DataRef
from fer_core.storage import locate, redact


def _record(**changes) -> SweepRecord:
    rec = SweepRecord(
        name="reg1",
        command="python sweeps/regularization.py --name reg1",
        data=DataRef(uri="runs/default/data", version="v1", classes=["happy", "sad"]),
        space={"params": {}, "fixed": {}},
        base_config={"epochs": 3},
        max_epochs=3,
    )
    for k, v in changes.items():
        setattr(rec, k, v)
    return rec


def test_record_round_trip_keeps_unknown_keys_and_refuses_newer_formats(tmp_path):
    store = ExperimentStore(str(tmp_path / "reg1"))
    rec = _record(best={"score": float("nan")}, extra={"added_by_a_newer_minor": 1})
    store.write_record(rec)
    text = (tmp_path / "reg1" / "sweep.json").read_text()
    assert "NaN" not in text and json.loads(text)["added_by_a_newer_minor"] == 1  # strict JSON, kept keys
    back = store.read_record()
    assert back.name == "reg1" and back.data.classes == ["happy", "sad"] and back.best == {"score": None}
    assert back.extra == {"added_by_a_newer_minor": 1}
    raw = json.loads(text)
    (tmp_path / "reg1" / "sweep.json").write_text(json.dumps({**raw, "format_version": 99}))
    with pytest.raises(ExperimentError, match="newer fer-sweep"):
        store.read_record()
    (tmp_path / "reg1" / "sweep.json").write_text(json.dumps({**raw, "max_epochs": "three"}))
    with pytest.raises(ExperimentError, match="max_epochs"):
        store.read_record()


def test_tables_read_nan_as_none(tmp_path):
    store = ExperimentStore(str(tmp_path / "e"))
    store.write_tables([{"trial_id": "a", "score": float("nan"), "config/lr": 0.1}], [])
    assert store.read_rows("trials.parquet") == [{"trial_id": "a", "score": None, "config/lr": 0.1}]
    assert store.read_rows("confirm.parquet") is None


def test_secrets_in_uris_are_redacted():
    assert (
        redact("s3://b/p?access_key=AK&secret_key=SK&endpoint_override=h:9")
        == "s3://b/p?access_key=***&secret_key=***&endpoint_override=h:9"
    )
    assert redact("postgresql://user:pw@db/studies") == "postgresql://db/studies"
    assert redact("sqlite:////abs/optuna.db") == "sqlite:////abs/optuna.db"
    assert redact("runs/sweeps") == "runs/sweeps"
    loc = locate("s3://b/p?endpoint_override=127.0.0.1:9&scheme=http").child("exp")
    assert loc.uri == "s3://b/p/exp?endpoint_override=127.0.0.1:9&scheme=http" and loc.path == "b/p/exp"


def test_a_cut_short_tuner_state_is_repaired_from_the_launch_copy(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    state = pickle.dumps({"trainable": "fer_trainable", "param_space": {"a": list(range(100))}})
    (exp / "tuner.pkl").write_bytes(state)
    store = ExperimentStore(str(exp))
    store.keep_tune_state_copy()
    for damaged in (b"", state[: len(state) // 2]):  # killed while Ray re-uploaded it
        (exp / "tuner.pkl").write_bytes(damaged)
        assert store.repair_tune_state() and (exp / "tuner.pkl").read_bytes() == state
    assert store.repair_tune_state() == []  # whole: nothing to do


def test_a_cut_short_newest_snapshot_is_set_aside(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    good = {"trial_data": [], "runner_data": {}}
    (exp / "experiment_state-2026-01-01_10-00-00.json").write_text(json.dumps(good))
    (exp / "searcher-state-2026-01-01_10-00-00.pkl").write_bytes(pickle.dumps({"s": 1}))
    (exp / "search_gen_state-2026-01-01_10-00-00.json").write_bytes(pickle.dumps({"g": 1}))  # Ray: a pickle
    (exp / "search_gen_state-2026-01-01_11-00-00.json").write_bytes(pickle.dumps({"g": 2}))
    (exp / "experiment_state-2026-01-01_11-00-00.json").write_text(json.dumps(good)[:10])
    (exp / "searcher-state-2026-01-01_11-00-00.pkl").write_bytes(pickle.dumps({"s": 2}))
    notes = ExperimentStore(str(exp)).repair_tune_state()
    assert len(notes) == 1 and "11-00-00" in notes[0]
    names = sorted(p.name for p in exp.iterdir())
    assert "experiment_state-2026-01-01_11-00-00.json.damaged" in names
    assert (
        "experiment_state-2026-01-01_11-00-00.json" not in names
        and "searcher-state-2026-01-01_11-00-00.pkl" not in names
    )
    assert "experiment_state-2026-01-01_10-00-00.json" in names
    assert ExperimentStore(str(exp)).repair_tune_state() == []  # the older one is whole: kept
    # the only snapshot left is never set aside, even when damaged: Ray then says what is wrong
    (exp / "experiment_state-2026-01-01_10-00-00.json").write_text("{")
    assert ExperimentStore(str(exp)).repair_tune_state() == []


# --- the decisions record (fer export-best) ------------------------------------------------------------


def _decide(uri: str, who: str, barrier) -> None:
    from experiment_store import Decision, record_decisions

    barrier.wait()  # every exporter writes at the same moment
    d = Decision("export-best", who, "score", 1, 0.5, 0.5, f"{who}.yaml", "2026-12-03T00:00:00Z", who)
    record_decisions(ExperimentStore(uri), [d])


def _exports_at_once(uri: str, n: int = 8) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=_decide, args=(uri, f"user{i}", barrier)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0


def test_exports_by_several_people_at_once_all_stay_on_record(tmp_path):
    """Eight ``fer export-best`` at the same moment: eight decisions on record (a read-modify-write of one file
    kept one or two of them)."""
    from experiment_store import read_decisions

    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "decisions.json").write_text(  # what an older version wrote: read first
        json.dumps([{"action": "export-best", "trial_id": "old", "by": "score", "rank": 1, "value": 0.4,
                     "score": 0.4, "file": "old.yaml", "time": "2026-01-01T00:00:00Z"}])
    )  # fmt: skip
    _exports_at_once(str(exp))
    decisions = read_decisions(ExperimentStore(str(exp)))
    assert decisions[0].trial_id == "old"
    assert sorted(d.trial_id for d in decisions[1:]) == [f"user{i}" for i in range(8)]
    assert not [p for p in (exp / "decisions").iterdir() if p.name.startswith(".")]  # no temp file left


@pytest.mark.slow
def test_exports_at_once_on_s3_all_stay_on_record(s3_server, s3_bucket, monkeypatch):
    from experiment_store import read_decisions

    s3_server.apply(monkeypatch)
    uri = s3_server.uri(s3_bucket, "sweeps/exp")
    _exports_at_once(uri)
    decisions = read_decisions(ExperimentStore(uri))
    assert sorted(d.trial_id for d in decisions) == [f"user{i}" for i in range(8)]
    with pytest.raises(ExperimentError, match="not a decisions file written by fer"):
        locate(uri).child("decisions", "zz-broken.json").write_text("{not json")
        read_decisions(ExperimentStore(uri))


def test_a_live_trials_results_skip_rows_that_are_not_tunes(tmp_path):
    """``result.json`` rows whose epoch or iteration is not a count (a damaged or doctored file) are skipped like a
    line cut short, so the live tables and pages are built from the rest (a string epoch crashed the build)."""
    trial = tmp_path / "exp" / "fer_trainable_0"
    trial.mkdir(parents=True)
    rows = [
        {"epoch": 1, "training_iteration": 1, "val_acc": 0.3},
        {"epoch": "x", "training_iteration": 2, "val_acc": 0.9},
        {"epoch": 2, "training_iteration": 2.5, "val_acc": 0.9},
        {"epoch": True, "training_iteration": 2, "val_acc": 0.9},
        {"epoch": 2, "training_iteration": 2, "val_acc": 0.4},
    ]
    (trial / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + '\n{"epoch": 3, "val_')
    _, results, errored = ExperimentStore(str(tmp_path / "exp")).read_trial("fer_trainable_0")
    assert [r["val_acc"] for r in results] == [0.3, 0.4] and not errored
