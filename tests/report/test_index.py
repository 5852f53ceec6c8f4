"""The index page and summary.csv, built from hand-made metrics.json contents (no notebook runs here)."""
import re

import pandas as pd

from labkit.report.index import NotebookResult, build_index


def test_each_index_row_carries_its_own_runs_flag_and_numbers(tmp_path):
    """build_index on hand-made metrics.json contents: each row's flag is its own run's (a diverged run reads
    DIVERGED, a failed one FAILED, never each other's), with its accuracy, interval and the original's number;
    a notebook that failed gets one FAILED row."""
    runs = {"adam": {"accuracy": 0.8125, "accuracy_ci_low": 0.75, "accuracy_ci_high": 0.875, "status": "ok",
                     "train_seconds": 12.34},
            "sgd": {"accuracy": 0.5, "accuracy_ci_low": 0.4, "accuracy_ci_high": 0.6, "status": "at_chance"},
            "sgd_bs1": {"accuracy": 0.25, "accuracy_ci_low": 0.2, "accuracy_ci_high": 0.3, "status": "below_chance"},
            "sgd_momentum": {"accuracy": None, "status": "diverged"},
            "adam_bs16": {"accuracy": None, "status": "failed", "error": "RuntimeError: boom"}}
    results = [NotebookResult("q3"), NotebookResult("q2", status="failed", error="kernel died")]
    written = {"q3": {"runs": runs, "weights": "none", "device": "cpu"}}
    page = build_index(tmp_path, "smoke", results, written, {"profile": "smoke"}).read_text()
    rows = re.findall(r"<tr class='(\w+)'><td>(\w+)</td><td>([^<]+)</td><td class='num'>([^<]*)</td>"
                      r"<td class='num'>([^<]*)</td><td class='num'>([^<]*)</td><td class='num'>([^<]*)</td>"
                      r"<td>([^<]*)</td></tr>", page)
    assert rows == [
        ("ok", "q3", "adam", "81.25", "75.00–87.50", "82.33", "12.3", ""),
        ("at_chance", "q3", "sgd", "50.00", "40.00–60.00", "63.94", "", "AT CHANCE"),
        ("below_chance", "q3", "sgd_bs1", "25.00", "20.00–30.00", "43.24", "", "BELOW CHANCE"),
        ("diverged", "q3", "sgd_momentum", "", "", "75.79", "", "DIVERGED"),
        ("failed", "q3", "adam_bs16", "", "", "82.85", "", "FAILED"),
        ("failed", "q2", "(notebook failed)", "", "", "", "", "FAILED")]
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary["status"].tolist() == ["ok", "at_chance", "below_chance", "diverged", "failed", "failed"]
    assert summary["run"].tolist()[:5] == list(runs)


def test_the_index_flags_real_data_that_a_generator_wrote(tmp_path):
    """Runs on data_source real whose data came from ``labkit data --generate-real-size`` (metrics.json's
    data_generated) get a box of their own on the index; real data and the demo's synthetic data do not."""
    results = [NotebookResult("q1"), NotebookResult("q3")]
    run = {"runs": {}, "weights": "none", "device": "cpu"}

    def index(q1: dict, q3: dict) -> str:
        written = {"q1": {**run, **q1}, "q3": {**run, **q3}}
        return build_index(tmp_path, "cpu", results, written, {"profile": "cpu"}).read_text()

    real = {"params": {"data_source": "real"}, "data_generated": False}
    generated = {"params": {"data_source": "real"}, "data_generated": True}
    page = index(real, generated)
    assert "<div class='generated'>GENERATED DATA (q3): the datasets were drawn by" in page
    assert "Their accuracies are not results." in page and "Synthetic data (the demo" not in page
    assert "GENERATED DATA" not in index(real, real)
    demo = {"params": {"data_source": "synthetic"}, "data_generated": True}
    assert "GENERATED DATA" not in index(demo, demo)  # the demo has its own sentence
