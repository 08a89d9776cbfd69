"""``--pack K``: Tune trials trained K at a time in pack actors (``sweeps.pack_actor``, ``sweeps.packed_trainable``).

The sweep test runs a real Ray sweep with two packs of two slots on this machine's 2 CPUs, then checks that
every trial says where it trained, that a slot freed by an ended trial took a later one, that a packed trial's
per-epoch numbers are what ``train()`` of its own config computes (no BatchNorm, fp32: float rounding only;
see ``tests/test_packed.py`` for the tolerances), and that the review page shows which trials shared a pack.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fer_core.errors import FerError
from subprocs import run_sweep
from sweeps.pack_actor import TRIAL_CPUS, read_folder, write_folder
from sweeps.packed_trainable import pack_resources, packs_for

ROOT = Path(__file__).resolve().parents[1]


# --- the arithmetic and the files --------------------------------------------------------------------


def test_packs_fill_the_cluster_but_not_past_the_trials():
    # (cluster fits, samples, K, --concurrency) -> (packs, trials at once)
    assert packs_for(2, 12, 4, None) == (2, 8)
    assert packs_for(8, 6, 4, None) == (2, 6)  # 6 trials fill 2 packs of 4
    assert packs_for(2, 12, 4, 3) == (1, 3)
    assert packs_for(0, 12, 4, None) == (1, 4)


def test_a_pack_gets_the_share_less_its_trials_reservations():
    assert pack_resources(1, 1, 8) == {"num_cpus": round(1 - 8 * TRIAL_CPUS, 4), "num_gpus": 1}
    with pytest.raises(FerError, match=r"--pack 200: --cpus-per-trial 1 leaves the pack no CPU"):
        pack_resources(1, 0, 200)


def test_the_pack_flag_is_checked_before_anything_runs():
    from sweeps.driver import get_parser
    from sweeps.settings import SweepConfig

    for flag, message in (
        ("0", "--pack must be >= 1"),
        ("500", "--pack 500: --cpus-per-trial 1 leaves the pack no CPU"),
    ):
        cfg = SweepConfig.parse(["--pack", flag], get_parser())
        with pytest.raises(FerError, match=message):
            cfg.check_values()
    cfg = SweepConfig.parse(["--pack", "4"], get_parser())
    cfg.check_values()
    assert cfg.pack == 4 and cfg.to_dict()["pack"] == 4
    assert SweepConfig.from_dict({}).pack == 1  # an older sweep.json: no packing


def test_checkpoint_files_round_trip_and_cannot_leave_their_folder(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "checkpoint.pt").write_bytes(b"weights")
    (src / "sub" / "x.json").write_text("{}")
    files = read_folder(src)
    assert files == {"checkpoint.pt": b"weights", "sub/x.json": b"{}"}
    out = write_folder(files, tmp_path / "dst")
    assert read_folder(out) == files
    for bad in ("../evil", "/etc/evil", "a/../../evil", "a//b"):
        with pytest.raises(FerError, match="not a plain path inside"):
            write_folder({bad: b"x"}, tmp_path / "dst2")
    assert not (tmp_path / "evil").exists()


# --- the pack actor's rules, in-process (the same object Ray runs as an actor) ----------------------------


def test_a_pack_waits_for_all_its_trials_and_keeps_groups_apart(brightness_data, tmp_path, monkeypatch):
    """The epoch starts only when every trial in the pack has asked for it; a trial of another group is refused
    until the pack empties, and its claim keeps the pack's own group from refilling it meanwhile. Once its trials
    have left, the pack keeps no files on the node (Ray kills the actor at the sweep's end: no cleanup then)."""
    import asyncio
    import tempfile

    from fer_core.train import load_config
    from sweeps import pack_actor
    from sweeps.pack_actor import PackActor, pack_key

    monkeypatch.setattr(pack_actor, "_device", lambda: "CPU on test")
    node_tmp = tmp_path / "tmp"
    node_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(node_tmp))
    base = ["model=fer_cnn_tiny", "device=cpu", "threads=1", "precision=fp32", "epochs=2"]
    a, b, d = (load_config(overrides=[*base, "batch_size=32", f"seed={s}"]) for s in (0, 1, 3))
    c = load_config(overrides=[*base, "batch_size=16", "seed=2"])

    async def scenario():
        pack = PackActor(brightness_data, 2, 7)
        assert await pack.join("a", a, pack_key(a), None) == {
            "pack_id": 7,
            "pack_slot": 0,
            "pack_device": "CPU on test",
        }
        assert (await pack.join("b", b, pack_key(b), None))["pack_slot"] == 1
        assert await pack.join("c", c, pack_key(c), None) is None  # full, and another group
        assert await pack.claim(pack_key(c)) and not await pack.claim(pack_key(a))

        first_a = asyncio.ensure_future(pack.next_epoch("a"))
        await asyncio.sleep(0.3)
        assert not first_a.done()  # b has not asked yet: no epoch
        first_b = await pack.next_epoch("b")
        first_a = await first_a
        for reply in (first_a, first_b):
            assert reply["result"]["metrics"]["epoch"] == 1 and reply["result"]["checkpoint"] and "ended" not in reply
        assert await pack.leave("a") and not await pack.leave("a")
        assert await pack.join("d", d, pack_key(d), None) is None  # a's slot is free, but c's group claimed it

        last_b = await pack.next_epoch("b")  # b alone now
        assert last_b["result"]["metrics"]["epoch"] == 2 and last_b["ended"]["status"] == "completed"
        assert (await pack.describe())["members"] == 0
        assert (await pack.join("c", c, pack_key(c), None))["pack_slot"] == 0  # empty: c's group gets it
        view = await pack.describe()
        assert view["key"] == pack_key(c) and view["claim"] is None
        with pytest.raises(RuntimeError, match="trial a is not in it"):
            await pack.next_epoch("a")
        assert len([p for p in node_tmp.iterdir() if p.name.startswith("fer-")]) == 1  # c's folder
        assert await pack.leave("c")
        assert sorted(p.name for p in node_tmp.iterdir() if p.name.startswith("fer-")) == []
        assert (await pack.join("c", c, pack_key(c), None))["pack_slot"] == 0
        assert await pack.close() == 1  # what the driver asks before it kills the pack: a trial's files go too
        assert sorted(p.name for p in node_tmp.iterdir() if p.name.startswith("fer-")) == []
        assert (await pack.describe())["members"] == 0

    asyncio.run(scenario())


