"""What every notebook does with its runs: train each distinct run once, summarise over seeds with a
Wilson interval beside the original's number, record to metrics.json, compare pairs with McNemar."""
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from labkit import metrics
from labkit.questions.experiments import (Outcome, Runner, failure_note, noise_verdicts, plottable, pretty, record,
                                         summarize, verdict_text)
from labkit.results import Results
from labkit.runs import Run
from labkit.training.loop import History


def outcome(name, correct, n=10, seed=0, diverged=False, **extra):
    """A run whose first ``correct`` of ``n`` test predictions are right."""
    y_true = np.arange(n) % 3
    y_pred = np.where(np.arange(n) < correct, y_true, (y_true + 1) % 3)
    history = History(status="diverged" if diverged else "ok")
    return Outcome(name, {"lr": 1e-3}, seed, history, y_true, y_pred, extra)


def test_outcome_accuracy():
    assert outcome("a", 7).accuracy == 0.7
    assert outcome("a", 7, diverged=True).accuracy is None
    assert Outcome("a", {}, 0, None, np.array([]), np.array([])).accuracy is None


def test_summarize_over_seeds():
    table = summarize({"adam": [outcome("adam", 8, macro_f1=0.75), outcome("adam", 6, seed=1, macro_f1=0.65)],
                       "sgd": [outcome("sgd", 9, macro_f1=None)]}, "q3", chance=0.1)
    assert list(table.index) == ["adam", "sgd"]
    assert list(table.columns) == ["accuracy", "std_over_seeds", "seeds", "seeds_ok", "ci_low", "ci_high", "status",
                                   "original",
                                   "error", "train_seconds", "train_images_per_second", "epochs", "updates",
                                   "torch_threads",
                                   "macro_f1"]
    adam = table.loc["adam"]
    assert adam["accuracy"] == pytest.approx(0.7) and adam["seeds"] == 2
    assert adam["std_over_seeds"] == pytest.approx(np.std([0.8, 0.6], ddof=1)) == pytest.approx(0.141421, abs=1e-6)
    assert (adam["ci_low"], adam["ci_high"]) == metrics.wilson_interval(7, 10)  # the mean, on the test set's n
    assert adam["ci_low"] == pytest.approx(0.3968, abs=1e-4) and adam["ci_high"] == pytest.approx(0.8922, abs=1e-4)
    assert adam["status"] == "ok" and adam["original"] == 0.8233 and adam["macro_f1"] == pytest.approx(0.7)
    sgd = table.loc["sgd"]
    assert sgd["accuracy"] == 0.9 and sgd["seeds"] == 1 and pd.isna(sgd["std_over_seeds"])  # missing: NaN
    assert sgd["original"] == 0.6394 and pd.isna(sgd["macro_f1"])


def test_summarize_status_and_missing_numbers():
    table = summarize({"low": [outcome("low", 1)],
                       "half_diverged": [outcome("half_diverged", 9), outcome("half_diverged", 0, 10, 1, True)],
                       "diverged": [outcome("diverged", 5, diverged=True)]}, "q9", chance=0.5)
    assert table.loc["low", "status"] == "below_chance"  # 10 %, the whole interval below 50 %
    half = table.loc["half_diverged"]
    assert half["status"] == "diverged" and half["accuracy"] == 0.9  # the seed that finished
    gone = table.loc["diverged"]
    assert gone["status"] == "diverged" and pd.isna(gone["accuracy"]) and pd.isna(gone["ci_low"])
    assert table["original"].isna().all()  # no original number for an unknown notebook


def test_summarize_averages_each_cost_over_the_seeds_that_have_it():
    first, second = outcome("adam", 8), outcome("adam", 6, seed=1)
    first.cost = {"train_seconds": 10.0, "epochs": 3, "updates": 30, "torch_threads": 2}
    second.cost = {"train_seconds": 20.0, "epochs": 3, "torch_threads": 4}  # no update count
    adam = summarize({"adam": [first, second]}, "q3", chance=0.5).loc["adam"]
    assert (adam["train_seconds"], adam["epochs"], adam["updates"]) == (15.0, 3.0, 30.0)
    assert pd.isna(adam["train_images_per_second"]) and adam["torch_threads"] == 4  # the most any seed had


def test_summarize_takes_chance_from_the_test_sets_majority_class_unless_given():
    y = np.array([0] * 16 + [1] * 4)  # the majority class holds 80 % of the test set

    def run(name, right):
        return [Outcome(name, {}, 0, None, y, np.where(np.arange(20) < right, y, 1 - y))]

    broken = [Outcome("broken", {}, 0, None, np.array([]), np.array([]), error="RuntimeError: boom")]
    outcomes = {"majority": run("majority", 16), "perfect": run("perfect", 20), "broken": broken}
    # 16 of 20: Wilson 58.4-91.9 % holds 80 %; 20 of 20: 83.9-100 %, above it
    assert summarize(outcomes, "q3")["status"].to_dict() == {"majority": "at_chance", "perfect": "ok",
                                                             "broken": "failed"}
    assert summarize(outcomes, "q3", chance=0.5).loc["majority", "status"] == "ok"  # 58.4 % > 50 %
    assert summarize(outcomes, "q3").loc["broken", "error"] == "RuntimeError: boom"  # the run's own error


