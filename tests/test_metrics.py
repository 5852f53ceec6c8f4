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


def test_accuracy_prints_percent_interval_and_count():
    assert str(metrics.Accuracy(0.755, 0.701, 0.8024, 300)) == "75.50 % (95 % CI 70.1-80.2, n=300)"


def test_nothing_to_count_is_nan_not_an_error():
    """No test images: accuracy, Wilson interval and paired interval are nan, and the majority share 0; one
    image is already an answer (a point for the paired interval: B got the only image right, A did not)."""
    assert all(np.isnan(v) for v in metrics.wilson_interval(0, 0))
    assert not any(np.isnan(v) for v in metrics.wilson_interval(1, 1))
    empty = metrics.accuracy(np.array([], int), np.array([], int))
    assert np.isnan(empty.value) and np.isnan(empty.low) and np.isnan(empty.high) and empty.n == 0
    assert metrics.majority_share(np.array([], int)) == 0.0
    assert all(np.isnan(v) for v in metrics.paired_difference_interval(0, 0, 0))
    assert metrics.paired_difference_interval(0, 1, 1) == (1.0, 1.0)
    assert metrics.paired_difference_interval(0, 0, 100) == (0.0, 0.0)  # no discordant pair: no spread


def test_the_confidence_level_reaches_every_interval():
    y, p = np.array([0] * 60 + [1] * 40), np.array([0] * 100)
    acc = metrics.accuracy(y, p, confidence=0.9)
    assert (acc.low, acc.high) == metrics.wilson_interval(60, 100, 0.9) != metrics.wilson_interval(60, 100)
    la, ua = metrics.wilson_interval(80, 100, 0.9)
    lb, ub = metrics.wilson_interval(90, 120, 0.9)
    low, high = metrics.unpaired_difference_interval(80, 100, 90, 120, confidence=0.9)
    assert low == pytest.approx(-0.05 - np.sqrt((0.75 - lb) ** 2 + (ua - 0.8) ** 2))
    assert high == pytest.approx(-0.05 + np.sqrt((ub - 0.75) ** 2 + (0.8 - la) ** 2))


def test_the_ends_of_the_interval_hold_chance():
    """Chance on an end of the Wilson interval is 'held': all 10 right on a one-class test set (interval
    [0.72, 1], chance 1) is at chance, and so is none right where chance is 0 (interval [0, 0.28])."""
    assert metrics.wilson_interval(10, 10)[1] == 1.0 and metrics.wilson_interval(0, 10)[0] == 0.0
    assert metrics.chance_status(1.0, 10, 1.0) == "at_chance"
    assert metrics.chance_status(0.0, 10, 0.0) == "at_chance"


def test_a_class_absent_from_labels_and_predictions_keeps_its_row_without_warnings():
    """Four classes, the third ('c') and last ('d') never seen nor predicted: every table still has a row for
    them (recall and F1 0, support 0), the macro F1 averages over all four, and nothing warns (no 0/0 warning
    in the notebooks)."""
    import warnings
    y = np.array([0, 0, 1, 1])
    p = np.array([0, 1, 1, 1])
    classes = ["a", "b", "c", "d"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.confusion(y, p, 4).tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
        rec = metrics.per_class_recall(y, p, classes)
        table = metrics.classification_table(y, p, classes)
        f1 = metrics.macro_f1(y, p, 4)
    assert list(rec.columns) == ["class", "recall", "support"]
    assert rec["class"].tolist() == classes and rec["support"].tolist() == [2, 2, 0, 0]
    assert rec["recall"].tolist() == [0.5, 1.0, 0.0, 0.0]
    # a: P 1, R 1/2, F1 2/3; b: P 2/3, R 1, F1 4/5; c, d: 0 (zero_division=0); macro over four
    assert table.loc[classes, "f1-score"].tolist() == pytest.approx([2 / 3, 0.8, 0.0, 0.0])
    assert table.loc[["c", "d"], "precision"].tolist() == [0.0, 0.0]
    assert f1 == pytest.approx((2 / 3 + 0.8) / 4) and table.loc["macro avg", "f1-score"] == pytest.approx(f1)
    assert table["support"].dtype.kind == "i" and table.loc["accuracy", "support"] == 4


def test_a_prediction_outside_the_classes_gives_micro_averages_instead_of_accuracy():
    """A model answering a label the table has no name for (here 2 of classes 'a', 'b'): scikit-learn reports
    micro averages over the named classes instead of an accuracy; the table has no accuracy row then."""
    table = metrics.classification_table(np.array([0, 1, 1]), np.array([0, 1, 2]), ["a", "b"])
    assert "accuracy" not in table.index and "micro avg" in table.index


def test_roc_curves_skip_an_absent_class_only_and_average_on_a_grid():
    """Classes a, b, c with b absent from the labels: a and c still get their curves. The macro curve is the
    mean of the per-class curves on 201 false-positive rates from 0 to 1."""
    y = np.array([0, 0, 2, 2])
    scores = np.array([[0.9, 0.0, 0.1], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.2, 0.0, 0.8]])
    curves = metrics.roc_curves(y, scores, ["a", "b", "c"])
    assert set(curves) == {"a", "c", "micro", "macro"}
    assert curves["a"]["auc"] == 1.0 and curves["c"]["auc"] == 1.0
    for name in ("micro", "macro"):
        assert set(curves[name]) == {"fpr", "tpr", "auc"} and len(curves[name]["fpr"]) == len(curves[name]["tpr"])
    assert np.array_equal(curves["macro"]["fpr"], np.linspace(0, 1, 201))


