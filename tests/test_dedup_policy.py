import importlib.util
from pathlib import Path

import numpy as np
import pytest

from conftest import face, save
from fer_core.data.dedup import diameter, duplicate_groups, resolve
from fer_core.data.near_pairs import hamming


def _res(groups, labels, splits, rank=None, keep_splits=True, conflicts="majority"):
    g = np.array(groups)
    rank = np.zeros(len(g), dtype=np.int64) if rank is None else np.array(rank)
    return resolve(
        g, np.zeros(len(g), bool), np.array(labels), splits, rank, keep_splits=keep_splits, conflicts=conflicts
    )


def test_leakage_removed_from_val_and_test_keep_train_copy():
    # group 0 straddles train/val/test; group 1 val/test; 2 and 3 are singletons
    r = _res([0, 0, 0, 1, 1, 2, 3], [1, 1, 1, 2, 2, 0, 3], ["test", "train", "val", "test", "val", "train", "val"])
    assert r.keep.tolist() == [False, True, False, False, True, True, True]
    assert r.summary["removed_leakage"] == 3
    assert r.summary["removed_leakage_by_split"] == {"test": 2, "val": 1}
    assert r.summary["groups_straddling_source_splits"] == 2


def test_within_split_duplicates_keep_one_and_resplit_keeps_one_overall():
    r = _res([0, 0, 0], [1, 1, 1], ["train", "train", "test"])
    assert r.keep.tolist() == [True, False, False]
    assert r.summary["removed_duplicates"] == 1 and r.summary["removed_leakage"] == 1
    r = _res([0, 0, 0], [1, 1, 1], ["test", "train", "train"], keep_splits=False)
    assert r.keep.sum() == 1 and r.summary["removed_duplicates"] == 2


def test_conflicts_majority_tie_and_drop():
    # majority 2 vs 1: keep a copy carrying the majority label
    r = _res([0, 0, 0], [3, 1, 1], [None] * 3, keep_splits=False)
    assert r.keep.tolist() == [False, True, False] and r.labels[1] == 1
    assert r.summary["conflict_groups"] == 1
    # tie: the whole group is dropped
    r = _res([0, 0], [3, 1], [None] * 2, keep_splits=False)
    assert not r.keep.any() and r.summary["dropped_conflicts"] == 2
    # explicit drop policy drops even a clear majority
    r = _res([0, 0, 0], [3, 1, 1], [None] * 3, keep_splits=False, conflicts="drop")
    assert not r.keep.any()


def test_majority_label_applied_when_only_minority_copy_is_in_top_split():
    r = _res([0, 0, 0], [0, 1, 1], ["train", "test", "test"])
    assert r.keep.tolist() == [True, False, False]
    assert r.labels[0] == 1 and r.summary["relabelled_to_majority"] == 1


def test_primary_source_preferred_over_merged_copy():
    r = _res([0, 0], [2, 2], [None, None], rank=[1, 0], keep_splits=False)
    assert r.keep.tolist() == [False, True]


def test_duplicate_groups_keep_exact_copies_together_and_star_around_a_representative():
    digests = np.array([b"a", b"b", b"a", b"c", b"d", b"e"], dtype="S1")
    ph = np.array([0b0, 0b1111 << 40, 0b0, 0b1, 0b111, 0xFFFF], dtype=np.uint64)
    group, exact = duplicate_groups(digests, ph, max_distance=2)
    # 0 and 2 exact; 3 is 1 bit from 0 and 2 bits from 4, the representative: 0, 2, 3, 4 together
    assert len({group[0], group[2], group[3], group[4]}) == 1
    assert group[1] != group[0] and group[5] != group[0] and group[1] != group[5]
    assert exact.tolist() == [True, False, True, False, False, False]


def _chain(n: int, step: int) -> np.ndarray:
    """Codes c_0..c_{n-1}: each ``step`` bits from the next, c_0 and c_k k * step bits apart."""
    return np.array([(1 << (step * k)) - 1 for k in range(n)], dtype=np.uint64)


def test_no_chaining_a_chain_of_near_pairs_is_not_one_group():
    """A~B~C~D~E, 2 bits per link (threshold 2): single linkage would join A and E, 8 bits apart."""
    ph = _chain(5, 2)
    digests = np.array([bytes([k]) for k in range(5)], dtype="S1")
    group, _ = duplicate_groups(digests, ph, max_distance=2)
    assert len(set(group.tolist())) == 2 and group[0] != group[4]
    for g in set(group.tolist()):
        members = ph[group == g]
        assert diameter(members) <= 4  # at most twice the threshold
        # some member (the representative) is within the threshold of every other
        assert any((hamming(members, m) <= 2).all() for m in members)
    # three in a row where the ends are far apart: the middle one represents them, nothing further joins
    ph3 = np.array([0b0011, 0b0, 0b1100, 0b1111 << 8], dtype=np.uint64)
    group3, _ = duplicate_groups(np.array([b"a", b"b", b"c", b"d"], dtype="S1"), ph3, max_distance=2)
    assert group3[0] == group3[1] == group3[2] != group3[3]