@pytest.mark.filterwarnings("error")
def test_missing_numbers_stay_empty_without_numpy_warnings():
    """One seed has no spread, a diverged run no accuracy, a metric or a cost that no seed gave no mean: each is
    left empty, not computed from nothing (numpy's "Mean of empty slice" in the notebook)."""
    table = summarize({"one_seed": [outcome("one_seed", 8, macro_f1=None)],
                       "diverged": [outcome("diverged", 5, diverged=True), outcome("diverged", 5, 10, 1, True)]},
                      "q3", chance=0.5)
    empty = table[["accuracy", "std_over_seeds", "macro_f1", "train_seconds"]].isna()
    assert empty.values.tolist() == [[False, True, True, True], [True, True, True, True]]


def test_record_writes_every_summarised_run(tmp_path):
    adam = outcome("adam", 8, macro_f1=0.75)
    adam.cost = {"torch_threads": 2}  # trained with 2 threads (its share of a shared CPU)
    table = summarize({"adam": [adam], "sgd": [outcome("sgd", 3, macro_f1=None)],
                       "broken": [outcome("broken", 0, diverged=True, macro_f1=None)]}, "q3", chance=0.5)
    results = Results("q3", "smoke", "none", "cpu", {}, tmp_path)
    record(results, table)
    written = json.loads((tmp_path / "metrics.json").read_text())
    runs = written["runs"]
    # the thread count goes beside the run: a run's own entry keeps the contract's keys (metrics are fractions)
    assert written["torch_threads_per_run"] == {"adam": 2}
    low, high = metrics.wilson_interval(8, 10)
    no_cost = {"train_seconds": None, "train_images_per_second": None, "epochs": None, "updates": None,
               "seeds": 1, "seeds_ok": 1}
    # 8 of 10 against chance 0.5: the interval (0.49-0.94) holds chance, so the run is at chance
    assert runs["adam"] == {"accuracy": 0.8, "status": "at_chance", "accuracy_ci_low": low, "accuracy_ci_high": high,
                            **no_cost, "macro_f1": 0.75}
    assert runs["sgd"]["status"] == "at_chance" and runs["sgd"]["macro_f1"] is None
    assert runs["broken"] == {"accuracy": None, "status": "diverged", "accuracy_ci_low": None,
                              "accuracy_ci_high": None, **no_cost, "seeds_ok": 0, "macro_f1": None}


def test_record_writes_errors_resolved_settings_and_every_seeds_predictions(tmp_path):
    from labkit.data.core import ImageSet
    y = np.array([0, 1, 1, 0])
    adam = [Outcome("adam", {"lr": 0.001, "precision": "bf16"}, seed, None, y, pred)
            for seed, pred in ((0, np.array([0, 1, 1, 1])), (1, np.array([0, 1, 0, 0])))]
    broken = [Outcome("broken", {"lr": 10.0}, 0, None, np.array([]), np.array([]), error="RuntimeError: boom")]
    outcomes = {"adam": adam, "broken": broken}
    test = ImageSet(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.tensor(y), ["cat", "dog"])
    record(Results("q3", "smoke", "none", "cpu", {}, tmp_path), summarize(outcomes, "q3", 0.5), outcomes, test,
           ["Cat", "Dog"])
    written = json.loads((tmp_path / "metrics.json").read_text())
    broken = written["runs"]["broken"]
    assert broken["status"] == "failed" and broken["error"] == "RuntimeError: boom"
    assert written["run_settings"] == {"adam": {"lr": 0.001, "precision": "bf16"}, "broken": {"lr": 10.0}}
    saved = np.load(tmp_path / "predictions.npz")  # the failed run has none
    assert saved["classes"].tolist() == ["Cat", "Dog"] and saved["labels"].tolist() == [0, 1, 1, 0]
    assert saved["run"].tolist() == ["adam", "adam"] and saved["seed"].tolist() == [0, 1]
    assert saved["predictions"].tolist() == [[0, 1, 1, 1], [0, 1, 0, 0]]


def test_record_and_pretty_read_a_table_without_the_optional_columns(tmp_path):
    """A table without ``seeds_ok`` (every seed counted) and without ``train_seconds`` (no time shown)."""
    table = pd.DataFrame({"accuracy": [0.75], "std_over_seeds": [0.05], "seeds": [2], "ci_low": [0.5],
                          "ci_high": [0.9], "status": ["at_chance"], "original": [None]}, index=["sgd"])
    record(Results("q3", "smoke", "none", "cpu", {}, tmp_path), table)
    assert json.loads((tmp_path / "metrics.json").read_text())["runs"]["sgd"] == {
        "accuracy": 0.75, "status": "at_chance", "accuracy_ci_low": 0.5, "accuracy_ci_high": 0.9, "seeds": 2,
        "seeds_ok": 2}
    assert pretty(table).loc["sgd"].tolist() == ["75.00", "50.00-90.00", "5.00", "", "", "AT CHANCE"]


