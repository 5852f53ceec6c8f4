"""A sweep's results as tables and a page: ``comparison.csv`` (mean, standard deviation and count over
training seeds per grid point and run), ``comparison.png`` and ``sweep.html`` (self-contained: the table,
the plot, the failed points and links to every point's executed notebook)."""
from __future__ import annotations

import base64
import html
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
    """``sweep.html`` beside the CSVs; ``points``: point folder -> its executed notebook's file name."""
    e = html.escape
    rows = []
    for _, r in comparison.iterrows():
        cells = "".join(f"<td>{e(str(r[c]))}</td>" for c in comparison.columns if c not in (
            "accuracy_mean", "accuracy_std", "count", "failed"))
        rows.append(f"<tr>{cells}<td class='num'>{_pct(r['accuracy_mean'])}</td>"
                    f"<td class='num'>{_pct(r['accuracy_std'])}</td><td class='num'>{r['count']}</td>"
                    f"<td class='num'>{r['failed'] or ''}</td></tr>")
    heads = "".join(f"<th>{e(c)}</th>" for c in comparison.columns if c not in (
        "accuracy_mean", "accuracy_std", "count", "failed"))
    plot = root / "comparison.png"
    img = (f"<img alt='comparison' src='data:image/png;base64,{base64.b64encode(plot.read_bytes()).decode()}'>"
           if plot.exists() and not comparison.empty else "<p>No point finished: nothing to plot.</p>")
    failed = table[table["status"] == "failed"] if "status" in table else table.iloc[:0]
    failures = "".join(f"<li><code>{e(str(r['point']))}</code>: {e(str(r.get('error')))}</li>"
                       for _, r in failed.iterrows())
    links = " · ".join(f"<a href='{e(name)}/{e(nb)}'>{e(name)}</a>" for name, nb in points.items())
    fact_rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in facts.items())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>labkit sweep {e(notebook)} ({e(profile)})</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.3em 0.8em; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.failed {{ color: #b00020; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Sweep of {e(notebook)} — profile <code>{e(profile)}</code></h1>
<table>{fact_rows}</table>
<h2>Test accuracy over seeds</h2>
<table><tr>{heads}<th>mean (%)</th><th>std (%)</th><th>count</th><th>failed points</th></tr>{''.join(rows)}</table>
{img}
{f"<h2 class='failed'>Failed points</h2><ul class='failed'>{failures}</ul>" if failures else ""}
<p>Tables: <a href='sweep.csv'>sweep.csv</a> (every run of every point) ·
<a href='comparison.csv'>comparison.csv</a></p>
<p>Executed notebooks: {links}</p>
</body></html>
"""
    atomic_write_text(root / "sweep.html", page)
    return root / "sweep.html"
