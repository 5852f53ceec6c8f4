"""The report's index page: one summary row per run of every notebook (beside the original's number), the
claims' verdicts, links to every page, and the facts of the run (``index.html``, ``summary.csv``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from labkit.paths import atomic_write_text
from labkit.questions import registry
from labkit.questions.reference import reference_accuracy
from labkit.report.pages import render
from labkit.results import FLAGS
from labkit.text import is_number, percent


@dataclass
class NotebookResult:
    key: str
    status: str = "ok"  # "ok" or "failed"
    error: str | None = None
    seconds: float = 0.0
    forecast_seconds: float | None = None  # what `labkit plan` predicted before it ran
    files: dict = field(default_factory=dict)  # label -> path relative to the report folder


def summary_rows(results: list[NotebookResult], written: dict[str, dict]) -> pd.DataFrame:
    """One row per run of every notebook, from its metrics.json (``written``: notebook -> its contents),
    with the original report's number."""
    rows = []
    for r in results:
        if r.status == "failed" or r.key not in written:
            rows.append({"notebook": r.key, "run": "(notebook failed)", "accuracy": None, "ci_low": None,
                         "ci_high": None, "status": "failed", "original": None, "train_seconds": None,
                         "weights": None, "device": None})
            continue
        m = written[r.key]
        for name, run in m["runs"].items():
            rows.append({"notebook": r.key, "run": name, "accuracy": run.get("accuracy"),
                         "ci_low": run.get("accuracy_ci_low"), "ci_high": run.get("accuracy_ci_high"),
                         "status": run.get("status"), "original": reference_accuracy(r.key, name),
                         "train_seconds": run.get("train_seconds"), "weights": m.get("weights"),
                         "device": m.get("device_name") or m.get("device")})
    return pd.DataFrame(rows)


def _percent(v) -> str:
    return percent(v, 2, sign=False)


def _seconds(v) -> str:
    return f"{float(v):.1f}" if is_number(v) else ""


def claims_table(root: Path, results: list[NotebookResult]) -> tuple[list[dict], str]:
    """Every notebook's ``claims.csv`` as rows for the index, and the verdicts' counts ("7 reproduced, ...")."""
    from labkit.questions.claims import counts
    tables = [pd.read_csv(root / r.key / "claims.csv", keep_default_na=False)
              for r in results if (root / r.key / "claims.csv").exists()]
    if not tables:
        return [], ""
    table = pd.concat(tables, ignore_index=True)
    rows = [{"notebook": r["notebook"], "claim": r["claim"], "runs": r["runs"], "original": r["original"],
             "ours": r["ours"], "test": r["test"], "p_holm": f"{float(r['p_holm']):.3g}" if is_number(r["p_holm"])
             else "", "verdict": r["verdict"], "confounds": r["confounds"]} for _, r in table.iterrows()]
    return rows, counts(table)


def _reductions(key: str, params: dict | None) -> list[str]:
    """What a notebook's parameters (as its metrics.json keeps them) reduce against the full profile."""
    if not params or registry.QUESTIONS[key].module is None:
        return []
    return registry.reductions(key, params)


def build_index(root: Path, profile: str, results: list[NotebookResult], written: dict[str, dict],
                facts: dict) -> Path:
    """``index.html`` (from ``templates/pages/index.html.j2``): facts, links to every page, and the summary table
    (also ``summary.csv``)."""
    table = summary_rows(results, written)
    atomic_write_text(root / "summary.csv", table.to_csv(index=False))
    rows = [{"status": row["status"], "notebook": row["notebook"], "run": row["run"],
             "accuracy": _percent(row["accuracy"]), "original": _percent(row["original"]),
             "ci": f"{_percent(row['ci_low'])}–{_percent(row['ci_high'])}" if is_number(row["ci_low"]) else "",
             "seconds": _seconds(row["train_seconds"]), "flag": FLAGS.get(row["status"], "")}
            for _, row in table.iterrows()]
    notebooks = [{"title": registry.title(r.key, written.get(r.key, {}).get("params")), "seconds": f"{r.seconds:.0f}",
                  "forecast": f"{r.forecast_seconds:.0f}" if r.forecast_seconds is not None else "",
                  "reduced": _reductions(r.key, written.get(r.key, {}).get("params")),
                  "error": (r.error or "") if r.status == "failed" else None, "files": r.files} for r in results]
    # sweeps written under this profile's folder (reports/<profile>/sweeps/<nb>/) get a link each
    sweeps = [(p.parent.name, p.relative_to(root).as_posix()) for p in sorted(root.glob("sweeps/*/sweep.html"))]
    claims, claim_counts = claims_table(root, results)
    synthetic = any(m.get("params", {}).get("data_source") != "real" for m in written.values())
    # real data that a generator wrote (labkit data --generate-real-size): its own sentence, at the top
    generated = sorted(key for key, m in written.items()
                       if m.get("params", {}).get("data_source") == "real" and m.get("data_generated"))
    page = render("index.html.j2", profile=profile, facts=facts, notebooks=notebooks, sweeps=sweeps, rows=rows,
                  claims=claims, claim_counts=claim_counts, synthetic=synthetic, generated=generated)
    atomic_write_text(root / "index.html", page)
    return root / "index.html"