def test_pretty_columns_and_flags():
    table = summarize({"adam": [outcome("adam", 8)], "sgd_bs1": [outcome("sgd_bs1", 1)],
                       "broken": [outcome("broken", 0, diverged=True)]}, "q3", chance=0.5)
    view = pretty(table)
    assert list(view.columns) == ["ours (%)", "95 % CI", "original report (%)", "train time (s)", "status"]
    low, high = metrics.wilson_interval(8, 10)
    assert view.loc["adam"].tolist() == ["80.00", f"{100 * low:.2f}-{100 * high:.2f}", "82.33", "", "AT CHANCE"]
    assert view.loc["sgd_bs1"].tolist()[2:] == ["43.24", "", "BELOW CHANCE"]
    assert view.loc["broken"].tolist() == ["", "", "", "", "DIVERGED"]  # no number, and no original for it
    several = pretty(summarize({"adam": [outcome("adam", 8), outcome("adam", 6, seed=1)]}, "q3", chance=0.5))
    assert list(several.columns) == ["ours (%)", "95 % CI", "std over seeds", "original report (%)",
                                     "train time (s)", "status"]
    assert several.loc["adam", "std over seeds"] == "14.14"


def test_pretty_shows_the_train_time_a_partial_mean_and_no_flag_for_an_ok_run():
    finished, diverged = outcome("adam", 9), outcome("adam", 0, seed=1, diverged=True)
    finished.cost = {"train_seconds": 12.34}
    view = pretty(summarize({"adam": [finished, diverged], "sgd": [outcome("sgd", 7)]}, "q3", chance=0.1))
    assert list(view.columns) == ["ours (%)", "95 % CI", "std over seeds", "original report (%)", "train time (s)",
                                  "status"]
    low, high = metrics.wilson_interval(9, 10)
    assert view.loc["adam"].tolist() == ["90.00 (1 of 2 seeds)", f"{100 * low:.2f}-{100 * high:.2f}", "", "82.33",
                                         "12.3", "DIVERGED"]
    low, high = metrics.wilson_interval(7, 10)
    assert view.loc["sgd"].tolist() == ["70.00", f"{100 * low:.2f}-{100 * high:.2f}", "", "63.94", "", ""]


def test_noise_verdicts_with_one_seed_judge_networks_by_mcnemar():
    y = np.zeros(10, dtype=int)

    def run(name, wrong, diverged=False):
        pred = np.where(np.arange(10) < wrong, 1, 0)
        return [Outcome(name, {}, 0, History(status="diverged" if diverged else "ok"), y, pred)]

    outcomes = {"a": run("a", 0), "b": run("b", 6), "c": run("c", 2), "d": run("d", 0, diverged=True)}
    table = noise_verdicts(outcomes, ["a", "b", "c", "d"])
    assert list(table.columns) == ["run A", "run B", "accuracy A", "accuracy B", "A - B", "seeds", "test", "p",
                                   "Holm p", "verdict"]
    assert table[["run A", "run B"]].values.tolist() == [["a", "b"], ["a", "c"], ["b", "c"]]  # d diverged
    # a right and b wrong on 6 images, never the other way: exact two-sided p = 2 x 0.5^6
    raw = [2 * 0.5 ** 6, 2 * 0.5 ** 2, 2 * 0.5 ** 4]
    assert table["p"].tolist() == pytest.approx(raw)
    # Holm over the three pairs: smallest x 3, next x 2 (kept monotone), largest x 1
    assert table["Holm p"].tolist() == pytest.approx([3 * raw[0], raw[1], 2 * raw[2]])
    assert table["verdict"].tolist() == ["these two trained networks do not differ (one seed: not a verdict on "
                                         "the recipes)"] * 3  # 0.094 after correction: not below 0.05
    assert table.loc[0, ["accuracy A", "accuracy B", "A - B"]].tolist() == pytest.approx([1.0, 0.4, 0.6])
    assert noise_verdicts(outcomes, ["a"]).empty


def test_noise_verdicts_over_seeds_keep_the_direction():
    """A seed won by A and a seed won by B cancel out (a per-seed vote counted both as "real")."""
    y = np.zeros(2000, dtype=int)

    def seeds(name, wrongs):
        return [Outcome(name, {}, k, History(), y, np.where(np.arange(2000) < w, 1, 0)) for k, w in enumerate(wrongs)]

    balanced = noise_verdicts({"a": seeds("a", [300, 500, 400]), "b": seeds("b", [500, 300, 400])}, ["a", "b"])
    assert balanced.loc[0, "verdict"] == "within noise" and balanced.loc[0, "A - B"] == pytest.approx(0.0)
    steady = noise_verdicts({"a": seeds("a", [100, 110, 90]), "b": seeds("b", [300, 320, 290])}, ["a", "b"])
    assert steady.loc[0, "verdict"] == "real difference: a better" and steady.loc[0, "seeds"] == 3
    diffs = np.array([200, 210, 200]) / 2000
    assert steady.loc[0, "p"] == pytest.approx(metrics.seed_test(list(diffs), [0, 0, 0])[1])
    assert "a vs b: real difference: a better" in verdict_text(steady)


