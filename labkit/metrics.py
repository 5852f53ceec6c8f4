"""Metrics, all from scikit-learn (or scipy) where it has them: accuracy with a confidence interval,
confusion matrix, per-class recall, classification report, one-vs-rest ROC/AUC, paired comparison."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

# The significance level of every paired comparison the notebooks print.
SIGNIFICANCE = 0.05


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


@dataclass(frozen=True)
class Accuracy:
    value: float  # fraction 0..1
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{100 * self.value:.2f} % (95 % CI {100 * self.low:.1f}-{100 * self.high:.1f}, n={self.n})"


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well behaved near 0 and 1, unlike the normal one), from
    scipy's ``binomtest(...).proportion_ci(method="wilson")``; (nan, nan) for no trials."""
    if n == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def chance_status(accuracy: float, n: int, chance: float, confidence: float = 0.95) -> str:
    """"below_chance" when the Wilson interval's upper bound is below ``chance``, "at_chance" when the
    interval holds it, "ok" when its lower bound is above it. ``chance`` is the test set's majority-class
    share (1/K for balanced sets). A point estimate alone would flag 49.8 % of 1,200 images as below
    chance (noise) and pass a model that predicts one class of a balanced pair (50.0 %)."""
    low, high = wilson_interval(round(accuracy * n), n, confidence)
    if high < chance:
        return "below_chance"
    return "ok" if low > chance else "at_chance"


def majority_share(y_true) -> float:
    """Chance for a classifier that always predicts the most common class of the test set."""
    y = _np(y_true)
    return float(np.bincount(y).max() / len(y)) if len(y) else 0.0


def accuracy(y_true, y_pred, confidence: float = 0.95) -> Accuracy:
    y_true, y_pred = _np(y_true), _np(y_pred)
    correct = int((y_true == y_pred).sum())
    low, high = wilson_interval(correct, len(y_true), confidence)
    return Accuracy(correct / len(y_true) if len(y_true) else float("nan"), low, high, len(y_true))


def confusion(y_true, y_pred, num_classes: int) -> np.ndarray:
    return skm.confusion_matrix(_np(y_true), _np(y_pred), labels=list(range(num_classes)))


def per_class_recall(y_true, y_pred, classes: list[str]) -> pd.DataFrame:
    """Recall of each class (correct / images of that class): what "class-wise accuracy" should mean."""
    y_true, y_pred = _np(y_true), _np(y_pred)
    recall = skm.recall_score(y_true, y_pred, labels=list(range(len(classes))), average=None, zero_division=0)
    support = np.bincount(y_true, minlength=len(classes))
    return pd.DataFrame({"class": classes, "recall": recall, "support": support})


def per_class_scores(y_true, y_pred, classes: list[str]) -> pd.DataFrame:
    """Each class's recall (right / images of the class) and precision (right / predictions of the class), and its
    support; predictions outside ``classes`` (Q1's ``other``) count against recall, never as a class here."""
    y_true, y_pred = _np(y_true), _np(y_pred)
    labels = list(range(len(classes)))
    recall = skm.recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    precision = skm.precision_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return pd.DataFrame({"recall": recall, "precision": precision,
                         "support": np.bincount(y_true, minlength=len(classes))[:len(classes)]},
                        index=pd.Index(classes, name="class"))


def classification_table(y_true, y_pred, classes: list[str]) -> pd.DataFrame:
    """scikit-learn's classification report as a table: precision, recall, F1, support per class,
    then accuracy and the macro and weighted averages."""
    report = skm.classification_report(_np(y_true), _np(y_pred), labels=list(range(len(classes))),
                                       target_names=classes, output_dict=True, zero_division=0)
    acc = report.pop("accuracy", None)
    df = pd.DataFrame(report).T
    df["support"] = df["support"].astype(int)
    if acc is not None:
        df.loc["accuracy"] = [np.nan, np.nan, acc, int(df.loc["macro avg", "support"])]
    return df


def macro_f1(y_true, y_pred, num_classes: int) -> float:
    return float(skm.f1_score(_np(y_true), _np(y_pred), labels=list(range(num_classes)), average="macro",
                              zero_division=0))


