"""What every notebook does with its runs: train (once per distinct setting and seed), evaluate the test
set once, record to metrics.json, and summarise across seeds beside the original report's numbers."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from labkit import metrics
from labkit.reference import reference_accuracy
from labkit.results import Results, run_status
from labkit.runs import Run, run_key
from labkit.text import is_number, percent
from labkit.train import History


@dataclass
class Outcome:
    """One trained and tested run (one seed)."""

    name: str
    settings: dict
    seed: int
    history: History | None
    y_true: np.ndarray
    y_pred: np.ndarray
    extra: dict = field(default_factory=dict)  # other fractions for metrics.json (macro_f1, ...)
    artifacts: dict = field(default_factory=dict)  # anything else the notebook wants to plot

    @property
    def diverged(self) -> bool:
        return self.history is not None and self.history.status == "diverged"

    @property
    def accuracy(self) -> float | None:
        if self.diverged or not len(self.y_true):
            return None
        return float((self.y_true == self.y_pred).mean())


class Runner:
    """Trains and tests runs with ``train_and_test(run) -> Outcome``, each distinct (settings, seed) once:
    two run names with equal settings share one training and each is recorded under its own name."""

    def __init__(self, train_and_test: Callable[[Run], Outcome]):
        self.train_and_test = train_and_test
        self._done: dict[str, Outcome] = {}

    def __call__(self, runs: dict[str, list[Run]]) -> dict[str, list[Outcome]]:
        return {name: [self.one(run) for run in per_seed] for name, per_seed in runs.items()}

    def one(self, run: Run) -> Outcome:
        key = run_key("", run.settings, run.seed)
        if key not in self._done:
            self._done[key] = self.train_and_test(run)
        done = self._done[key]
        return Outcome(run.name, run.settings, run.seed, done.history, done.y_true, done.y_pred, dict(done.extra),
                       done.artifacts)


def summarize(outcomes: dict[str, list[Outcome]], notebook: str, chance: float) -> pd.DataFrame:
    """One row per run name: accuracy (mean over seeds), its spread, a 95 % Wilson interval for the
    test-set noise, status, and the original report's number beside it."""
    rows = {}
    for name, runs in outcomes.items():
        accs = [o.accuracy for o in runs]
        ok = [a for a in accs if a is not None]
        n = len(runs[0].y_true)
        mean = float(np.mean(ok)) if ok else None
        low, high = metrics.wilson_interval(round(mean * n), n) if ok else (None, None)
        status = run_status(mean, chance, diverged=len(ok) < len(accs))
        rows[name] = {"accuracy": mean, "std_over_seeds": float(np.std(ok, ddof=1)) if len(ok) > 1 else None,
                      "seeds": len(runs), "ci_low": low, "ci_high": high, "status": status,
                      "original": reference_accuracy(notebook, name)}
        for key in runs[0].extra:
            vals = [o.extra.get(key) for o in runs if o.extra.get(key) is not None]
            rows[name][key] = float(np.mean(vals)) if vals else None
    return pd.DataFrame.from_dict(rows, orient="index")


def record(results: Results, table: pd.DataFrame) -> None:
    """Write every summarised run into metrics.json."""
    def value(v):
        return float(v) if is_number(v) else None

    for name, row in table.iterrows():
        extra = {k: value(v) for k, v in row.items()
                 if k not in ("accuracy", "std_over_seeds", "seeds", "ci_low", "ci_high", "status", "original")}
        results.add_run(name, value(row["accuracy"]), status=row["status"], accuracy_ci_low=value(row["ci_low"]),
                        accuracy_ci_high=value(row["ci_high"]), **extra)


def pretty(table: pd.DataFrame) -> pd.DataFrame:
    """Percentages for reading; flags for runs that diverged or ended below chance."""
    out = pd.DataFrame(index=table.index)

    def pct(v):
        return percent(v, 2, sign=False)

    out["ours (%)"] = [pct(v) for v in table["accuracy"]]
    out["95 % CI"] = [f"{pct(lo)}-{pct(hi)}" if is_number(lo) else "" for lo, hi in zip(table["ci_low"],
                                                                                        table["ci_high"])]
    if table["seeds"].max() > 1:
        out["std over seeds"] = [pct(v) for v in table["std_over_seeds"]]
    out["original report (%)"] = [pct(v) for v in table["original"]]
    out["status"] = [{"ok": "", "diverged": "DIVERGED", "below_chance": "BELOW CHANCE"}.get(s, s)
                     for s in table["status"]]
    return out


def noise_verdicts(outcomes: dict[str, list[Outcome]], names: list[str]) -> pd.DataFrame:
    """Pairwise: is the difference between two runs within noise? McNemar's exact test on the
    first seed's test predictions (paired, same test set), at ``metrics.SIGNIFICANCE``."""
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            oa, ob = outcomes[a][0], outcomes[b][0]
            if oa.accuracy is None or ob.accuracy is None:
                continue
            p = metrics.mcnemar(oa.y_true, oa.y_pred, ob.y_pred)
            rows.append({"run A": a, "run B": b, "accuracy A": oa.accuracy, "accuracy B": ob.accuracy,
                         "McNemar p": p, "verdict": metrics.verdict(p)})
    return pd.DataFrame(rows)
