"""Mislabel finder: cleanlab flags and the earlier confident-joint rule, out-of-fold predictions,
detection quality, review files."""

import csv

import numpy as np
import pytest
from PIL import Image

from fer_core.data import mislabels
from fer_core.data.mislabels import (
    confident_labels,
    confident_thresholds,
    expected_label_errors,
    find_mislabels,
    flag,
    flag_label_issues,
    other_class,
    out_of_fold_probs,
    rank_candidates,
    report_from_probs,
    write_review,
)


def patterns(n: int, *, noise: float = 0.1, seed: int = 0, size: int = 48):
    """Four noisy shape classes (horizontal bar, vertical bar, ring, X), shifted at random, with a
    share ``noise`` of labels flipped to another class. Returns (images, given, true)."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 4, n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy = yy[None] - (size / 2 + rng.uniform(-6, 6, n))[:, None, None]
    dx = xx[None] - (size / 2 + rng.uniform(-6, 6, n))[:, None, None]
    half = rng.uniform(2, 4, n)[:, None, None]
    shapes = np.stack(
        [
            (np.abs(dy) < half) & (np.abs(dx) < 14),
            (np.abs(dx) < half) & (np.abs(dy) < 14),
            np.abs(np.hypot(dy, dx) - 11) < half,
            ((np.abs(dy - dx) < half) | (np.abs(dy + dx) < half)) & (np.abs(dx) < 12),
        ]
    )[true, np.arange(n)]
    bg = rng.uniform(40, 120, n)[:, None, None]
    img = np.where(shapes, bg + rng.uniform(60, 120, n)[:, None, None], bg) + rng.normal(0, 20, (n, size, size))
    given = true.copy()
    flip = rng.random(n) < noise
    given[flip] = (true[flip] + rng.integers(1, 4, flip.sum())) % 4
    return np.clip(img, 0, 255).astype(np.uint8)[..., None], given, true


@pytest.fixture(scope="module")
def planted():
    images, given, true = patterns(600, seed=2)
    return images, given, true, find_mislabels(images, given, 4, seed=0)


# ----------------------------------------------------------------------------------------------
# The confident-joint rule on hand-written probabilities

# Labels and out-of-fold probabilities for 3 classes. Thresholds (mean prob of j over rows labeled j):
# t0 = (0.90 + 0.80 + 0.10 + 0.05) / 4 = 0.4625, t1 = (0.80 + 0.60) / 2 = 0.70, t2 = (0.50 + 0.40) / 2 = 0.45.
HAND_LABELS = np.array([0, 0, 0, 0, 1, 1, 2, 2])
HAND_PROBS = np.array(
    [
        [0.90, 0.05, 0.05],  # 0: label 0 passes t0 -> fine
        [0.80, 0.10, 0.10],  # 1: fine
        [0.10, 0.85, 0.05],  # 2: only class 1 passes -> flagged, suggested 1, self-confidence 0.10
        [0.05, 0.50, 0.45],  # 3: class 1 (argmax) misses t1, class 2 reaches t2 exactly -> flagged, suggested 2
        [0.10, 0.80, 0.10],  # 4: fine
        [0.30, 0.60, 0.10],  # 5: no class reaches its threshold -> not flagged
        [0.30, 0.20, 0.50],  # 6: fine
        [0.35, 0.25, 0.40],  # 7: no class reaches its threshold -> not flagged
    ]
)


def test_thresholds_are_mean_probability_of_own_class():
    t = confident_thresholds(HAND_PROBS, HAND_LABELS, 3)
    np.testing.assert_allclose(t, [0.4625, 0.70, 0.45])
    # A class nobody is labeled with can take no images.
    t4 = confident_thresholds(np.hstack([HAND_PROBS, np.zeros((8, 1))]), HAND_LABELS, 4)
    assert np.isinf(t4[3])


def test_confident_labels_pick_argmax_among_passing_classes():
    t = confident_thresholds(HAND_PROBS, HAND_LABELS, 3)
    assert confident_labels(HAND_PROBS, t).tolist() == [0, 0, 1, 2, 1, -1, 2, -1]


def test_rank_candidates_by_self_confidence_and_margin():
    cand, t = rank_candidates(HAND_PROBS, HAND_LABELS)
    assert cand.tolist() == [3, 2]  # self-confidence 0.05 before 0.10
    np.testing.assert_allclose(t, [0.4625, 0.70, 0.45])
    # Normalized margin p_given - max_other: row 2 -> -0.75, row 3 -> -0.45.
    cand_m, _ = rank_candidates(HAND_PROBS, HAND_LABELS, rank_by="normalized_margin")
    assert cand_m.tolist() == [2, 3]
    # The cap keeps floor(max_fraction * N) of the best-ranked candidates.
    assert rank_candidates(HAND_PROBS, HAND_LABELS, max_fraction=0.2)[0].tolist() == [3]
    assert rank_candidates(HAND_PROBS, HAND_LABELS, max_fraction=0.1)[0].tolist() == []
    assert rank_candidates(HAND_PROBS, HAND_LABELS, max_fraction=1.0)[0].tolist() == [3, 2]


def test_rank_candidates_rejects_bad_input():
    with pytest.raises(ValueError):
        rank_candidates(HAND_PROBS, HAND_LABELS[:-1])
    with pytest.raises(ValueError):
        rank_candidates(HAND_PROBS, HAND_LABELS, rank_by="loss")
    with pytest.raises(ValueError):
        rank_candidates(HAND_PROBS, HAND_LABELS, max_fraction=1.5)
    with pytest.raises(ValueError):
        rank_candidates(HAND_PROBS, np.array([0, 0, 0, 0, 1, 1, 2, 3]))


# ----------------------------------------------------------------------------------------------
# cleanlab's flags on constructed probabilities

PLANTED = {
    5: (0, 2, 0.01),
    50: (0, 1, 0.04),
    120: (1, 2, 0.02),
    180: (1, 0, 0.05),
    230: (2, 0, 0.03),
    290: (2, 1, 0.06),
}


def _planted_probs() -> tuple[np.ndarray, np.ndarray]:
    """300 images, 100 per class, each predicted as its label (0.6-0.95), except the six of PLANTED:
    index -> (given label, the class the model sees, self-confidence), which are predicted as another
    class with probability 0.9."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 100)
    own = rng.uniform(0.6, 0.95, 300)
    probs = np.full((300, 3), 0.0)
    probs[np.arange(300), labels] = own
    for k in range(1, 3):
        probs[np.arange(300), (labels + k) % 3] = (1 - own) / 2
    for i, (given, seen, conf) in PLANTED.items():
        assert labels[i] == given
        probs[i] = 0.1 - conf  # the third class
        probs[i, given], probs[i, seen] = conf, 0.9
    return probs / probs.sum(axis=1, keepdims=True), labels