def roc_curves(y_true, scores, classes: list[str]) -> dict:
    """One-vs-rest ROC curve and AUC for each class, plus the micro and macro averages.

    ``scores``: N x C decision scores or probabilities. Returns
    ``{name: {"fpr", "tpr", "auc"}}`` with names the classes, "micro" and "macro".
    """
    y_true, scores = _np(y_true), _np(scores)
    onehot = label_binarize(y_true, classes=list(range(len(classes))))
    if onehot.shape[1] == 1:  # two classes: label_binarize gives one column
        onehot = np.hstack([1 - onehot, onehot])
    out = {}
    for i, name in enumerate(classes):
        if onehot[:, i].min() == onehot[:, i].max():
            continue  # a class absent from y_true has no ROC curve
        fpr, tpr, _ = skm.roc_curve(onehot[:, i], scores[:, i])
        out[name] = {"fpr": fpr, "tpr": tpr, "auc": skm.auc(fpr, tpr)}
    fpr, tpr, _ = skm.roc_curve(onehot.ravel(), scores.ravel())
    out["micro"] = {"fpr": fpr, "tpr": tpr, "auc": skm.auc(fpr, tpr)}
    grid = np.linspace(0, 1, 201)
    per_class = [c for c in classes if c in out]
    mean_tpr = np.mean([np.interp(grid, out[c]["fpr"], out[c]["tpr"]) for c in per_class], axis=0)
    out["macro"] = {"fpr": grid, "tpr": mean_tpr, "auc": float(np.mean([out[c]["auc"] for c in per_class]))}
    return out


def mcnemar(y_true, pred_a, pred_b) -> float:
    """Exact McNemar test p-value for two classifiers on the same test set (paired)."""
    y_true, pred_a, pred_b = _np(y_true), _np(pred_a), _np(pred_b)
    a_only = int(((pred_a == y_true) & (pred_b != y_true)).sum())
    b_only = int(((pred_a != y_true) & (pred_b == y_true)).sum())
    if a_only + b_only == 0:
        return 1.0
    return float(stats.binomtest(a_only, a_only + b_only, 0.5).pvalue)



def seed_test(a, b) -> tuple[float, float]:
    """Do two recipes differ beyond seed-to-seed noise? A paired t-test over per-seed accuracies, seed k of
    ``a`` with seed k of ``b`` (n - 1 degrees of freedom). Returns (mean of a - b, two-sided p).

    ``a`` and ``b``: ``{seed: accuracy}`` (only the seeds in both are paired) or equal-length sequences in
    seed order. With no spread in the differences the t statistic is undefined: p = 0 when the mean
    difference is not 0 (every seed moved by the same amount), else 1. Fewer than 2 common seeds cannot
    judge a recipe: ValueError (say "not run")."""
    if isinstance(a, dict) or isinstance(b, dict):
        a, b = dict(a), dict(b)
        common = sorted(set(a) & set(b))
        a, b = [a[k] for k in common], [b[k] for k in common]
    elif len(a) != len(b):
        raise ValueError(f"seed_test pairs seed k with seed k: got {len(a)} and {len(b)} accuracies")
    diffs = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(diffs) < 2:
        raise ValueError(f"seed_test needs at least 2 common seeds, got {len(diffs)}")
    mean = float(diffs.mean())
    if np.allclose(diffs, diffs[0], rtol=0, atol=1e-15):
        return mean, 0.0 if abs(mean) > 1e-15 else 1.0
    return mean, float(stats.ttest_1samp(diffs, 0.0).pvalue)


def mean_interval(diffs, confidence: float = 0.95) -> tuple[float, float]:
    """The t-interval of the mean of ``diffs`` (n - 1 degrees of freedom); a point when n < 2."""
    diffs = np.asarray(diffs, dtype=float)
    mean = float(diffs.mean())
    if len(diffs) < 2:
        return mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, len(diffs) - 1) * diffs.std(ddof=1) / np.sqrt(len(diffs)))
    return mean - half, mean + half


def paired_difference_interval(a_only: int, b_only: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Interval of the accuracy difference B - A of two classifiers on the same ``n`` test images, from the
    discordant counts (images only A, only B got right): Wald for paired proportions."""
    if n == 0:
        return float("nan"), float("nan")
    z = stats.norm.ppf(0.5 + confidence / 2)
    d = (b_only - a_only) / n
    se = np.sqrt(max(a_only + b_only - (b_only - a_only) ** 2 / n, 0.0)) / n
    return float(d - z * se), float(d + z * se)


def unpaired_difference_interval(correct_a: int, n_a: int, correct_b: int, n_b: int,
                                 confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval of B's accuracy minus A's on two different test sets (from the two
    Wilson intervals; well behaved near 0 and 1)."""
    pa, pb = correct_a / n_a, correct_b / n_b
    la, ua = wilson_interval(correct_a, n_a, confidence)
    lb, ub = wilson_interval(correct_b, n_b, confidence)
    d = pb - pa
    return float(d - np.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)), float(d + np.sqrt((ub - pb) ** 2 + (pa - la) ** 2))


def two_proportion_test(correct_a: int, n_a: int, correct_b: int, n_b: int) -> float:
    """Two accuracies on different test sets (unpaired): Fisher's exact test on the 2 x 2 table of right and
    wrong answers, two-sided p."""
    return float(stats.fisher_exact([[correct_a, n_a - correct_a], [correct_b, n_b - correct_b]]).pvalue)