def question(train):
    """A question whose train_and_test is ``train(run)``."""
    from types import SimpleNamespace
    return SimpleNamespace(train_and_test=lambda run, data, device, keep_checkpoints: train(run))


def test_equal_settings_train_once():
    calls = []

    def train(run):
        calls.append(run.name)
        return Outcome(run.name, run.settings, run.seed, None, np.array([0]), np.array([0]), {"macro_f1": 1.0},
                       cost={"train_seconds": 5.0})

    runner = Runner(question(train), None, None)
    out = runner({"adam": [Run("adam", {"lr": 1}, 0)], "adam_bs64": [Run("adam_bs64", {"lr": 1}, 0)],
                  "other_seed": [Run("other_seed", {"lr": 1}, 1)]})
    assert calls == ["adam", "other_seed"] and out["adam_bs64"][0].name == "adam_bs64"
    assert out["adam_bs64"][0].y_pred is out["adam"][0].y_pred
    out["adam_bs64"][0].metrics["macro_f1"] = 0.0  # each name's record is its own
    out["adam_bs64"][0].cost["train_seconds"] = 0.0
    assert out["adam"][0].metrics == {"macro_f1": 1.0} and out["adam"][0].cost == {"train_seconds": 5.0}
    assert [out[name][0].seed for name in out] == [0, 0, 1]
    runner({"adam_again": [Run("adam_again", {"lr": 1}, 0)], "sgd": [Run("sgd", {"lr": 2}, 0)]})
    assert calls == ["adam", "other_seed", "sgd"]  # the runner remembers across parts of a notebook
    assert runner({}) == {}
    assert isinstance(summarize(out, "q3", 0.5), pd.DataFrame)


def test_each_name_records_the_settings_its_training_resolved():
    def train(run):  # as the questions do: "auto" resolved on the device before the key and the record
        return Outcome(run.name, {**run.settings, "precision": "bf16"}, run.seed, None, np.array([0]), np.array([0]))

    out = Runner(question(train), None, None)({"adam": [Run("adam", {"lr": 1, "precision": "auto"}, 0)],
                                               "adam_bs64": [Run("adam_bs64", {"lr": 1, "precision": "auto"}, 0)]})
    assert out["adam"][0].settings == out["adam_bs64"][0].settings == {"lr": 1, "precision": "bf16"}
    assert out["adam"][0].settings is not out["adam_bs64"][0].settings


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")],
                         ids=["OutOfMemoryError", "RuntimeError"])
def test_out_of_gpu_memory_fails_the_run_with_a_smaller_batch_size_suggested(error, capsys):
    def train(run):
        if run.name == "big":
            raise error
        return Outcome(run.name, run.settings, run.seed, None, np.array([0, 1]), np.array([0, 1]))

    out = Runner(question(train), None, None)({"big": [Run("big", {"batch_size": 256}, 0)],
                                               "small": [Run("small", {"batch_size": 32}, 0)]})
    assert out["big"][0].error == (f"{type(error).__name__}: CUDA out of memory. Tried to allocate 2.00 GiB (out of "
                                   f"memory at batch_size=256: try a smaller batch_size)")
    assert out["big"][0].accuracy is None and out["small"][0].accuracy == 1.0  # the other runs go on
    table = summarize(out, "q3", 0.5)
    assert table.loc["big", "status"] == "failed" and table.loc["small", "status"] != "failed"
    assert "out of memory" in capsys.readouterr().err  # the traceback, for whoever reads the log


def test_a_failed_run_keeps_the_first_line_of_its_error_and_has_no_predictions(capsys):
    errors = {"long": ValueError("  bad value\n  more detail  "), "silent": RuntimeError()}

    def train(run):
        raise errors[run.name]

    out = Runner(question(train), None, None)({"long": [Run("long", {"lr": 1}, 3)],
                                               "silent": [Run("silent", {"lr": 2}, 3)]})
    assert out["long"][0].error == "ValueError: bad value" and out["silent"][0].error == "RuntimeError: "
    failed = out["long"][0]
    assert failed.seed == 3 and failed.y_true.size == failed.y_pred.size == 0


