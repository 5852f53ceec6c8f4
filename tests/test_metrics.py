import numpy as np
import pytest

from labkit import metrics


def test_wilson_interval_known_values():
    low, high = metrics.wilson_interval(80, 100)
    assert (low, high) == pytest.approx((0.7112, 0.8666), abs=1e-3)  # textbook values
    assert metrics.wilson_interval(0, 10)[0] == 0.0 and metrics.wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_accuracy_and_tables():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0])
    acc = metrics.accuracy(y, p)
    assert acc.value == pytest.approx(4 / 6) and acc.low < acc.value < acc.high and acc.n == 6
    cm = metrics.confusion(y, p, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    rec = metrics.per_class_recall(y, p, ["a", "b", "c"])
    assert rec["recall"].tolist() == [0.5, 1.0, 0.5]
    table = metrics.classification_table(y, p, ["a", "b", "c"])
    assert list(table.index) == ["a", "b", "c", "macro avg", "weighted avg", "accuracy"]
    assert table.loc["b", "precision"] == pytest.approx(2 / 3)
    assert metrics.macro_f1(y, p, 3) == pytest.approx(table.loc["macro avg", "f1-score"])


def test_roc_curves_perfect_and_random():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 50)
    perfect = np.eye(3)[y] + rng.normal(0, 0.01, (150, 3))
    curves = metrics.roc_curves(y, perfect, ["a", "b", "c"])
    assert curves["macro"]["auc"] == pytest.approx(1.0) and curves["micro"]["auc"] == pytest.approx(1.0)
    noise = metrics.roc_curves(y, rng.random((150, 3)), ["a", "b", "c"])
    assert 0.3 < noise["macro"]["auc"] < 0.7


def test_mcnemar_noise_and_clear_difference():
    y = np.zeros(200, int)
    a = np.zeros(200, int)
    b = a.copy()
    b[:3] = 1  # three more errors: within noise
    assert metrics.within_noise(y, a, b)
    b[:60] = 1  # sixty more errors: not noise
    assert not metrics.within_noise(y, a, b)
