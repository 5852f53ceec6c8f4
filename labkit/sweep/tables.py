"""A sweep's results as tables and a page: ``comparison.csv`` (mean, standard deviation and count over
training seeds per grid point and run), ``comparison.png`` and ``sweep.html`` (self-contained: the table,
the plot, the failed points and links to every point's executed notebook)."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pandas as pd

from labkit.paths import atomic_write_bytes, atomic_write_text
from labkit.text import percent


def as_text(v):
    """Lists (betas, seeds) as JSON text, so they can be grouped on and written to CSV."""
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def compare(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per grid point (``keys``) and run: accuracy mean, std (over seeds; empty with one) and count, and
    how many of that grid point's seed-points failed."""
    if table.empty or "run" not in table:
        return pd.DataFrame()
    ok = table.dropna(subset=["run"])
    if ok.empty:
        return pd.DataFrame()
    by = keys + ["run"]
    out = ok.groupby(by, sort=False)["accuracy"].agg(accuracy_mean="mean", accuracy_std="std",
                                                     count="count").reset_index()
    failed = table[table["status"] == "failed"]
    if keys:
        counts = failed.groupby(keys, sort=False).size().rename("failed").reset_index()
        out = out.merge(counts, on=keys, how="left")
    else:
        out["failed"] = len(failed)
    out["failed"] = out["failed"].fillna(0).astype(int)
    return out


def plot_comparison(comparison: pd.DataFrame, keys: list[str], path: Path) -> None:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for run, df in comparison.groupby("run", sort=False):
        labels = [", ".join(f"{k}={r[k]}" for k in keys) or run for _, r in df.iterrows()] if len(keys) != 1 \
            else [str(v) for v in df[keys[0]]]
        ax.errorbar(labels, df["accuracy_mean"], yerr=df["accuracy_std"].fillna(0), marker="o", capsize=3,
                    label=run)
    ax.set_xlabel(keys[0] if len(keys) == 1 else "grid point" if keys else "run")
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.legend(fontsize=7, ncol=2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _pct(v) -> str:
    return percent(v, 2, sign=False)


def write_page(root: Path, notebook: str, profile: str, comparison: pd.DataFrame, table: pd.DataFrame,
               facts: dict, points: dict[str, str]) -> Path:
    """``sweep.html`` beside the CSVs (from ``templates/pages/sweep.html.j2``); ``points``: point folder -> its
    executed notebook's file name."""
    from labkit.report.pages import render
    stats = ("accuracy_mean", "accuracy_std", "count", "failed")
    columns = [c for c in comparison.columns if c not in stats]
    rows = [{"cells": [str(r[c]) for c in columns], "mean": _pct(r["accuracy_mean"]), "std": _pct(r["accuracy_std"]),
             "count": r["count"], "failed": r["failed"] or ""} for _, r in comparison.iterrows()]
    plot = root / "comparison.png"
    figure = base64.b64encode(plot.read_bytes()).decode() if plot.exists() and not comparison.empty else None
    failed = table[table["status"] == "failed"] if "status" in table else table.iloc[:0]
    failures = [(str(r["point"]), str(r.get("error"))) for _, r in failed.iterrows()]
    page = render("sweep.html.j2", notebook=notebook, profile=profile, facts=facts, columns=columns, rows=rows,
                  figure=figure, failures=failures, points=points)
    atomic_write_text(root / "sweep.html", page)
    return root / "sweep.html"