def test_the_runner_hands_every_run_its_data_device_and_checkpoint_policy():
    seen = []

    def train_and_test(run, data, device, keep_checkpoints):
        seen.append((run.name, data, device, keep_checkpoints))
        return Outcome(run.name, run.settings, run.seed, None, np.array([0]), np.array([0]))

    notebook = SimpleNamespace(train_and_test=train_and_test)
    Runner(notebook, "the data", "cuda:1")({"adam": [Run("adam", {"lr": 1}, 0)]})
    Runner(notebook, "the data", "cpu", keep_checkpoints="all")({"sgd": [Run("sgd", {"lr": 2}, 0)]})
    assert seen == [("adam", "the data", "cuda:1", "final"), ("sgd", "the data", "cpu", "all")]


def test_a_part_shows_its_table_names_its_failed_runs_or_says_it_was_skipped(monkeypatch):
    import IPython.display
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objects: shown.extend(objects))

    def train_and_test(run, data, device, keep_checkpoints):
        if run.name == "sgd":
            raise RuntimeError("CUDA error: device-side assert triggered")
        y = np.arange(10) % 2
        return Outcome(run.name, run.settings, run.seed, None, y, np.where(np.arange(10) < 8, y, 5))  # 80 %

    q3 = SimpleNamespace(__name__="labkit.questions.q3_optimizers", train_and_test=train_and_test)
    runner = Runner(q3, None, None)
    plan = {"optimizers": {"adam": [Run("adam", {"lr": 1}, 0)], "sgd": [Run("sgd", {"lr": 2}, 0)]},
            "betas": {"adam_b2": [Run("adam_b2", {"lr": 3}, 0)]}, "order": {}}
    assert list(runner.part(plan, "optimizers", "(a)", "runs_optimizers", table=True)) == ["adam"]
    table, note = shown
    # the table is Q3's (the runner found the question's key): the original report's numbers beside ours
    assert table.loc["adam", ["ours (%)", "original report (%)"]].tolist() == ["80.00", "82.33"]
    assert table.loc["sgd", "status"] == "FAILED"
    assert note.data == ("**Failed** (the other runs went on; not in the figures): "
                         "`sgd`: RuntimeError: CUDA error: device-side assert triggered.")
    shown.clear()
    assert list(runner.part(plan, "betas", "(d)", "runs_betas")) == ["adam_b2"] and shown == []  # no table asked
    assert runner.part(plan, "order", "(c)", "runs_order", table=True) == {}
    (skipped,) = shown
    assert skipped.data == "*(c): skipped (no runs in `runs_order`).*"
    assert {part: list(runs) for part, runs in runner.parts.items()} == {"optimizers": ["adam", "sgd"],
                                                                          "betas": ["adam_b2"], "order": []}


def test_the_conclusion_is_the_questions_findings_or_says_that_nothing_ran():
    from labkit.questions.experiments import conclusion
    q = SimpleNamespace(findings=lambda summary, parts, P: f"{list(summary.index)} in {list(parts)}, "
                                                           f"seeds {P['seeds']}")
    summary = summarize({"adam": [outcome("adam", 8)]}, "q3", 0.5)
    assert conclusion(q, summary, {"optimizers": {}}, {"seeds": [0, 1]}) == "['adam'] in ['optimizers'], seeds [0, 1]"
    assert conclusion(q, summary.iloc[:0], {}, {"seeds": [0]}) == "*Conclusion: skipped (no runs in `the run lists`).*"


def test_figures_leave_failed_runs_out_and_name_them():
    failed = Outcome("sgd", {}, 0, None, np.array([]), np.array([]), error="RuntimeError: out of memory")
    part = {"adam": [outcome("adam", 8)], "sgd": [failed], "broken": [outcome("broken", 0, diverged=True)]}
    assert list(plottable(part)) == ["adam", "broken"]  # a diverged run still has curves to show
    assert failure_note(part) == ("**Failed** (the other runs went on; not in the figures): "
                                  "`sgd`: RuntimeError: out of memory.")
    seed_1 = Outcome("adam", {}, 1, None, np.array([]), np.array([]), error="ValueError: bad batch")
    part = {"adam": [outcome("adam", 8), seed_1], "sgd": [failed], "ok": [outcome("ok", 5)]}
    assert failure_note(part) == ("**Failed** (the other runs went on; not in the figures): "
                                  "`adam`: ValueError: bad batch; `sgd`: RuntimeError: out of memory.")
    assert failure_note({"adam": [outcome("adam", 8)]}) == ""


def test_holm_keeps_its_running_maximum_on_non_monotone_inputs():
    """p = 0.01 0.04 0.03 0.005 (m = 4), sorted 0.005 0.01 0.03 0.04, times 4 3 2 1: 0.02 0.03 0.06 0.04; the
    largest is not allowed below the one before it (step-down: running maximum), so 0.04 -> 0.06."""
    from labkit.questions.experiments import holm
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # 0.5 x 2 = 1.0 (capped at 1), then max(1.0, 0.6)
    assert holm([0.9, 0.6]) == [1.0, 1.0]  # 0.6 x 2 = 1.2: a probability, capped at 1; then max(1.0, 0.9)
    assert holm([0.2, 0.01, 0.3]) == pytest.approx([0.4, 0.03, 0.4])  # 0.03, 0.4, max(0.4, 0.3)
    assert holm([0.04]) == [0.04] and holm([]) == []