def test_cleanlab_flags_the_planted_mislabels_first_by_self_confidence():
    probs, labels = _planted_probs()
    cand = flag_label_issues(probs, labels)
    by_conf = sorted(PLANTED, key=lambda i: PLANTED[i][2])
    assert cand.tolist() == by_conf  # exactly the six, lowest self-confidence first
    assert expected_label_errors(probs, labels) == 6
    suggestion = other_class(probs, labels)
    assert [int(suggestion[i]) for i in by_conf] == [PLANTED[i][1] for i in by_conf]
    rep = report_from_probs(probs, labels)
    assert rep.candidates.tolist() == by_conf and rep.expected_errors == 6 and rep.flag_by == "cleanlab"
    # A clean set flags nothing and expects no errors.
    clean = np.eye(3)[labels] * 0.8 + 0.2 / 3
    assert flag_label_issues(clean, labels).tolist() == [] and expected_label_errors(clean, labels) == 0


def test_flag_rejects_bad_input():
    with pytest.raises(ValueError, match="flag_by"):
        flag(HAND_PROBS, HAND_LABELS, "loss")
    with pytest.raises(ValueError):
        flag_label_issues(HAND_PROBS, HAND_LABELS[:-1])
    with pytest.raises(ValueError):
        expected_label_errors(HAND_PROBS, np.array([0, 0, 0, 0, 1, 1, 2, 3]))
    assert flag_label_issues(np.empty((0, 3)), np.empty(0, np.int64)).tolist() == []