# --- a real sweep --------------------------------------------------------------------------------------

SPACE = """\
fixed:
  model: fer_cnn_tiny
  model_args: {bn: none, dense_bn: false}
  batch_size: 64
  precision: fp32
  lr_schedule: cosine
params:
  lr: {type: float, low: 1.0e-3, high: 5.0e-3, log: true}
  dropout_scale: {type: float, low: 0.0, high: 1.0}
  label_smoothing: {type: float, low: 0.0, high: 0.2}
"""


def _sweep(args: list) -> subprocess.CompletedProcess:
    return run_sweep(*args, timeout=900)


@pytest.mark.slow
@pytest.mark.e2e
def test_packed_sweep_trains_each_trial_as_its_own_train_would(ingested, tmp_path):
    from fer_core.train import load_checkpoint, load_train_data, train
    from fer_core.train.config import resolve_config

    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    storage = tmp_path / "sweeps"
    args = [
        *("--data", ingested, "--space", space, "--storage", storage, "--name", "packed", "--wandb-mode", "disabled"),
        *("--samples", "6", "--max-epochs", "3", "--grace-period", "1", "--num-cpus", "2", "--pack", "2"),
    ]
    out = _sweep(args)
    assert "--pack 2: 2 pack(s) of 2 trials" in out.stderr and "4 trials at a time" in out.stderr
    exp = storage / "packed"
    trials = pq.read_table(exp / "trials.parquet").to_pylist()
    assert len(trials) == 6 and not [t for t in trials if t["outcome"] == "errored"]
    for t in trials:
        assert t["pack_id"] in (0, 1) and t["pack_slot"] in (0, 1) and t["pack_device"].startswith("CPU on ")
    by_slot: dict = {}
    for t in trials:
        by_slot.setdefault((t["pack_id"], t["pack_slot"]), []).append(t["trial_id"])
    assert len(by_slot) == 4 and max(len(v) for v in by_slot.values()) >= 2  # freed slots took later trials
    epochs = pq.read_table(exp / "epochs.parquet").to_pylist()
    assert all(r["pack_id"] is not None for r in epochs)

    # the winner, trained alone by train() from its own recorded config, gives the same epochs
    best = max((t for t in trials if t["outcome"] == "completed"), key=lambda t: t["score"])
    ckpts = sorted(exp.glob(f"*{best['trial_id']}*/checkpoint_*"))
    cfg = resolve_config(load_checkpoint(ckpts[-1])["config"], where="the trial checkpoint")
    assert cfg.model == "fer_cnn_tiny" and cfg.batch_size == 64 and cfg.epochs == 3
    for key in ("lr", "dropout_scale", "label_smoothing"):  # the pack trained the trial's own sampled values
        assert getattr(cfg, key) == pytest.approx(best[f"config/{key}"], rel=1e-12), key
    alone = train(cfg, load_train_data(ingested, splits=("train", "val")), progress=False)
    mine = sorted((r for r in epochs if r["trial_id"] == best["trial_id"]), key=lambda r: r["epoch"])
    assert [r["epoch"] for r in mine] == [1, 2, 3]
    for packed, solo in zip(mine, alone.history, strict=True):
        np.testing.assert_allclose(packed["train_loss"], solo["train_loss"], rtol=1e-4)
        np.testing.assert_allclose(packed["val_loss"], solo["val_loss"], rtol=1e-4)
        assert abs(packed["val_acc"] - solo["val_acc"]) <= 1 / 379 + 1e-9

    # the review page says which trials shared a pack
    from dashboards.report import build_report
    from sweeps.experiment import load_experiment

    html = build_report(load_experiment(exp, finished=True))
    assert "Packs: trials that shared a GPU or CPU (--pack)" in html and "pack / slot" in html
    for t in trials:
        assert f"{t['trial_id']} (slot {t['pack_slot']}" in html


