import numpy as np
import pytest
from scipy import stats

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
    assert metrics.mcnemar(y, a, b) >= metrics.SIGNIFICANCE
    b[:60] = 1  # sixty more errors: not noise
    assert metrics.mcnemar(y, a, b) < metrics.SIGNIFICANCE


def _paired(a_only: int, b_only: int, both_right: int, both_wrong: int):
    """Labels and two classifiers' predictions with these counts of (dis)agreement."""
    n = a_only + b_only + both_right + both_wrong
    y = np.zeros(n, int)
    a_right = np.r_[np.ones(a_only), np.zeros(b_only), np.ones(both_right), np.zeros(both_wrong)].astype(bool)
    b_right = np.r_[np.zeros(a_only), np.ones(b_only), np.ones(both_right), np.zeros(both_wrong)].astype(bool)
    return y, np.where(a_right, 0, 1), np.where(b_right, 0, 2)


def test_mcnemar_is_the_exact_two_sided_binomial_test():
    """5 images only A gets right, 14 only B: p = 2 P(X <= 5) with X ~ Binomial(19, 1/2) = 0.0636. A
    one-sided test would give 0.0318 (or 0.99 the other way round) and call the difference significant."""
    from math import comb
    from scipy import stats
    y, a, b = _paired(5, 14, 30, 7)
    exact = 2 * sum(comb(19, k) for k in range(6)) / 2 ** 19
    assert metrics.mcnemar(y, a, b) == pytest.approx(exact, rel=1e-12)
    assert metrics.mcnemar(y, a, b) == pytest.approx(stats.binomtest(5, 19, 0.5, alternative="two-sided").pvalue)
    assert metrics.mcnemar(y, b, a) == metrics.mcnemar(y, a, b)  # symmetric in the two classifiers
    assert stats.binomtest(5, 19, 0.5, alternative="less").pvalue < 0.05  # what a one-sided test would say
    assert metrics.mcnemar(y, a, b) >= metrics.SIGNIFICANCE  # within noise at the house's 0.05
    # only the discordant pairs count
    assert metrics.mcnemar(*_paired(5, 14, 0, 0)) == metrics.mcnemar(y, a, b)
    assert metrics.mcnemar(*_paired(4, 4, 10, 2)) == 1.0 and metrics.mcnemar(*_paired(0, 0, 10, 2)) == 1.0


def test_seed_test_keeps_direction_and_pairs_seed_with_seed():
    # A wins one seed, B the other, equal means: nothing to see (a direction-blind vote said "2 of 3 real")
    assert metrics.seed_test([0.85, 0.75, 0.80], [0.75, 0.85, 0.80]) == (0.0, 1.0)
    diff, p = metrics.seed_test([0.80, 0.83, 0.79, 0.84], [0.70, 0.74, 0.71, 0.73])
    d = np.array([0.10, 0.09, 0.08, 0.11])
    t = d.mean() / (d.std(ddof=1) / np.sqrt(4))
    assert diff == pytest.approx(0.095) and p == pytest.approx(2 * stats.t.sf(t, 3))
    assert metrics.seed_test([0.70, 0.74], [0.80, 0.83])[0] < 0  # a - b: the sign says who is ahead
    # by seed, not by position: {seed: accuracy} pairs only the seeds both have
    assert metrics.seed_test({0: 0.8, 1: 0.9, 5: 0.1}, {1: 0.8, 0: 0.7, 7: 0.9}) == metrics.seed_test([0.8, 0.9],
                                                                                                     [0.7, 0.8])


def test_seed_test_without_spread_and_with_too_few_seeds():
    assert metrics.seed_test([0.8, 0.9, 0.7], [0.7, 0.8, 0.6]) == (pytest.approx(0.1), 0.0)  # every seed +0.1
    assert metrics.seed_test([0.8, 0.9], [0.8, 0.9]) == (0.0, 1.0)
    with pytest.raises(ValueError, match="at least 2 common seeds"):
        metrics.seed_test({0: 0.8, 1: 0.9}, {1: 0.7, 2: 0.6})
    with pytest.raises(ValueError, match="seed k with seed k"):
        metrics.seed_test([0.8, 0.9], [0.8])


def test_difference_intervals_against_hand_computations():
    # paired Wald: d = (15 - 5) / 200, se = sqrt(20 - 100 / 200) / 200
    low, high = metrics.paired_difference_interval(5, 15, 200)
    se = np.sqrt(20 - 100 / 200) / 200
    assert (low, high) == pytest.approx((0.05 - 1.959964 * se, 0.05 + 1.959964 * se), abs=1e-6)
    # Newcombe: from the two Wilson intervals
    la, ua = metrics.wilson_interval(80, 100)
    lb, ub = metrics.wilson_interval(90, 120)
    low, high = metrics.unpaired_difference_interval(80, 100, 90, 120)
    assert low == pytest.approx(-0.05 - np.sqrt((0.75 - lb) ** 2 + (ua - 0.8) ** 2))
    assert high == pytest.approx(-0.05 + np.sqrt((ub - 0.75) ** 2 + (0.8 - la) ** 2))
    assert metrics.two_proportion_test(80, 100, 90, 120) == pytest.approx(
        stats.fisher_exact([[80, 20], [90, 30]]).pvalue)
    assert metrics.mean_interval([0.1, 0.2, 0.3]) == pytest.approx(
        (0.2 - stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3), 0.2 + stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)))