def test_the_old_rule_suggests_the_class_it_moves_the_image_to():
    cand, suggestion = flag(HAND_PROBS, HAND_LABELS, "confident_joint")
    assert cand.tolist() == [3, 2]
    # Row 3: class 1 is the most probable other class, but only class 2 reaches its threshold.
    assert suggestion[3] == 2 and other_class(HAND_PROBS, HAND_LABELS)[3] == 1
    assert suggestion[2] == 1


# ----------------------------------------------------------------------------------------------
# Out-of-fold predictions


class _Memorizer:
    """A stand-in model that recalls the labels of its training rows and knows nothing else.

    It predicts a one-hot vector for any row it was trained on and a uniform vector otherwise, so
    out-of-fold predictions are uniform exactly when no row is predicted by a model that saw it.
    """

    fits: list = []

    def __init__(self, **kwargs):
        pass

    def fit(self, X, y):
        self.memory = {row.tobytes(): label for row, label in zip(X, y)}
        self.classes_ = np.unique(y)
        _Memorizer.fits.append(np.bincount(y, minlength=4))
        return self

    def predict_proba(self, X):
        k = len(self.classes_)
        out = np.full((len(X), k), 1.0 / k)
        for r, row in enumerate(X):
            if row.tobytes() in self.memory:
                out[r] = np.eye(k)[np.searchsorted(self.classes_, self.memory[row.tobytes()])]
        return out


def test_out_of_fold_rows_come_from_models_that_never_saw_them(monkeypatch):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(203, 8))  # distinct rows
    labels = np.repeat([0, 1, 2, 3], [80, 60, 40, 23])
    monkeypatch.setattr(mislabels, "LogisticRegression", _Memorizer)
    _Memorizer.fits = []
    probs = out_of_fold_probs(feats, labels, 4, folds=5, seed=1)
    # Every row was predicted (rows sum to 1) and only by a model that had not memorized it.
    np.testing.assert_allclose(probs, 0.25)
    # Folds are stratified: each training part holds ~4/5 of every class.
    assert len(_Memorizer.fits) == 5
    for counts in _Memorizer.fits:
        assert np.all(np.abs(counts - 0.8 * np.bincount(labels)) <= 1)