@pytest.mark.slow
@pytest.mark.e2e
def test_trials_of_two_groups_take_turns_in_one_pack(ingested, tmp_path):
    """One pack, two batch sizes: a trial of the other group claims the pack and waits for it to empty."""
    space = tmp_path / "space.yaml"
    space.write_text(
        SPACE.replace("  batch_size: 64\n", "")
        + "  batch_size: {type: categorical, choices: [32, 64]}\n"
        + "start:\n"
        + "".join(f"  - {{batch_size: {b}}}\n" for b in (32, 64, 32, 64))
    )
    storage = tmp_path / "sweeps"
    args = [
        *("--data", ingested, "--space", space, "--storage", storage, "--name", "turns", "--wandb-mode", "disabled"),
        *("--samples", "4", "--max-epochs", "2", "--no-asha", "--num-cpus", "2", "--pack", "2"),
        *("--concurrency", "2"),
    ]
    out = _sweep(args)
    assert "--pack 2: 1 pack(s) of 2 trials" in out.stderr
    trials = pq.read_table(storage / "turns" / "trials.parquet").to_pylist()
    assert sorted(t["config/batch_size"] for t in trials) == [32, 32, 64, 64]
    assert {t["outcome"] for t in trials} == {"completed"} and {t["pack_id"] for t in trials} == {0}
    epochs = pq.read_table(storage / "turns" / "epochs.parquet").to_pylist()
    assert len(epochs) == 8  # every trial trained its 2 epochs: no group starved, no pack deadlocked
