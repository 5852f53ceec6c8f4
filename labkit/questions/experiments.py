"""What every notebook does with its runs: train (once per distinct setting and seed), evaluate the test
set once, record to metrics.json, and summarise across seeds beside the original report's numbers."""
from __future__ import annotations

import dataclasses

import traceback
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

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
        # the settings it trained with: the run's, as train_and_test resolved them (precision "auto" -> "bf16")
        return dataclasses.replace(done, name=run.name, settings={**run.settings, **done.settings}, seed=run.seed,
                                   metrics=dict(done.metrics), cost=dict(done.cost))


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
        if not errors and not n and not any(o.diverged for o in runs):
            errors = ["no test images"]  # nothing to score: not an accuracy, not "ok"
        level = chance if chance is not None else (metrics.majority_share(tested.y_true) if tested else None)
        status = run_status(mean, n, level, diverged=any(o.diverged for o in runs), failed=bool(errors))
        rows[name] = {"accuracy": mean, "std_over_seeds": float(np.std(ok, ddof=1)) if len(ok) > 1 else None,
                      "seeds": len(runs), "seeds_ok": len(ok), "ci_low": low, "ci_high": high, "status": status,
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


SUMMARY_COLUMNS = ("accuracy", "std_over_seeds", "seeds", "seeds_ok", "ci_low", "ci_high", "status", "original",
                   "error", "torch_threads")


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
                        accuracy_ci_high=value(row["ci_high"]), seeds=int(row["seeds"]),
                        seeds_ok=int(row.get("seeds_ok", row["seeds"])),
                        torch_threads=int(threads) if is_number(threads) else None, settings=settings, **extra)
    if test is not None:
        results.predictions(outcomes, test, classes)


def finish(results: Results, runner: Runner, test, classes: list[str] | None = None,
           chance: float | None = None) -> pd.DataFrame:
    """The notebook's summary: every run the runner ran, summarised over seeds (:func:`summarize`), recorded in
    metrics.json with its predictions (:func:`record`), written as ``summary.csv``; returned for the tables.
    ``data_generated`` says whether the data came from a generator (the demo's synthetic sets, or real-size ones
    in the real data's folder): the index flags real-data runs that did."""
    from labkit.data.marker import generated_marker
    results.data["data_generated"] = generated_marker(runner.data.source) is not None
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

    partial = [f" ({k:.0f} of {n:.0f} seeds)" if "seeds_ok" in table and 0 < k < n else ""
               for k, n in zip(table.get("seeds_ok", table["seeds"]), table["seeds"])]
    out["ours (%)"] = [pct(v) + note for v, note in zip(table["accuracy"], partial)]
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


def accuracies_by_seed(runs) -> dict[int, float] | None:
    """``{seed: accuracy}`` of a run, or None when a seed failed, diverged or had no test images."""
    if not runs or any(o.accuracy is None for o in runs):
        return None
    return {o.seed: o.accuracy for o in runs}


def _power_margin(n: int) -> float:
    """(t_0.975 + t_0.80) with n - 1 degrees of freedom: times the standard error, the smallest difference a
    two-sided 5 % test finds four times out of five."""
    return float(stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.80, n - 1))


