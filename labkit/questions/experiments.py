"""What every notebook does with its runs: train (once per distinct setting and seed), evaluate the test
set once, record to metrics.json, and summarise across seeds beside the original report's numbers."""
from __future__ import annotations

import dataclasses

import traceback
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from labkit import metrics
from labkit.questions.reference import reference_accuracy
from labkit.questions.registry import QUESTIONS
from labkit.results import COST_KEYS, FLAGS, Results, run_status
from labkit.runs import Run, run_key
from labkit.text import is_number, percent
from labkit.training.loop import History


@dataclass
class Outcome:
    """One trained and tested run (one seed). A run that raised has ``error`` set and no predictions."""

    name: str
    settings: dict
    seed: int
    history: History | None
    y_true: np.ndarray
    y_pred: np.ndarray
    metrics: dict = field(default_factory=dict)  # the run's other metrics for metrics.json, fractions (macro_f1, ...)
    artifacts: dict = field(default_factory=dict)  # anything else the notebook wants to plot
    cost: dict = field(default_factory=dict)  # results.COST_KEYS, and the torch_threads a run trained with
    error: str | None = None
    confidence: np.ndarray | None = None  # each test image's predicted-class probability (None: no probabilities)

    @property
    def diverged(self) -> bool:
        return self.history is not None and self.history.status == "diverged"

    @property
    def accuracy(self) -> float | None:
        if self.diverged or self.error or not len(self.y_true):
            return None
        return float((self.y_true == self.y_pred).mean())


class Runner:
    """Trains and tests runs with the question's ``train_and_test(run, data, device)``, each distinct
    (settings, seed) once: two run names with equal settings share one training and each is recorded under its
    own name. ``keep_checkpoints`` (a notebook parameter) goes beside the runs: it never changes a key.

    A run that raises is recorded as failed, with its error, and the other runs go on (out of GPU memory
    says which ``batch_size`` was tried); an interrupt (Ctrl-C) still stops everything."""

    def __init__(self, question, data, device, keep_checkpoints: str = "final"):
        self.question, self.data, self.device, self.keep_checkpoints = question, data, device, keep_checkpoints
        self._done: dict[str, Outcome] = {}
        self.key = next((k for k, e in QUESTIONS.items() if e.module == getattr(question, "__name__", None)), None)
        self.outcomes: dict[str, list[Outcome]] = {}  # every run name so far, in the order they ran
        self.parts: dict[str, dict[str, list[Outcome]]] = {}  # the same by part, as :meth:`part` ran them

    def train_and_test(self, run: Run) -> Outcome:
        return self.question.train_and_test(run, self.data, self.device, keep_checkpoints=self.keep_checkpoints)

    def __call__(self, runs: dict[str, list[Run]]) -> dict[str, list[Outcome]]:
        out = {name: [self.one(run) for run in per_seed] for name, per_seed in runs.items()}
        self.outcomes.update(out)
        return out

    def part(self, plan: dict, part: str, label: str, param: str, table: bool = False) -> dict[str, list[Outcome]]:
        """Run one part of the notebook's plan and say what happened to it in the notebook: its summary table
        (with ``table``), a note naming the runs that failed, or that the part was skipped (``param``, its run
        list, is empty). Returns the runs that can be plotted (:func:`plottable`); all of them stay in
        :attr:`outcomes` and :attr:`parts`."""
        from IPython.display import Markdown, display

        from labkit.text import skipped
        outcomes = self.parts[part] = self(plan[part])
        if table and outcomes:
            display(pretty(summarize(outcomes, self.key)))
        note = failure_note(outcomes) if outcomes else skipped(label, param)
        if note:
            display(Markdown(note))
        return plottable(outcomes)

    def one(self, run: Run) -> Outcome:
        key = run_key("", run.settings, run.seed)
        if key not in self._done:
            try:
                self._done[key] = self.train_and_test(run)
            except Exception as err:  # noqa: BLE001 - recorded as a failed run, shown in the notebook
                traceback.print_exc()
                self._done[key] = Outcome(run.name, run.settings, run.seed, None, np.array([]), np.array([]),
                                          error=failure_message(err, run))
        done = self._done[key]  # recorded under this run's own name; its own copies of what a notebook may edit
        return dataclasses.replace(done, name=run.name, settings=run.settings, seed=run.seed, metrics=dict(done.metrics),
                                   cost=dict(done.cost))


def failure_message(err: Exception, run: Run) -> str:
    message = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    if "out of memory" in str(err).lower():
        message += f" (out of memory at batch_size={run.settings.get('batch_size')}: try a smaller batch_size)"
    return message


