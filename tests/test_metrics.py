import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn import metrics as skm

from fer_core.train.metrics import (
    ConfusionAccumulator,
    classification_metrics,
    confusion_matrix,
    format_report,
    save_confusion,
)

CLASSES = ["angry", "happy", "neutral", "sad", "surprise"]
K = len(CLASSES)


def labels(seed: int = 0, n: int = 400):
    """Random labels where class 4 is never predicted and class 3 never occurs in y_true."""
    rng = np.random.default_rng(seed)
    y_true = rng.choice([0, 1, 2, 4], size=n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, K, n))
    y_pred[y_pred == 4] = 3
    return y_true, y_pred


def test_confusion_matrix_matches_sklearn():
    y_true, y_pred = labels()
    assert 3 not in y_true and 4 not in y_pred
    cm = confusion_matrix(y_true, y_pred, K)
    assert cm.dtype == np.int64 and cm.shape == (K, K)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y_true, y_pred, labels=range(K)))
    # torch input (and a plain list) give the same matrix
    np.testing.assert_array_equal(confusion_matrix(torch.from_numpy(y_true), torch.from_numpy(y_pred), K), cm)
    np.testing.assert_array_equal(confusion_matrix(list(y_true), list(y_pred), K), cm)


def test_metrics_match_sklearn_with_missing_classes():
    y_true, y_pred = labels(seed=1)
    m = classification_metrics(confusion_matrix(y_true, y_pred, K), CLASSES)
    lab = list(range(K))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, labels=lab, average="macro", zero_division=0))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=lab, zero_division=0)
    for i, c in enumerate(CLASSES):
        pc = m["per_class"][c]
        assert pc["precision"] == pytest.approx(p[i])
        assert pc["recall"] == pytest.approx(r[i]) == pytest.approx(m["recall"][c])
        assert pc["f1"] == pytest.approx(f[i])
        assert pc["support"] == s[i]
    assert m["per_class"]["sad"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["per_class"]["surprise"]["precision"] == 0.0
    assert m["per_class"]["surprise"]["support"] > 0
    assert m["macro_recall"] == pytest.approx(np.mean(r))
    # JSON-able: plain Python numbers only
    assert json.loads(json.dumps(m)) == m
    assert all(type(v) is float for v in m["recall"].values())


def test_hand_computed_two_classes():
    # true a: 3 right, 1 called b; true b: 2 called a, 4 right
    cm = confusion_matrix([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0, 1, 1, 1, 1], 2)
    np.testing.assert_array_equal(cm, [[3, 1], [2, 4]])
    m = classification_metrics(cm, ["a", "b"])
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["per_class"]["a"] == pytest.approx({"precision": 3 / 5, "recall": 3 / 4, "f1": 2 / 3, "support": 4})
    assert m["per_class"]["b"] == pytest.approx({"precision": 4 / 5, "recall": 4 / 6, "f1": 8 / 11, "support": 6})
    assert m["macro_f1"] == pytest.approx((2 / 3 + 8 / 11) / 2)


def test_empty_and_bad_inputs():
    cm = confusion_matrix([], [], 3)
    np.testing.assert_array_equal(cm, np.zeros((3, 3)))
    m = classification_metrics(cm, ["a", "b", "c"])
    assert m["accuracy"] == 0.0 and m["macro_f1"] == 0.0
    with pytest.raises(ValueError, match="7"):
        confusion_matrix([0, 7], [0, 1], 3)
    with pytest.raises(ValueError, match="-1"):
        confusion_matrix([0, 1], [0, -1], 3)
    with pytest.raises(ValueError, match="length"):
        confusion_matrix([0, 1], [0], 3)
    with pytest.raises(TypeError, match="float"):
        confusion_matrix(np.array([0.0, 1.0]), [0, 1], 3)
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix([0], [0], 0)
    with pytest.raises(ValueError, match="2 class names"):
        classification_metrics(np.eye(3, dtype=int), ["a", "b"])
    with pytest.raises(ValueError, match="duplicates"):
        classification_metrics(np.eye(2, dtype=int), ["a", "a"])


def test_accumulator_matches_one_shot():
    y_true, y_pred = labels(seed=2, n=1000)
    acc = ConfusionAccumulator(K)
    for lo in range(0, 1000, 128):  # uneven last batch
        acc.update(torch.from_numpy(y_true[lo : lo + 128]), torch.from_numpy(y_pred[lo : lo + 128]))
    cm = acc.compute()
    assert cm.dtype == np.int64 and cm.shape == (K, K)
    np.testing.assert_array_equal(cm, confusion_matrix(y_true, y_pred, K))
    acc.update(torch.tensor([1]), torch.tensor([2]))  # compute() did not reset or alias the counts
    assert acc.compute()[1, 2] == cm[1, 2] + 1
    cm[0, 0] += 100
    assert acc.compute()[0, 0] == cm[0, 0] - 100
    acc.reset()
    assert acc.compute().sum() == 0


def test_accumulator_rejects_bad_labels_at_compute():
    acc = ConfusionAccumulator(3)
    acc.update(torch.tensor([0, 1, 5]), torch.tensor([0, 1, 2]))  # no sync, so no error here
    with pytest.raises(ValueError, match="1 .* outside 0..2"):
        acc.compute()
    with pytest.raises(ValueError, match="shape"):
        acc.update(torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(TypeError, match="float"):
        acc.update(torch.tensor([0.0]), torch.tensor([0]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_accumulator_on_cuda_does_not_sync():
    y_true, y_pred = labels(seed=3)
    t, p = torch.from_numpy(y_true).cuda(), torch.from_numpy(y_pred).cuda()
    acc = ConfusionAccumulator(K, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        acc.update(t, p)
        acc.update(t, p)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    np.testing.assert_array_equal(acc.compute(), 2 * confusion_matrix(y_true, y_pred, K))


def test_format_report():
    y_true, y_pred = labels(seed=4)
    m = classification_metrics(confusion_matrix(y_true, y_pred, K), CLASSES)
    text = format_report(m, CLASSES)
    lines = text.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
    for c in CLASSES:
        assert any(line.split()[:1] == [c] for line in lines)
    macro = next(line for line in lines if line.strip().startswith("macro avg"))
    assert f"{m['macro_f1']:.2f}" in macro and macro.split()[-1] == str(len(y_true))
    acc = next(line for line in lines if line.strip().startswith("accuracy"))
    assert acc.split() == ["accuracy", f"{m['accuracy']:.2f}", str(len(y_true))]
    # same layout as sklearn's report for the class rows
    sk = skm.classification_report(y_true, y_pred, labels=range(K), target_names=CLASSES, zero_division=0)
    sk_rows = {ln.split()[0]: ln.split() for ln in sk.splitlines() if ln.split()[:1] and ln.split()[0] in CLASSES}
    for c in CLASSES:
        assert next(ln.split() for ln in lines if ln.split()[:1] == [c]) == sk_rows[c]
    with pytest.raises(KeyError, match="fear"):
        format_report(m, ["fear"])


def test_save_confusion(tmp_path):
    classes = ["angry", "sad<script>", 'quo"te & $x^2$', "ünïcode"]
    cm = np.array([[5, 1, 0, 0], [2, 3, 0, 1], [0, 0, 0, 0], [1, 0, 0, 9]])
    jpath, ppath = save_confusion(cm, classes, tmp_path / "eval", title="val, epoch 3")
    assert (jpath.name, ppath.name) == ("confusion.json", "confusion.png")
    data = json.loads(jpath.read_text(encoding="utf-8"))
    assert data["classes"] == classes
    assert data["matrix"] == cm.tolist()
    np.testing.assert_allclose(data["normalized"][0], [5 / 6, 1 / 6, 0, 0])
    assert data["normalized"][2] == [0.0, 0.0, 0.0, 0.0]  # empty row, no NaN
    raw = ppath.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(ppath) as im:
        assert im.size[0] > 0 and im.size[1] > 0
    # raw counts shading also renders; no temp files are left behind
    save_confusion(cm, classes, tmp_path / "eval", normalize=False)
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["confusion.json", "confusion.png"]