def test_a_run_with_no_test_images_failed_and_a_partial_mean_says_so():
    """Nothing to score is not "ok"; a mean over the seeds that survived says how many of all."""
    empty = Outcome("empty", {}, 0, None, np.array([], dtype=int), np.array([], dtype=int))
    table = summarize({"empty": [empty], "adam": [outcome("adam", 8), outcome("adam", 0, seed=1, diverged=True),
                                                  outcome("adam", 6, seed=2)]}, "q3", chance=0.5)
    assert table.loc["empty", "status"] == "failed" and table.loc["empty", "error"] == "no test images"
    assert (table.loc["adam", "seeds"], table.loc["adam", "seeds_ok"]) == (3, 2)
    assert pretty(table).loc["adam", "ours (%)"] == "70.00 (2 of 3 seeds)"


def test_finish_records_whether_the_data_were_generated(tmp_path):
    """metrics.json's data_generated: true for data a generator wrote (GENERATED.json in the data's folder: the
    demo's sets, or real-size ones), false for real data; the index flags real-data runs by it."""
    from types import SimpleNamespace

    from labkit.questions.experiments import finish
    folder = tmp_path / "data"
    folder.mkdir()
    for marked in (False, True):
        if marked:
            (folder / "GENERATED.json").write_text(json.dumps({"real_size": True}))
        runner = Runner(question(None), SimpleNamespace(source=str(folder)), None)
        results = Results("q3", "smoke", "none", "cpu", {}, tmp_path / f"out{marked}")
        finish(results, runner, None)
        assert json.loads((tmp_path / f"out{marked}" / "metrics.json").read_text())["data_generated"] is marked


def test_finish_summarises_records_and_writes_the_summary_table(tmp_path):
    from labkit.data.core import ImageSet
    from labkit.questions.experiments import finish
    y = np.array([0, 0, 0, 1])  # the majority class: 75 %

    def train(run):
        return Outcome(run.name, run.settings, run.seed, None, y, y if run.name == "adam" else 1 - y)

    (tmp_path / "data").mkdir()
    runner = Runner(question(train), SimpleNamespace(source=str(tmp_path / "data")), None)
    runner({"adam": [Run("adam", {"lr": 0.001}, 0)], "sgd": [Run("sgd", {"lr": 0.1}, 0)]})
    test = ImageSet(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.tensor(y), ["cat", "dog"])
    out = tmp_path / "out"
    summary = finish(Results("q3", "smoke", "none", "cpu", {}, out), runner, test, ["Cat", "Dog"], chance=0.01)
    # against the given chance (1 %): 4 of 4 is above it (Wilson 51-100 %), 0 of 4 holds it (0-49 %); against the
    # majority class's 75 % they would be at and below chance
    assert summary["status"].to_dict() == {"adam": "ok", "sgd": "at_chance"}
    assert summary["original"].tolist() == [0.8233, 0.6394]  # the notebook's (Q3's) original numbers
    written = json.loads((out / "metrics.json").read_text())
    assert {name: run["status"] for name, run in written["runs"].items()} == {"adam": "ok", "sgd": "at_chance"}
    assert written["run_settings"] == {"adam": {"lr": 0.001}, "sgd": {"lr": 0.1}} and written["finished"]
    saved = np.load(out / "predictions.npz")
    assert saved["classes"].tolist() == ["Cat", "Dog"] and saved["predictions"].tolist() == [[0, 0, 0, 1], [1, 1, 1, 0]]
    csv = pd.read_csv(out / "summary.csv", index_col=0)
    assert csv["accuracy"].to_dict() == {"adam": 1.0, "sgd": 0.0} and csv["status"].tolist() == ["ok", "at_chance"]


# ----------------------------------------------------------------------------- pair_test, each branch by hand

def _outcome(name, seed, right, n=20, wrong_first=False):
    """A run whose predictions are right on ``right`` of ``n`` images (the first ones, or the last ones)."""
    y_true = np.zeros(n, dtype=int)
    hits = np.arange(n) >= n - right if wrong_first else np.arange(n) < right
    return Outcome(name, {}, seed, None, y_true, np.where(hits, 0, 1))