def plottable(part: dict[str, list[Outcome]]) -> dict[str, list[Outcome]]:
    """The runs of a part whose first seed has something to plot (it did not fail). Failed runs stay in the
    summary tables with their status and error; the figures leave them out and :func:`failure_note` says so."""
    return {name: runs for name, runs in part.items() if runs[0].error is None}


def failure_note(part: dict[str, list[Outcome]]) -> str:
    """One Markdown line naming the part's failed runs and their errors ("" when none failed)."""
    failed = {name: next(o.error for o in runs if o.error) for name, runs in part.items() if any(o.error for o in runs)}
    if not failed:
        return ""
    return "**Failed** (the other runs went on; not in the figures): " + "; ".join(
        f"`{name}`: {error}" for name, error in failed.items()) + "."


def summarize(outcomes: dict[str, list[Outcome]], notebook: str, chance: float | None = None) -> pd.DataFrame:
    """One row per run name: accuracy (mean over seeds), its spread, a 95 % Wilson interval for the
    test-set noise, status from that interval against chance (the test set's majority-class share unless
    given), cost, and the original report's number beside it."""
    rows = {}
    for name, runs in outcomes.items():
        accs = [o.accuracy for o in runs]
        ok = [a for a in accs if a is not None]
        tested = next((o for o in runs if len(o.y_true)), None)
        n = len(tested.y_true) if tested is not None else 0
        mean = float(np.mean(ok)) if ok else None
        low, high = metrics.wilson_interval(round(mean * n), n) if ok else (None, None)
        errors = [o.error for o in runs if o.error]
        level = chance if chance is not None else (metrics.majority_share(tested.y_true) if tested else None)
        status = run_status(mean, n, level, diverged=any(o.diverged for o in runs), failed=bool(errors))
        rows[name] = {"accuracy": mean, "std_over_seeds": float(np.std(ok, ddof=1)) if len(ok) > 1 else None,
                      "seeds": len(runs), "ci_low": low, "ci_high": high, "status": status,
                      "original": reference_accuracy(notebook, name), "error": errors[0] if errors else None}
        for key in COST_KEYS:
            vals = [o.cost[key] for o in runs if o.cost.get(key) is not None]
            rows[name][key] = float(np.mean(vals)) if vals else None
        threads = [o.cost["torch_threads"] for o in runs if o.cost.get("torch_threads") is not None]
        rows[name]["torch_threads"] = max(threads) if threads else None  # recorded beside the run, not in it
        for key in next((o.metrics for o in runs if o.metrics), {}):
            vals = [o.metrics.get(key) for o in runs if o.metrics.get(key) is not None]
            rows[name][key] = float(np.mean(vals)) if vals else None
    return pd.DataFrame.from_dict(rows, orient="index")


SUMMARY_COLUMNS = ("accuracy", "std_over_seeds", "seeds", "ci_low", "ci_high", "status", "original", "error",
                   "torch_threads")


def record(results: Results, table: pd.DataFrame, outcomes: dict[str, list[Outcome]] | None = None,
           test=None, classes: list[str] | None = None) -> None:
    """Write every summarised run into metrics.json, with its resolved settings; with ``outcomes`` and the
    ``test`` set (an ImageSet) also every run's and seed's predictions (``predictions.npz``)."""
    def value(v):
        return float(v) if is_number(v) else None

    outcomes = outcomes or {}
    for name, row in table.iterrows():
        extra = {k: value(v) for k, v in row.items() if k not in SUMMARY_COLUMNS}
        if isinstance(row.get("error"), str):
            extra["error"] = row["error"]
        threads = row.get("torch_threads")
        settings = outcomes[name][0].settings if outcomes.get(name) else None
        results.add_run(name, value(row["accuracy"]), status=row["status"], accuracy_ci_low=value(row["ci_low"]),
                        accuracy_ci_high=value(row["ci_high"]),
                        torch_threads=int(threads) if is_number(threads) else None, settings=settings, **extra)
    if test is not None:
        results.predictions(outcomes, test, classes)


def finish(results: Results, runner: Runner, test, classes: list[str] | None = None,
           chance: float | None = None) -> pd.DataFrame:
    """The notebook's summary: every run the runner ran, summarised over seeds (:func:`summarize`), recorded in
    metrics.json with its predictions (:func:`record`), written as ``summary.csv``; returned for the tables."""
    summary = summarize(runner.outcomes, results.data["notebook"], chance)
    record(results, summary, runner.outcomes, test, classes)
    results.table(summary, "summary")
    results.write()
    return summary