@pytest.mark.slow
def test_report_is_consistent(planted):
    images, given, _, rep = planted
    n = len(given)
    assert rep.probs.shape == (n, 4)
    np.testing.assert_allclose(rep.probs.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(rep.given, given)
    np.testing.assert_array_equal(rep.suggested, rep.probs.argmax(axis=1))
    np.testing.assert_allclose(rep.self_confidence, rep.probs[np.arange(n), given])
    assert rep.oof_accuracy == pytest.approx(np.mean(rep.suggested == given))
    assert rep.flag_by == "cleanlab"
    np.testing.assert_array_equal(rep.candidates, flag_label_issues(rep.probs, given))
    assert rep.expected_errors == expected_label_errors(rep.probs, given)
    assert np.all(np.diff(rep.self_confidence[rep.candidates]) >= 0)
    assert np.all(rep.suggestion != given)


# ----------------------------------------------------------------------------------------------
# Detection quality and determinism


@pytest.mark.slow
def test_planted_flips_are_found(planted):
    _, given, true, rep = planted
    noisy = given != true
    flagged = np.zeros(len(given), dtype=bool)
    flagged[rep.candidates] = True
    precision = noisy[flagged].mean()
    recall = flagged[noisy].mean()
    # Measured on this set: 47 flagged of 53 flipped, precision 1.00, recall 0.89 (the earlier
    # confident-joint rule: 38 flagged, recall 0.72); out-of-fold accuracy against the true labels
    # 1.00; 38 label errors expected. Recall stays below 1: cleanlab flags, per pair of classes, as
    # many images as the confident joint counts there, and a flipped image whose true class's
    # probability stays under that class's mean is not counted.
    assert precision >= 0.9
    assert recall >= 0.7
    assert np.mean(rep.suggested == true) >= 0.95
    # The top of the ranking is the most reliable part.
    assert noisy[rep.candidates[:20]].all()


@pytest.mark.slow
def test_same_seed_same_report_and_the_old_rule_on_the_same_probabilities(planted):
    images, given, _, rep = planted
    again = find_mislabels(images, given, 4, seed=0, flag_by="confident_joint")
    np.testing.assert_array_equal(again.probs, rep.probs)
    assert again.candidates.tolist() == rank_candidates(rep.probs, given)[0].tolist()
    assert again.flag_by == "confident_joint"
    with pytest.raises(ValueError, match="flag_by"):
        find_mislabels(images, given, 4, flag_by="loss")


@pytest.mark.slow
def test_rgb_and_other_sizes_are_accepted():
    images, given, _ = patterns(150, seed=5, size=64)
    rgb = np.repeat(images, 3, axis=-1)
    rep = find_mislabels(rgb, given, 4, folds=3, seed=0)
    assert rep.probs.shape == (150, 4)
    with pytest.raises(ValueError):
        find_mislabels(rgb, given[:-1], 4)
    with pytest.raises(ValueError):
        find_mislabels(rgb, given, 3)  # labels reach 3


@pytest.mark.slow
def test_synthetic_faces_ground_truth():
    synth = pytest.importorskip("fer_core.data.synth")
    s = synth.generate(synth.SynthConfig(n=1500, label_noise=0.3, seed=11))
    keep = s.dup_of < 0  # the ingest removes injected copies before searching for mislabels
    images, given, true = s.images[keep][..., None], s.labels[keep], s.true_labels[keep]
    rep = find_mislabels(images, given, len(s.classes), seed=0)
    noisy = given != true
    flagged = np.zeros(len(given), dtype=bool)
    flagged[rep.candidates] = True
    # Measured on this set (1440 images after removing copies, 432 wrong labels, mostly
    # sad<->neutral): 587 flagged, precision 0.54 (1.8x the base rate), recall 0.73, 47 of the top
    # 50 truly mislabeled, 640 label errors expected (the earlier rule: 668 flagged, precision
    # 0.49, recall 0.76); out-of-fold accuracy against the true labels 0.61 (small set, hard faces
    # that vary in framing, hair, background and lighting).
    assert noisy[flagged].mean() >= 0.47
    assert flagged[noisy].mean() >= 0.6
    assert noisy[rep.candidates[:50]].mean() >= 0.8


# ----------------------------------------------------------------------------------------------
# Review files


def _hand_report() -> mislabels.MislabelReport:
    """The hand-written probabilities, flagged by the earlier rule (its candidates: rows 3 then 2)."""
    return report_from_probs(HAND_PROBS, HAND_LABELS, flag_by="confident_joint")


def test_write_review_csv_and_png(tmp_path):
    from fer_core.data.relabels import read_relabels

    images = np.random.default_rng(0).integers(0, 256, (8, 48, 48, 1), dtype=np.uint8)
    ids = [f"img{i}" for i in range(8)]
    paths = write_review(_hand_report(), ids, ["happy", "neutral", "sad"], tmp_path / "report", images=images)
    assert paths["csv"] == tmp_path / "report" / "mislabels.csv"
    with open(paths["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["rank", "id", "label", "suggested", "self_confidence", "suggested_confidence", "new_label"]
    assert [(r["rank"], r["id"], r["label"], r["suggested"]) for r in rows] == [
        ("1", "img3", "happy", "sad"),
        ("2", "img2", "happy", "neutral"),
    ]
    assert float(rows[0]["self_confidence"]) == pytest.approx(0.05)
    assert float(rows[0]["suggested_confidence"]) == pytest.approx(0.45)
    assert all(r["new_label"] == "" for r in rows)
    with Image.open(paths["png"]) as img:
        img.load()
        assert img.size[0] > 100 and img.size[1] > 96
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["mislabels.csv", "mislabels.png"]

    # The reviewed file is a valid relabels.csv for the ingest.
    text = paths["csv"].read_text().splitlines()
    text[1] = text[1] + "sad"
    text[2] = text[2] + "drop"
    paths["csv"].write_text("\n".join(text) + "\n")
    assert read_relabels(paths["csv"]) == {"img3": "sad", "img2": None}


def test_write_review_without_candidates_and_rgb(tmp_path):
    rep = _hand_report()
    rep.candidates = np.array([], dtype=np.int64)
    images = np.zeros((8, 40, 40, 3), dtype=np.uint8)
    paths = write_review(rep, [str(i) for i in range(8)], ["happy", "neutral", "sad"], tmp_path, images=images)
    assert paths["csv"].read_text().strip() == ",".join(mislabels.CSV_COLUMNS)
    with Image.open(paths["png"]) as img:
        img.load()
    with pytest.raises(ValueError):
        write_review(rep, ["a"], ["happy", "neutral", "sad"], tmp_path, images=images)


def test_write_review_caps_rows_and_the_contact_sheet(tmp_path):
    rep = _hand_report()
    images = np.zeros((8, 48, 48, 1), dtype=np.uint8)
    ids = [f"img{i}" for i in range(8)]
    both = write_review(rep, ids, ["happy", "neutral", "sad"], tmp_path / "a", images=images)
    one = write_review(rep, ids, ["happy", "neutral", "sad"], tmp_path / "b", images=images, top=1)
    with open(one["csv"], newline="") as fh:
        assert [r["id"] for r in csv.DictReader(fh)] == ["img3"]
    with Image.open(both["png"]) as a, Image.open(one["png"]) as b:
        assert b.size[0] < a.size[0]  # one thumbnail instead of two


def test_summary_and_report_line_state_flagged_listed_and_expected():
    from fer_core.data.report import build_report, mislabel_summary, render_text

    probs, labels = _planted_probs()
    summary = mislabel_summary(report_from_probs(probs, labels), max_candidates=4)
    assert summary["candidates"] == 6 and summary["listed"] == 4 and summary["expected_errors"] == 6
    assert summary["flag_by"] == "cleanlab" and "off_diagonal" in summary["expected_errors_method"]
    manifest = {
        "name": "d",
        "version": "v1",
        "classes": ["happy", "neutral", "sad"],
        "image_shape": [48, 48, 1],
        "counts": {},
        "quality": {"mislabels": summary},
    }
    text = render_text(build_report(manifest))
    assert "likely mislabels: 6 flagged by cleanlab, about 6 label errors expected" in text
    assert "the top 4 in report/mislabels.csv" in text
    # A manifest written before the cleanlab flags (no listed / expected_errors) still renders.
    manifest["quality"]["mislabels"] = {"ran": True, "candidates": 12, "oof_accuracy": 0.5}
    assert "likely mislabels: 12 flagged, out-of-fold accuracy 0.500; all of them" in render_text(
        build_report(manifest)
    )


def test_max_candidates_below_one_is_refused_before_reading(tmp_path):
    from fer_core.data.ingest import IngestOptions, ingest
    from fer_core.errors import DataError

    with pytest.raises(DataError, match="--max-candidates: expected at least 1, got 0"):
        ingest(IngestOptions(src=str(tmp_path / "missing"), out=str(tmp_path / "out"), max_candidates=0))


@pytest.mark.slow
def test_ingest_lists_at_most_max_candidates_and_counts_all(synth_dir, tmp_path):
    import json

    from fer_core.data.ingest import IngestOptions, ingest

    out = tmp_path / "data"
    m = ingest(IngestOptions(src=str(synth_dir), out=str(out), max_candidates=7, quiet=True))
    ml = m["quality"]["mislabels"]
    with open(out / "report" / "mislabels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 7 == ml["listed"] < ml["candidates"]
    assert [r["rank"] for r in rows] == [str(k) for k in range(1, 8)]
    assert [float(r["self_confidence"]) for r in rows] == sorted(float(r["self_confidence"]) for r in rows)
    assert all(r["label"] != r["suggested"] for r in rows)
    assert 0 < ml["expected_errors"] <= ml["images_searched"]
    assert json.loads((out / "report" / "report.json").read_text())["mislabels"] == ml
    assert f"about {ml['expected_errors']} label errors expected" in (out / "report" / "report.txt").read_text()
