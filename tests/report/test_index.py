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


SUMMARY_COLUMNS = ["notebook", "run", "accuracy", "ci_low", "ci_high", "status", "original", "train_seconds",
                   "weights", "device"]


def test_summary_csv_one_failed_row_per_failed_notebook_then_every_run_with_its_weights_and_device(tmp_path):
    """summary.csv: a failed notebook is one "(notebook failed)" row even when it wrote a metrics.json before it
    failed (its partial runs are not results), and the notebooks after it still get their rows; the device is the
    device's name where metrics.json has one, else the device; no index column."""
    results = [NotebookResult("q2", status="failed"), NotebookResult("q1", status="failed", error="kernel died"),
               NotebookResult("q3")]
    partial = {"runs": {"svm": {"accuracy": 0.9, "status": "ok"}}, "weights": "imagenet", "device": "cpu"}
    q3 = {"runs": {"adam": {"accuracy": 0.75, "status": "ok", "train_seconds": 4.5}}, "weights": "none",
          "device": "cuda", "device_name": "NVIDIA H100"}
    build_index(tmp_path, "smoke", results, {"q1": partial, "q3": q3}, {})
    text = (tmp_path / "summary.csv").read_text()
    assert text.splitlines()[0] == ",".join(SUMMARY_COLUMNS)
    summary = pd.read_csv(tmp_path / "summary.csv", keep_default_na=False, dtype=str)
    assert summary.to_dict("records") == [
        {"notebook": "q2", "run": "(notebook failed)", "accuracy": "", "ci_low": "", "ci_high": "", "status": "failed",
         "original": "", "train_seconds": "", "weights": "", "device": ""},
        {"notebook": "q1", "run": "(notebook failed)", "accuracy": "", "ci_low": "", "ci_high": "", "status": "failed",
         "original": "", "train_seconds": "", "weights": "", "device": ""},
        {"notebook": "q3", "run": "adam", "accuracy": "0.75", "ci_low": "", "ci_high": "", "status": "ok",
         "original": "0.8233", "train_seconds": "4.5", "weights": "none", "device": "NVIDIA H100"}]


def test_summary_device_falls_back_to_the_device_and_a_notebook_without_metrics_fails(tmp_path):
    """A metrics.json without a device name (older files) shows its device ("cpu"); a notebook that ran but
    left no metrics.json gets a failed row rather than breaking the index."""
    results = [NotebookResult("q3"), NotebookResult("q1")]
    q3 = {"runs": {"sgd": {"accuracy": 0.5, "status": "at_chance"}}, "weights": "none", "device": "cpu"}
    build_index(tmp_path, "cpu", results, {"q3": q3}, {})
    summary = pd.read_csv(tmp_path / "summary.csv", keep_default_na=False)
    assert summary[["notebook", "run", "status", "weights", "device"]].values.tolist() == [
        ["q3", "sgd", "at_chance", "none", "cpu"], ["q1", "(notebook failed)", "failed", "", ""]]


def test_index_lists_each_notebook_with_its_title_time_forecast_outcome_files_and_reductions(tmp_path):
    """Each notebook's line: its title from its own parameters (q1 trained a ResNet-50 here, not the default
    ResNet-18), its seconds and forecast (only where `labkit plan` gave one), ok or FAILED with its error (an
    empty message for a failure that gave none), its files, and what its parameters reduce against the full
    profile (real data, cpu profile)."""
    q1_params = {"profile": "cpu", "data_source": "real", "arch": "resnet50", "image_size": 64}
    results = [NotebookResult("q1", seconds=130.4, forecast_seconds=125.6, files={"notebook": "q1/q1.html",
                                                                                  "metrics": "q1/metrics.json"}),
               NotebookResult("q2", status="failed", error="kernel died", seconds=3.0),
               NotebookResult("q3", status="failed", seconds=2.0)]
    written = {"q1": {"runs": {}, "weights": "imagenet", "device": "cpu", "params": q1_params}}
    page = build_index(tmp_path, "cpu", results, written, {"profile": "cpu", "device": "cpu"}).read_text()
    items = re.findall(r"<li>(.*?)</li>", page)
    assert items == [
        "<b>Q1 · STL-10 transfer learning (ResNet-50)</b> (130 s, forecast 126 s, ok): <a href='q1/q1.html'>notebook"
        "</a> · <a href='q1/metrics.json'>metrics</a><br><span class='note'>Reduced against the full profile (the "
        "original's setting): image_size 64 (full: 224)</span>",
        "<b>Q2 · Tiny ImageNet losses (ResNet-18)</b> (3 s, <span class='failed'>FAILED: kernel died</span>): ",
        "<b>Q3 · Dogs vs Cats optimizers (small CNN)</b> (2 s, <span class='failed'>FAILED: </span>): "]
    assert "<title>labkit report (cpu)</title>" in page and "profile <code>cpu</code>" in page
    assert "<tr><th>profile</th><td>cpu</td></tr><tr><th>device</th><td>cpu</td></tr>" in page