def test_pair_test_of_two_deterministic_methods_is_mcnemar_on_the_same_images():
    from labkit.questions.experiments import _power_margin, pair_test
    a, b = [_outcome("svm", 0, 16)], [_outcome("zero_shot", 0, 10, wrong_first=True)]
    # a right on images 0-15, b on 10-19: only a on 0-9 (10), only b on 16-19 (4), n = 20
    t = pair_test(a, b, {"svm", "zero_shot"}, similar=False, margin=0.0)
    assert t["d"] == pytest.approx(0.8 - 0.5) and t["seeds"] == 1 and t["recipe"] is True
    assert (t["low"], t["high"]) == metrics.paired_difference_interval(4, 10, 20, 0.95)
    assert t["p"] == metrics.mcnemar(a[0].y_true, a[0].y_pred, b[0].y_pred)
    se = np.sqrt(10 + 4 - (10 - 4) ** 2 / 20) / 20
    # the margin of 10**6 degrees of freedom (about the normal quantiles, 2.80159), to every digit claims.csv keeps
    assert t["min_detectable"] == pytest.approx(_power_margin(10 ** 6) * se, rel=1e-12)
    assert t["test"].startswith("McNemar, same test images (deterministic methods")
    similar = pair_test(a, b, {"svm", "zero_shot"}, similar=True, margin=0.02)
    assert (similar["low"], similar["high"]) == metrics.paired_difference_interval(4, 10, 20, 0.90)


def test_pair_test_of_one_seed_each_judges_two_networks_not_recipes():
    from labkit.questions.experiments import pair_test
    t = pair_test([_outcome("adam", 3, 12)], [_outcome("sgd", 3, 15)], set(), similar=False, margin=0.0)
    assert t["recipe"] is False and t["d"] == pytest.approx(-0.15) and t["seeds"] == 1
    assert t["test"] == ("McNemar, one seed: these two trained networks differ or not on this test set; one "
                         "training run cannot judge a recipe")
    # a deterministic method against one training seed: still one trained network, not a recipe
    against_svm = pair_test([_outcome("svm", 0, 12)], [_outcome("finetune", 3, 15)], {"svm"}, similar=False,
                            margin=0.0)
    assert against_svm["recipe"] is False and against_svm["test"] == t["test"]


def test_pair_test_of_two_methods_that_agree_on_every_image_finds_nothing_to_detect():
    from labkit.questions.experiments import pair_test
    t = pair_test([_outcome("svm", 0, 15)], [_outcome("zero_shot", 0, 15)], {"svm", "zero_shot"}, similar=False,
                  margin=0.0)
    assert (t["d"], t["low"], t["high"], t["p"], t["min_detectable"]) == (0.0, 0.0, 0.0, 1.0, 0.0)


@pytest.mark.parametrize("recipe_first", [True, False])
def test_pair_test_of_seeds_against_a_deterministic_method_is_a_one_sample_t_test(recipe_first):
    from labkit.questions.experiments import _power_margin, pair_test
    seeds = [_outcome("finetune", k, right) for k, right in enumerate((18, 16, 17))]  # 0.90, 0.80, 0.85
    fixed = [_outcome("svm", 0, 16)]  # 0.80
    a, b = (seeds, fixed) if recipe_first else (fixed, seeds)
    t = pair_test(a, b, {"svm"}, similar=False, margin=0.0)
    diffs = np.array([0.10, 0.0, 0.05]) * (1 if recipe_first else -1)  # always a - b
    assert t["d"] == pytest.approx(diffs.mean()) and t["seeds"] == 3 and t["recipe"] is True
    assert t["p"] == pytest.approx(metrics.seed_test(list(diffs), [0.0] * 3)[1])
    assert (t["low"], t["high"]) == pytest.approx(metrics.mean_interval(diffs, 0.95))
    assert t["min_detectable"] == pytest.approx(_power_margin(3) * diffs.std(ddof=1) / np.sqrt(3))
    assert t["test"] == "one-sample t-test of the per-seed differences against the deterministic method"


def test_pair_test_of_two_recipes_pairs_seed_k_with_seed_k_over_the_common_seeds():
    from labkit.questions.experiments import _power_margin, pair_test
    a = [_outcome("adam", k, right) for k, right in ((0, 20), (1, 18), (2, 15), (4, 19))]
    b = [_outcome("sgd", k, right) for k, right in ((1, 14), (2, 15), (3, 2), (4, 11))]
    t = pair_test(a, b, set(), similar=True, margin=0.02)
    diffs = np.array([18 - 14, 15 - 15, 19 - 11]) / 20  # seeds 1, 2 and 4; seeds 0 and 3 have no partner
    assert t["d"] == pytest.approx(diffs.mean()) and t["seeds"] == 3 and t["recipe"] is True
    assert (t["low"], t["high"]) == pytest.approx(metrics.mean_interval(diffs, 0.90))  # a "similar" claim: 90 %
    assert t["p"] == pytest.approx(metrics.seed_test(list(diffs), [0.0] * 3)[1])
    assert t["min_detectable"] == pytest.approx(_power_margin(3) * diffs.std(ddof=1) / np.sqrt(3))
    assert t["test"] == "paired t-test over seeds (seed k with seed k)"
    one_common = pair_test(a, [_outcome("sgd", 1, 14), _outcome("sgd", 3, 2)], set(), similar=False, margin=0.0)
    assert one_common == {"d": None, "low": None, "high": None, "p": None, "min_detectable": None, "seeds": 1,
                          "recipe": False, "test": "fewer than 2 common seeds"}