def test_resolve_reports_diameters():
    ph = np.array([0b0, 0b11, 0b1100, 0b1 << 40], dtype=np.uint64)
    r = resolve(
        np.array([0, 0, 0, 1]),
        np.zeros(4, bool),
        np.array([1, 1, 1, 2]),
        [None] * 4,
        np.zeros(4, np.int64),
        keep_splits=False,
        phashes=ph,
    )
    assert r.summary["max_group_diameter"] == 4 and r.summary["groups_by_diameter"] == {"4": 1}
    assert {m["diameter"] for m in r.members} == {4}


def test_duplicates_csv_gives_each_groups_diameter(ingested):
    import csv

    with open(ingested / "report" / "duplicates.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and list(rows[0])[-1] == "diameter"
    by_group: dict[str, set] = {}
    for r in rows:
        by_group.setdefault(r["group"], set()).add(int(r["diameter"]))
    assert all(len(d) == 1 and 0 <= min(d) <= 12 for d in by_group.values())  # one width per group, <= 2 x 6 bits


def test_near_duplicates_with_different_labels_stay_but_copies_conflict():
    """Images in one near group: copies (within copy_distance bits) with different labels are a
    conflict; near duplicates that are not copies (one person's two expressions) keep their labels."""
    ph = np.array([0b0, 0b11, 0b111100], dtype=np.uint64)  # 0 and 1 copies (2 bits), 2 is 4 from 0
    args = (np.zeros(3, np.int64), np.zeros(3, bool))
    common = dict(keep_splits=False, phashes=ph, copy_distance=2)
    # 0 (happy) and its copy 1 (sad): a tie, both dropped; the other expression 2 stays
    r = resolve(*args, np.array([0, 1, 2]), [None] * 3, np.zeros(3, np.int64), **common)
    assert r.keep.tolist() == [False, False, True] and r.summary["conflict_groups"] == 1
    # same labels for the copies: one copy stays, beside the other expression with its own label
    r = resolve(*args, np.array([0, 0, 2]), [None] * 3, np.zeros(3, np.int64), **common)
    assert r.keep.tolist() == [True, False, True] and r.labels.tolist() == [0, 0, 2]
    assert r.summary["conflict_groups"] == 0 and r.summary["groups_keeping_several_labels"] == 1
    assert (r.group[0] == r.group[2]) and r.summary["dropped_conflicts"] == 0
    # a near duplicate with the *same* label is removed as before
    r = resolve(*args, np.array([0, 0, 0]), [None] * 3, np.zeros(3, np.int64), **common)
    assert r.keep.sum() == 1
    # copy_distance = the near distance: every member a copy (the old rule): 1-1-1 is a tie, all dropped
    r = resolve(*args, np.array([0, 1, 2]), [None] * 3, np.zeros(3, np.int64), **{**common, "copy_distance": 6})
    assert not r.keep.any()


def _dedup_benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "dedup_threshold.py"
    spec = importlib.util.spec_from_file_location("dedup_threshold", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_threshold_benchmark_on_a_folder_of_images(tmp_path, capsys):
    """benchmarks/dedup_threshold.py --images, as a user runs it on real faces (here: a synth folder
    of distinct people, whose injected copies it leaves out via truth.csv)."""
    from fer_core.data.synth import SynthConfig, generate, write_folders

    synth_dir = write_folders(generate(SynthConfig(n=360, seed=3, subject_size=0)), tmp_path / "raw")
    bench = _dedup_benchmark()
    bench.main(
        [
            "--images",
            str(synth_dir),
            "--n",
            "300",
            "--copies",
            "20",
            "--max",
            "8",
            "--pairs",
            str(tmp_path / "pairs.csv"),
        ]
    )
    out = capsys.readouterr().out
    assert "injected copies" in out and "300 distinct images at 48x48" in out
    rows = {
        int(line.split()[0]): line.split()
        for line in out.splitlines()
        if line[:4].strip().isdigit() and len(line.split()) == 18
    }
    assert sorted(rows) == [0, 2, 4, 6, 8]
    recall = [float(rows[t][10]) for t in sorted(rows)]  # all kinds of copy
    assert recall == sorted(recall) and recall[-1] >= 0.9  # copies are found as t grows
    assert int(rows[0][11]) == 0 and rows[0][12:14] == ["0", "0.0%"]  # no distinct faces at distance 0
    for kind in ("shift", "rescale", "crop", "jpeg75", "mixed"):
        assert f"{kind:>10}: mean" in out
    assert "largest threshold with wrongly grouped originals" in out
    assert (tmp_path / "pairs.csv").read_text().startswith("distance,a,b")

    # A flat folder of other images (no classes, no truth.csv) works too; an empty one is an error.
    for k in range(12):
        save(tmp_path / "flat" / f"{k}.jpg", face(k))
    bench.main(["--images", str(tmp_path / "flat"), "--copies", "5", "--max", "4"])
    assert "12 distinct images" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no image files"):
        bench.main(["--images", str(tmp_path / "empty")])
