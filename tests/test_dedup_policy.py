import numpy as np

from fer_core.data.dedup import duplicate_groups, resolve


def _res(groups, labels, splits, rank=None, keep_splits=True, conflicts="majority"):
    g = np.array(groups)
    rank = np.zeros(len(g), dtype=np.int64) if rank is None else np.array(rank)
    return resolve(g, np.zeros(len(g), bool), np.array(labels), splits, rank, keep_splits=keep_splits,
                   conflicts=conflicts)


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


def test_duplicate_groups_join_exact_and_near_chains():
    digests = np.array([b"a", b"b", b"a", b"c", b"d", b"e"], dtype="S1")
    ph = np.array([0b0, 0b1111 << 40, 0b0, 0b1, 0b111, 0xFFFF], dtype=np.uint64)
    group, exact = duplicate_groups(digests, ph, max_distance=2)
    # 0 and 2 exact; 3 is 1 bit from 0; 4 is 2 bits from 3 (chain); 1 and 5 alone
    assert len({group[0], group[2], group[3], group[4]}) == 1
    assert group[1] != group[0] and group[5] != group[0] and group[1] != group[5]
    assert exact.tolist() == [True, False, True, False, False, False]