def test_pair_test_of_two_recipes_with_two_common_seeds_is_a_t_test():
    from labkit.questions.experiments import pair_test
    a = [_outcome("adam", k, right) for k, right in ((0, 18), (1, 16))]
    b = [_outcome("sgd", k, right) for k, right in ((0, 14), (1, 14))]
    t = pair_test(a, b, set(), similar=False, margin=0.0)
    diffs = np.array([0.2, 0.1])  # 18 - 14 and 16 - 14 of 20
    assert t["seeds"] == 2 and t["recipe"] is True and t["test"] == "paired t-test over seeds (seed k with seed k)"
    assert t["d"] == pytest.approx(0.15) and t["p"] == pytest.approx(metrics.seed_test(list(diffs), [0.0, 0.0])[1])
    # one degree of freedom: t_0.975 = 12.7062, t_0.80 = 1.3764 (t tables); the differences' standard error 0.05
    assert t["min_detectable"] == pytest.approx((12.7062 + 1.3764) * 0.05, abs=1e-5)


def test_the_power_margin_is_t_0975_plus_t_080_with_n_minus_1_degrees_of_freedom():
    from labkit.questions.experiments import _power_margin
    assert _power_margin(3) == pytest.approx(4.302653 + 1.060660, abs=1e-5)  # t tables, 2 degrees of freedom
    assert _power_margin(5) == pytest.approx(2.776445 + 0.940965, abs=1e-5)  # 4 degrees of freedom


def test_one_seed_verdicts_speak_of_two_networks_and_seed_verdicts_name_the_better_run():
    one = noise_verdicts({"a": [_outcome("a", 0, 200, n=400)], "b": [_outcome("b", 0, 330, n=400)],
                          "c": [_outcome("c", 0, 201, n=400)]}, ["a", "b", "c"])
    rows = {(r["run A"], r["run B"]): r["verdict"] for _, r in one.iterrows()}
    assert rows[("a", "b")] == "these two trained networks differ (one seed: not a verdict on the recipes)"
    assert rows[("a", "c")] == "these two trained networks do not differ (one seed: not a verdict on the recipes)"
    seeds = noise_verdicts({"a": [_outcome("a", k, r, n=400) for k, r in enumerate((200, 204, 198, 201, 199))],
                            "b": [_outcome("b", k, r, n=400) for k, r in enumerate((300, 305, 297, 301, 302))]},
                           ["a", "b"])
    (row,) = seeds.to_dict("records")
    assert row["verdict"] == "real difference: b better" and row["A - B"] < 0 and row["Holm p"] < 0.05


def test_a_holm_p_of_exactly_the_significance_level_is_not_a_difference(monkeypatch):
    """Significant means p below 0.05, as in the claims' verdicts: a p of exactly 0.05 is within noise."""
    real_seed_test = metrics.seed_test
    monkeypatch.setattr(metrics, "mcnemar", lambda *args: metrics.SIGNIFICANCE)
    monkeypatch.setattr(metrics, "seed_test", lambda a, b: (real_seed_test(a, b)[0], metrics.SIGNIFICANCE))
    one = noise_verdicts({"a": [_outcome("a", 0, 20)], "b": [_outcome("b", 0, 2)]}, ["a", "b"])
    assert one.loc[0, "Holm p"] == 0.05
    assert one.loc[0, "verdict"] == "these two trained networks do not differ (one seed: not a verdict on the recipes)"
    seeds = noise_verdicts({"a": [_outcome("a", k, 20 - k) for k in range(3)],
                            "b": [_outcome("b", k, 2 + 2 * k) for k in range(3)]}, ["a", "b"])
    assert seeds.loc[0, "Holm p"] == 0.05 and seeds.loc[0, "verdict"] == "within noise"


def test_verdict_text_names_each_pairs_test():
    verdicts = pd.DataFrame([
        {"run A": "adam", "run B": "sgd", "seeds": 2, "test": "paired t-test over seeds (seed k with seed k)",
         "Holm p": 0.0123456, "verdict": "real difference: adam better"},
        {"run A": "finetune", "run B": "svm", "seeds": 3,
         "test": "one-sample t-test of the per-seed differences against the deterministic method", "Holm p": 0.5,
         "verdict": "within noise"},
        {"run A": "svm", "run B": "zero_shot", "seeds": 1, "test": "McNemar, same test images (deterministic methods: "
         "this is the recipe test)", "Holm p": 0.0004, "verdict": "real difference: svm better"}])
    assert verdict_text(verdicts) == (
        "adam vs sgd: real difference: adam better (Holm-adjusted p = 0.0123, paired t-test over 2 seeds); "
        "finetune vs svm: within noise (Holm-adjusted p = 0.5, one-sample t-test over 3 seeds); "
        "svm vs zero_shot: real difference: svm better (Holm-adjusted p = 0.0004, McNemar)")
