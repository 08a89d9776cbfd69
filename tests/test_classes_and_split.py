import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from fer_core.data import classes
from fer_core.data.split import _allocate, carve_val, class_weights, merge_caps, parse_ratios, stratified_split
from fer_core.errors import DataError


@pytest.mark.parametrize(
    "raw,canon",
    [
        ("Sadness", "sad"),
        ("happiness", "happy"),
        ("surprised", "surprise"),
        ("anger", "angry"),
        (" Neutral ", "neutral"),
        ("fearful", "fear"),
        ("contempt", "contempt"),
        ("banana", None),
    ],
)
def test_normalize(raw, canon):
    assert classes.normalize(raw) == canon


def test_selection():
    assert classes.parse_selection("happy,Neutral,sadness,surprised") == ("happy", "neutral", "sad", "surprise")
    assert classes.parse_selection(None) is None
    with pytest.raises(DataError, match="banana"):
        classes.parse_selection("happy,banana")
    with pytest.raises(DataError, match="twice"):
        classes.parse_selection("happy,happiness")


def test_parse_ratios():
    assert parse_ratios("80/10/10") == pytest.approx((0.8, 0.1, 0.1))
    assert parse_ratios("0.7/0.15/0.15") == pytest.approx((0.7, 0.15, 0.15))
    for bad in ("80/20", "a/b/c", "0/50/50", "-1/1/1"):
        with pytest.raises(DataError, match="--split"):
            parse_ratios(bad)


def test_allocate_sums_exactly():
    for n in range(0, 40):
        counts = _allocate(n, (0.8, 0.1, 0.1))
        assert sum(counts) == n
        assert abs(counts[0] - 0.8 * n) < 1


def test_stratified_split_is_stratified_and_seeded():
    labels = np.repeat(np.arange(4), [500, 300, 150, 50])
    a = stratified_split(labels, (0.8, 0.1, 0.1), seed=1)
    b = stratified_split(labels, (0.8, 0.1, 0.1), seed=1)
    c = stratified_split(labels, (0.8, 0.1, 0.1), seed=2)
    assert (a == b).all() and not (a == c).all()
    for k, n in enumerate([500, 300, 150, 50]):
        m = labels == k
        assert (a[m] == "train").sum() == round(0.8 * n)
        assert (a[m] == "val").sum() == round(0.1 * n)
        assert (a[m] == "test").sum() == round(0.1 * n)


def test_carve_val_moves_share_of_train_only():
    labels = np.repeat([0, 1], [100, 60])
    splits = np.array(["train"] * 130 + ["test"] * 30, dtype=object)
    out = carve_val(labels, splits, 0.1, seed=0)
    assert (out[130:] == "test").all()
    assert (out == "val").sum() == 13


def test_merge_caps():
    assert merge_caps({0: 700, 1: 500, 2: 490, 3: 300}, "median") == {0: 0, 1: 0, 2: 5, 3: 195}
    assert merge_caps({0: 700, 1: 300}, "max") == {0: 0, 1: 400}
    assert merge_caps({0: 700, 1: 300}, 350) == {0: 0, 1: 50}
    with pytest.raises(DataError, match="merge-cap"):
        merge_caps({0: 1}, "mean")


def test_class_weights_match_sklearn_balanced():
    labels = np.repeat(np.arange(4), [357, 246, 244, 152])
    expected = compute_class_weight("balanced", classes=np.arange(4), y=labels)
    assert class_weights(labels, 4) == pytest.approx(expected, rel=1e-5)
    assert class_weights(np.array([0, 0, 1]), 3)[2] == 0.0