def pair_test(a_runs, b_runs, deterministic: set[str], similar: bool, margin: float) -> dict:
    """The test of one pair of runs (lists of Outcomes): mean difference a - b, its interval (95 %, or 90 % for a
    "similar" claim), the smallest detectable difference, p and what the test can judge."""
    acc_a, acc_b = accuracies_by_seed(a_runs), accuracies_by_seed(b_runs)
    name_a, name_b = a_runs[0].name, b_runs[0].name
    det_a, det_b = name_a in deterministic, name_b in deterministic
    level = 0.90 if similar else 0.95
    if det_a and det_b or (len(acc_a) == 1 and len(acc_b) == 1):
        oa, ob = a_runs[0], b_runs[0]
        right_a, right_b = oa.y_pred == oa.y_true, ob.y_pred == ob.y_true
        only_a, only_b, n = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum()), len(oa.y_true)
        low, high = metrics.paired_difference_interval(only_b, only_a, n, level)  # a - b
        se = np.sqrt(max(only_a + only_b - (only_a - only_b) ** 2 / n, 0.0)) / n
        both_fixed = det_a and det_b
        test = ("McNemar, same test images (deterministic methods: this is the recipe test)" if both_fixed else
                "McNemar, one seed: these two trained networks differ or not on this test set; one training run "
                "cannot judge a recipe")
        return {"d": float(right_a.mean() - right_b.mean()), "low": low, "high": high, "p": metrics.mcnemar(
            oa.y_true, oa.y_pred, ob.y_pred), "min_detectable": _power_margin(10 ** 6) * se, "seeds": 1,
                "recipe": both_fixed, "test": test}
    if det_b or det_a:  # a recipe's seeds against one deterministic sample
        seeds = acc_a if det_b else acc_b
        fixed = next(iter((acc_b if det_b else acc_a).values()))
        diffs = np.array([v - fixed for v in seeds.values()]) * (1 if det_b else -1)
        test = "one-sample t-test of the per-seed differences against the deterministic method"
    else:
        common = sorted(set(acc_a) & set(acc_b))
        if len(common) < 2:
            return {"d": None, "low": None, "high": None, "p": None, "min_detectable": None, "seeds": len(common),
                    "recipe": False, "test": "fewer than 2 common seeds"}
        diffs = np.array([acc_a[k] - acc_b[k] for k in common])
        test = "paired t-test over seeds (seed k with seed k)"
    n = len(diffs)
    d, p = metrics.seed_test(list(diffs), [0.0] * n)
    low, high = metrics.mean_interval(diffs, level)
    se = float(diffs.std(ddof=1) / np.sqrt(n))
    return {"d": d, "low": low, "high": high, "p": p, "min_detectable": _power_margin(n) * se, "seeds": n,
            "recipe": True, "test": test}


def noise_verdicts(outcomes: dict[str, list[Outcome]], names: list[str], deterministic=()) -> pd.DataFrame:
    """Pairwise: is the difference between two runs more than noise, and which way? :func:`pair_test` for each
    pair (a paired t-test over the per-seed accuracies with two or more seeds, which judges recipes; McNemar on
    the same test images with one seed, which can only say whether these two trained networks differ), Holm over
    the pairs. Direction always counts: a seed won by A and a seed won by B cancel out."""
    names = [n for n in names if n in outcomes and accuracies_by_seed(outcomes[n]) is not None]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    tests = {pair: pair_test(outcomes[pair[0]], outcomes[pair[1]], set(deterministic), False, 0.0) for pair in pairs}
    tested = [pair for pair in pairs if tests[pair]["p"] is not None]
    rows = []
    for (a, b), p_holm in zip(tested, holm([tests[pair]["p"] for pair in tested])):
        t = tests[(a, b)]
        if not t["recipe"]:
            verdict = ("these two trained networks differ" if p_holm < metrics.SIGNIFICANCE else
                       "these two trained networks do not differ") + " (one seed: not a verdict on the recipes)"
        elif p_holm < metrics.SIGNIFICANCE:
            verdict = f"real difference: {a if t['d'] > 0 else b} better"
        else:
            verdict = "within noise"
        rows.append({"run A": a, "run B": b, "accuracy A": float(np.mean([o.accuracy for o in outcomes[a]])),
                     "accuracy B": float(np.mean([o.accuracy for o in outcomes[b]])), "A - B": t["d"],
                     "seeds": t["seeds"], "test": t["test"], "p": t["p"], "Holm p": p_holm, "verdict": verdict})
    return pd.DataFrame(rows)


def verdict_text(verdicts: pd.DataFrame) -> str:
    """The pairwise verdicts as prose: "a vs b: real difference: a better (Holm-adjusted p = 0.01, paired t-test
    over 3 seeds); ..." (against a deterministic method, which has no seeds to pair: "one-sample t-test")."""
    def test(row) -> str:
        if row["seeds"] <= 1:
            return "McNemar"
        kind = "one-sample" if str(row["test"]).startswith("one-sample") else "paired"
        return f"{kind} t-test over {row['seeds']} seeds"

    parts = [f"{row['run A']} vs {row['run B']}: {row['verdict']} (Holm-adjusted p = {row['Holm p']:.3g}, "
             f"{test(row)})" for _, row in verdicts.iterrows()]
    return "; ".join(parts)