def test_index_links_every_sweep_of_this_profile(tmp_path):
    for name in ("q2", "q1"):
        (tmp_path / "sweeps" / name).mkdir(parents=True)
        (tmp_path / "sweeps" / name / "sweep.html").write_text("<html></html>")
    (tmp_path / "sweeps" / "q3").mkdir()
    (tmp_path / "sweeps" / "q3" / "notes.html").write_text("not a sweep page")
    page = build_index(tmp_path, "cpu", [], {}, {}).read_text()
    assert "<p>Sweeps: <a href='sweeps/q1/sweep.html'>q1</a> · <a href='sweeps/q2/sweep.html'>q2</a></p>" in page
    assert "Sweeps:" not in build_index(tmp_path / "none", "cpu", [], {}, {}).read_text()


def _claims_csv(path, rows):
    columns = ["notebook", "claim_id", "claim", "runs", "direction", "stated", "original", "ours", "test", "p_holm",
               "verdict", "confounds", "ranking"]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{c: row.get(c, "") for c in columns} for row in rows]).to_csv(path, index=False)


def test_index_shows_every_notebooks_claims_with_holm_p_values_and_the_verdicts_counts(tmp_path):
    """The claims of every notebook that wrote a claims.csv, in order; p (Holm) to 3 significant digits, empty
    where there is none; empty cells stay empty (not "nan"), "NA" is a text like any other; the heading counts
    the verdicts without the ranking's own row; on synthetic data a note says the verdicts test the pipeline."""
    _claims_csv(tmp_path / "q3" / "claims.csv", [
        {"notebook": "q3", "claim": "adam beats sgd", "runs": "adam > sgd", "original": "82.85 % vs 63.94 %",
         "ours": "80.0 % vs 60.0 %", "test": "paired t-test", "p_holm": 0.0123456, "verdict": "reproduced",
         "confounds": "NA"},
        {"notebook": "q3", "claim": "sgd beats bs1", "runs": "sgd > sgd_bs1", "test": "a run was skipped",
         "verdict": "not run"},
        {"notebook": "q3", "claim": "the ranking adam > sgd > sgd_bs1", "runs": "adam > sgd > sgd_bs1",
         "test": "every adjacent pair above", "verdict": "not run"}])
    _claims_csv(tmp_path / "q1" / "claims.csv", [
        {"notebook": "q1", "claim": "fine-tuning beats the SVM", "runs": "finetune > svm", "test": "McNemar",
         "p_holm": 0.5, "verdict": "inconclusive", "confounds": "epochs"}])
    results = [NotebookResult("q3"), NotebookResult("q2"), NotebookResult("q1")]  # q2 wrote no claims
    synthetic = {"runs": {}, "weights": "none", "device": "cpu", "params": {"data_source": "synthetic"}}
    page = build_index(tmp_path, "smoke", results, {"q3": synthetic}, {}).read_text()
    assert "<h2>The original's claims: 1 reproduced, 0 contradicted, 1 inconclusive, 1 not run</h2>" in page
    rows = re.findall(r"<tr class='(\w+)'><td>(\w+)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>"
                      r"<td>([^<]*)</td><td>([^<]*)</td><td class='num'>([^<]*)</td><td><b>[^<]*</b></td>"
                      r"<td>([^<]*)</td></tr>", page)
    assert rows == [
        ("reproduced", "q3", "adam beats sgd", "adam &gt; sgd", "82.85 % vs 63.94 %", "80.0 % vs 60.0 %",
         "paired t-test", "0.0123", "NA"),
        ("not_run", "q3", "sgd beats bs1", "sgd &gt; sgd_bs1", "", "", "a run was skipped", "", ""),
        ("not_run", "q3", "the ranking adam &gt; sgd &gt; sgd_bs1", "adam &gt; sgd &gt; sgd_bs1", "", "",
         "every adjacent pair above", "", ""),
        ("inconclusive", "q1", "fine-tuning beats the SVM", "finetune &gt; svm", "", "", "McNemar", "0.5", "epochs")]
    assert "Synthetic data (the demo and smoke profiles): these verdicts test the pipeline" in page
    real = {**synthetic, "params": {"data_source": "real"}}
    page = build_index(tmp_path, "full", results, {"q3": real, "q1": real}, {}).read_text()
    assert "Synthetic data" not in page and "The original's claims: 1 reproduced" in page
    assert "Synthetic data" in build_index(tmp_path, "full", results, {"q3": real, "q1": synthetic}, {}).read_text()
    assert "The original's claims" not in build_index(tmp_path, "full", [NotebookResult("q2")], {}, {}).read_text()