def test_hand_computed_precision_recall_f1_and_accuracy():
    """y = 0 0 0 1 1 2, predicted 0 1 2 1 1 1. Class 0: recall 1/3, precision 1/1; class 1: recall 2/2,
    precision 2/4; class 2: recall 0/1, precision 0/1. F1 = 2PR / (P + R): 1/2, 2/3, 0; macro F1 = 7/18."""
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 1, 2, 1, 1, 1])
    acc = metrics.accuracy(y, p)
    assert (acc.value, acc.n) == (0.5, 6)
    assert (acc.low, acc.high) == pytest.approx((0.1876, 0.8124), abs=1e-4)  # Wilson, 3 of 6
    rec = metrics.per_class_recall(y, p, ["a", "b", "c"])
    assert rec["recall"].tolist() == pytest.approx([1 / 3, 1.0, 0.0]) and rec["support"].tolist() == [3, 2, 1]
    table = metrics.classification_table(y, p, ["a", "b", "c"])
    assert table.loc[["a", "b", "c"], "precision"].tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert table.loc[["a", "b", "c"], "recall"].tolist() == pytest.approx([1 / 3, 1.0, 0.0])
    assert table.loc[["a", "b", "c"], "f1-score"].tolist() == pytest.approx([0.5, 2 / 3, 0.0])
    assert table.loc["accuracy", "f1-score"] == 0.5 and table.loc["accuracy", "support"] == 6
    assert metrics.macro_f1(y, p, 3) == pytest.approx(7 / 18)
    assert metrics.majority_share(y) == 0.5


def test_wilson_interval_and_chance_status_at_the_boundary():
    """Wilson's 95 % interval for 60 of 100 is 50.20 %-69.06 % (centre (p + z^2/2n) / (1 + z^2/n), hand
    computed with z = 1.95996): just above 50 %, so 60 % of 100 beats a coin and 59 % does not; mirrored,
    40 % is below it and 41 % at chance."""
    z = 1.959964
    p, n = 0.6, 100
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert metrics.wilson_interval(60, 100) == pytest.approx((centre - half, centre + half), abs=1e-6)
    assert metrics.wilson_interval(60, 100) == pytest.approx((0.5020, 0.6906), abs=1e-4)
    assert metrics.wilson_interval(60, 100, confidence=0.9)[0] > metrics.wilson_interval(60, 100)[0]  # narrower
    assert [metrics.chance_status(a, 100, 0.5) for a in (0.60, 0.59, 0.41, 0.40)] == \
        ["ok", "at_chance", "at_chance", "below_chance"]
    assert metrics.chance_status(0.59, 100, 0.5, confidence=0.9) == "ok"  # 90 %: 51.0 %-66.7 %


def test_hand_computed_auc():
    """Two classes, class-1 scores 0.1 0.6 | 0.4 0.8 0.9 (negatives | positives): 5 of the 6 (positive,
    negative) pairs are ordered right, AUC 5/6 for each class and for the macro average. Micro: the ten
    one-vs-rest scores, 21 of 25 pairs ordered right (0.84)."""
    y = np.array([0, 0, 1, 1, 1])
    s1 = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
    curves = metrics.roc_curves(y, np.c_[1 - s1, s1], ["cat", "dog"])
    assert curves["cat"]["auc"] == pytest.approx(5 / 6) and curves["dog"]["auc"] == pytest.approx(5 / 6)
    assert curves["macro"]["auc"] == pytest.approx(5 / 6) and curves["micro"]["auc"] == pytest.approx(0.84)


def test_auc_agrees_with_counting_ordered_pairs():
    """Each class's one-vs-rest AUC is the share of (positive, negative) pairs the scores order right (ties
    half): counted here pair by pair, without scikit-learn."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 40)
    scores = rng.random((40, 3)) + 0.3 * np.eye(3)[y]
    curves = metrics.roc_curves(y, scores, ["a", "b", "c"])
    aucs = []
    for k, name in enumerate("abc"):
        pos, neg = scores[y == k, k], scores[y != k, k]
        counted = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
        assert curves[name]["auc"] == pytest.approx(counted)
        aucs.append(counted)
    assert curves["macro"]["auc"] == pytest.approx(np.mean(aucs))