def test_hand_computed_macro_roc_curve():
    """The two classes of test_hand_computed_auc. 'dog' (scores s1; positives 0.4 0.8 0.9, negatives 0.1 0.6)
    passes through (0, 2/3), (1/2, 2/3), (1/2, 1); 'cat' (scores 1 - s1; positives 0.9 0.4, negatives 0.6 0.2
    0.1) through (0, 1/2), (1/3, 1/2), (1/3, 1). The macro curve at FPR 0.25: (2/3 + 1/2) / 2; at 0.4:
    (2/3 + 1) / 2; past 0.5: 1."""
    y = np.array([0, 0, 1, 1, 1])
    s1 = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
    macro = metrics.roc_curves(y, np.c_[1 - s1, s1], ["cat", "dog"])["macro"]
    assert macro["fpr"][[50, 80]].tolist() == pytest.approx([0.25, 0.4])
    assert macro["tpr"].shape == (201,)
    assert macro["tpr"][[50, 80]].tolist() == pytest.approx([7 / 12, 5 / 6])
    assert macro["tpr"][101:].tolist() == pytest.approx([1.0] * 100)


def test_scores_that_require_grad_are_taken_as_they_are():
    """Logits straight from a model (a tensor that requires grad) are detached, not refused."""
    import torch
    y = torch.tensor([0, 1, 1, 0])
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.5, 1.5], [1.0, -1.0]], requires_grad=True)
    assert metrics.roc_curves(y, logits, ["a", "b"])["macro"]["auc"] == 1.0
    assert metrics.accuracy(y, logits.argmax(1)).value == 1.0


def test_a_spread_beyond_float_noise_goes_to_the_t_test():
    """Only float noise (1e-15) counts as 'no spread': differences 0.5 +- 1e-9 are a real, tiny spread, and
    the t-test's (tiny, not 0) p-value is returned."""
    a = [0.9, 0.9 + 1e-9, 0.9 - 1e-9]
    b = [0.4, 0.4, 0.4]
    mean, p = metrics.seed_test(a, b)
    diffs = np.subtract(a, b)
    assert p == pytest.approx(stats.ttest_1samp(diffs, 0.0).pvalue, rel=1e-6) and p > 0
    assert mean == pytest.approx(0.5)


def test_the_mean_interval_of_two_seeds_is_an_interval():
    """Two seeds: t with 1 degree of freedom (12.71), half-width 12.71 * sd / sqrt(2)."""
    low, high = metrics.mean_interval([0.1, 0.3])
    half = stats.t.ppf(0.975, 1) * np.std([0.1, 0.3], ddof=1) / np.sqrt(2)
    assert (low, high) == pytest.approx((0.2 - half, 0.2 + half)) and half == pytest.approx(1.2706, abs=1e-4)
    assert metrics.mean_interval([0.25]) == (0.25, 0.25)


def test_per_class_scores_by_hand():
    """Recall = right / images of the class; precision = right / predictions of the class; a prediction outside
    the classes (Q1's `other`, index 2 here) counts against recall and is no class's."""
    y = np.array([0, 0, 0, 1, 1])
    pred = np.array([0, 1, 2, 1, 1])
    table = metrics.per_class_scores(y, pred, ["cat", "dog"])
    assert list(table.index) == ["cat", "dog"] and table["support"].tolist() == [3, 2]
    assert table["recall"].tolist() == pytest.approx([1 / 3, 1.0])
    assert table["precision"].tolist() == pytest.approx([1.0, 2 / 3])


def test_per_class_scores_of_a_class_never_seen_nor_predicted(recwarn):
    """A class with no test image and no prediction (the last of three here) reads 0 recall, 0 precision and support
    0, without scikit-learn's undefined-metric warning; the index is named "class" (the notebooks' tables)."""
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 0, 0])  # "dog" is never predicted: its precision is 0 / 0
    table = metrics.per_class_scores(y, pred, ["cat", "dog", "bird"])
    assert table.index.name == "class" and list(table.index) == ["cat", "dog", "bird"]
    assert table["support"].tolist() == [2, 2, 0]
    assert table["recall"].tolist() == [1.0, 0.0, 0.0]
    assert table["precision"].tolist() == [0.5, 0.0, 0.0]
    assert not [w for w in recwarn if "ill-defined" in str(w.message)]
