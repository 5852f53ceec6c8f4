"""Plot helpers: each takes ``ax=None`` (a new figure when None) and returns the Axes.
Nothing here changes matplotlib's global style."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from labkit.text import status_text


def _axes(ax, size=(5, 4)):
    if ax is None:
        _, ax = plt.subplots(figsize=size, layout="constrained")
    return ax


def confusion_heatmap(matrix: np.ndarray, classes: list[str], ax=None, normalize: bool = False,
                      title: str = "Confusion matrix"):
    """Counts in each cell (rows: true class, columns: predicted). Large matrices drop the numbers
    and the tick labels thin out, so a 50 x 50 matrix stays readable."""
    n = len(classes)
    ax = _axes(ax, (max(4.5, 0.22 * n + 2.5), max(3.8, 0.2 * n + 2)))
    data = matrix / np.maximum(matrix.sum(1, keepdims=True), 1) if normalize else matrix
    annotate = n <= 15
    step = 1 if n <= 25 else int(np.ceil(n / 25))
    sns.heatmap(data, ax=ax, cmap="Blues", annot=annotate, fmt=".2f" if normalize else "d", cbar=not annotate,
                xticklabels=[c if i % step == 0 else "" for i, c in enumerate(classes)],
                yticklabels=[c if i % step == 0 else "" for i, c in enumerate(classes)],
                annot_kws={"fontsize": 7 if n > 10 else 8}, square=n > 15)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=90 if n > 10 else 45, labelsize=7 if n > 15 else 8)
    ax.tick_params(axis="y", labelrotation=0, labelsize=7 if n > 15 else 8)
    return ax


def roc_plot(curves: dict, ax=None, title: str = "One-vs-rest ROC"):
    """Curves from :func:`labkit.metrics.roc_curves`: one line per class, the averages dashed."""
    ax = _axes(ax, (5.5, 4.5))
    for name, c in curves.items():
        style = {"micro": dict(ls="--", lw=2, color="black"), "macro": dict(ls=":", lw=2, color="grey")}.get(
            name, dict(lw=1))
        ax.plot(c["fpr"], c["tpr"], label=f"{name} (AUC {c['auc']:.3f})", **style)
    ax.plot([0, 1], [0, 1], color="lightgrey", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    return ax


def training_curves(histories: dict, metric: str = "loss", ax=None, per_update: bool = False,
                    smooth: int = 1, title: str | None = None):
    """Training (solid) and validation (dashed) ``metric`` ("loss" or "accuracy") per epoch for each
    named run; ``per_update=True`` plots the training metric per optimizer update instead
    (a rolling mean over ``smooth`` updates)."""
    ax = _axes(ax, (6, 4))
    colors = sns.color_palette("tab10", max(len(histories), 1))
    for color, (name, h) in zip(colors, histories.items()):
        if per_update:
            df = pd.DataFrame(h.updates)
            if not df.empty:
                ax.plot(df["update"], df[metric].rolling(max(1, smooth), min_periods=1).mean(), color=color,
                        label=name, lw=1)
            continue
        df = pd.DataFrame(h.epochs)
        if df.empty:
            continue
        ax.plot(df["epoch"], df[f"train_{metric}"], color=color, marker="o", ms=3, label=f"{name} train")
        if f"val_{metric}" in df:
            ax.plot(df["epoch"], df[f"val_{metric}"], color=color, ls="--", marker="s", ms=3,
                    label=f"{name} validation")
    ax.set_xlabel("update" if per_update else "epoch")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} per {'update' if per_update else 'epoch'}")
    ax.legend(fontsize=7)
    return ax


def gradient_flow_plot(summary: pd.DataFrame, ax=None, title: str = "Gradient flow"):
    """Mean and max absolute gradient per layer, input (left) to output (right), on a log scale."""
    ax = _axes(ax, (6, 3.5))
    x = np.arange(len(summary))
    ax.bar(x, summary["max_abs_grad"], color="tab:cyan", alpha=0.5, label="max |grad|")
    ax.bar(x, summary["mean_abs_grad"], color="tab:blue", label="mean |grad|")
    ax.set_xticks(x, summary["layer"], rotation=45, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("|gradient|")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return ax


def embedding_scatter(points: np.ndarray, labels, classes: list[str], ax=None, title: str = "Embedding"):
    """2-D points coloured by class."""
    ax = _axes(ax, (4.5, 4))
    labels = np.asarray(labels)
    palette = sns.color_palette("tab10" if len(set(labels)) <= 10 else "tab20", len(classes))
    for i, name in enumerate(classes):
        sel = labels == i
        if sel.any():
            ax.scatter(points[sel, 0], points[sel, 1], s=8, color=palette[i], label=name, alpha=0.8)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(classes) <= 12:
        ax.legend(fontsize=6, markerscale=1.5)
    return ax


def bar_with_ci(table: pd.DataFrame, ax=None, value: str = "accuracy", low: str = "ci_low", high: str = "ci_high",
                reference: str | None = "original", title: str = "Test accuracy"):
    """Horizontal bars of ``value`` per row with CI whiskers, and the original's number as a marker.
    A run with no accuracy (diverged or failed) gets an empty hatched bar labelled with its status, never
    a 0 % bar."""
    ax = _axes(ax, (6, 0.45 * len(table) + 1.2))
    y = np.arange(len(table))
    vals = pd.to_numeric(table[value], errors="coerce").to_numpy(dtype=float)
    missing = np.isnan(vals)
    shown = np.where(missing, 0.0, vals)
    lows = pd.to_numeric(table[low], errors="coerce").to_numpy(dtype=float)
    highs = pd.to_numeric(table[high], errors="coerce").to_numpy(dtype=float)
    err = np.nan_to_num(np.clip(np.vstack([shown - lows, highs - shown]), 0, None))
    ax.barh(y[~missing], shown[~missing], xerr=err[:, ~missing], color="tab:blue", alpha=0.8, capsize=3,
            label="ours (95 % CI)")
    statuses = table["status"] if "status" in table else pd.Series("no result", index=table.index)
    for yi, status in zip(y[missing], statuses[missing]):
        ax.barh(yi, 1.0, color="none", edgecolor="tab:red", hatch="//", lw=0.8)
        ax.text(0.02, yi, status_text(status).upper(), va="center", color="tab:red", fontsize=8,
                fontweight="bold")
    if reference and reference in table:
        ref = table[reference].astype(float)
        ax.scatter(ref, y, marker="D", color="tab:red", zorder=3, label="original report")
    ax.set_yticks(y, table.index)
    ax.set_xlim(0, 1)
    ax.set_xlabel(value)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    return ax


def summary_bars(summary: pd.DataFrame, ax=None):
    """The summary's accuracies with their 95 % intervals, one bar per run, on axes sized for its runs."""
    return bar_with_ci(summary, ax=_axes(ax, (7, 0.4 * len(summary) + 1.5)))