def conclusion(question, summary: pd.DataFrame, parts: dict, P: dict) -> str:
    """The question's findings for this run, or the note that nothing ran."""
    from labkit.text import skipped
    return question.findings(summary, parts, P) if len(summary) else skipped("Conclusion", "the run lists")


def pretty(table: pd.DataFrame) -> pd.DataFrame:
    """Percentages for reading; the training time; flags for every run that is not ok."""
    out = pd.DataFrame(index=table.index)

    def pct(v):
        return percent(v, 2, sign=False)

    out["ours (%)"] = [pct(v) for v in table["accuracy"]]
    out["95 % CI"] = [f"{pct(lo)}-{pct(hi)}" if is_number(lo) else "" for lo, hi in zip(table["ci_low"],
                                                                                        table["ci_high"])]
    if table["seeds"].max() > 1:
        out["std over seeds"] = [pct(v) for v in table["std_over_seeds"]]
    out["original report (%)"] = [pct(v) for v in table["original"]]
    seconds = table["train_seconds"] if "train_seconds" in table else [None] * len(table)
    out["train time (s)"] = [f"{v:.1f}" if is_number(v) else "" for v in seconds]
    out["status"] = [FLAGS.get(s, "") for s in table["status"]]
    return out


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: the family-wise error stays at the level over all the pairs tested."""
    order = np.argsort(p_values)
    m, adjusted, running = len(p_values), [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def noise_verdicts(outcomes: dict[str, list[Outcome]], names: list[str]) -> pd.DataFrame:
    """Pairwise: is the difference between two runs more than noise? For every training seed, McNemar's
    exact test on the same test images, Holm-adjusted over the pairs of the part; a pair is a "real
    difference" when the adjusted p < ``metrics.SIGNIFICANCE`` in a majority of the seeds. A run without
    a training seed (deterministic) is compared with every seed of the other."""
    names = [n for n in names if n in outcomes]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    seeds = max((len(outcomes[n]) for n in names), default=0)
    raw = {pair: [] for pair in pairs}
    adjusted = {pair: [] for pair in pairs}
    for k in range(seeds):
        tested = {}
        for a, b in pairs:
            oa, ob = outcomes[a][min(k, len(outcomes[a]) - 1)], outcomes[b][min(k, len(outcomes[b]) - 1)]
            if oa.accuracy is not None and ob.accuracy is not None:
                tested[(a, b)] = metrics.mcnemar(oa.y_true, oa.y_pred, ob.y_pred)
        for pair, p_adj in zip(tested, holm(list(tested.values()))):
            raw[pair].append(tested[pair])
            adjusted[pair].append(p_adj)
    rows = []
    for a, b in pairs:
        if not raw[(a, b)]:
            continue
        real = sum(p < metrics.SIGNIFICANCE for p in adjusted[(a, b)])
        acc_a = np.mean([o.accuracy for o in outcomes[a] if o.accuracy is not None])
        acc_b = np.mean([o.accuracy for o in outcomes[b] if o.accuracy is not None])
        rows.append({"run A": a, "run B": b, "accuracy A": acc_a, "accuracy B": acc_b,
                     "McNemar p": raw[(a, b)][0] if len(raw[(a, b)]) == 1 else raw[(a, b)],
                     "Holm p": adjusted[(a, b)][0] if len(adjusted[(a, b)]) == 1 else adjusted[(a, b)],
                     "real in seeds": f"{real} of {len(adjusted[(a, b)])}",
                     "verdict": "real difference" if real > len(adjusted[(a, b)]) / 2 else "within noise"})
    return pd.DataFrame(rows)


def verdict_text(verdicts: pd.DataFrame) -> str:
    """The pairwise verdicts as prose: "a vs b: within noise (Holm-adjusted p = 0.41); ..." with one seed,
    "a vs b: real difference in 2 of 3 seeds (Holm-adjusted p = 0.01, 0.03, 0.2)" with several."""
    def ps(v):
        return ", ".join(f"{p:.3g}" for p in (v if isinstance(v, list) else [v]))

    parts = []
    for _, row in verdicts.iterrows():
        several = isinstance(row["Holm p"], list)
        seeds = f" in {row['real in seeds']} seeds" if several and row["verdict"] == "real difference" else ""
        parts.append(f"{row['run A']} vs {row['run B']}: {row['verdict']}{seeds} (Holm-adjusted p = "
                     f"{ps(row['Holm p'])})")
    text = "; ".join(parts)
    if len(verdicts) and not isinstance(verdicts["Holm p"].iloc[0], list):
        text += " — one seed: a verdict from a single training run"
    return text
