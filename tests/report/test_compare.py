"""`python -m labkit compare A B`: hand-made reports (metrics.json and predictions.npz written by the real
Results and experiments.record) with known differences, then the smoke report against itself and against a
Q3 run whose one learning rate changed."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from labkit import metrics
from labkit.report import compare
from labkit.cli import main as cli
from labkit.data import ImageSet
from labkit.questions.experiments import Outcome, record, summarize
from labkit.results import Results, same_numbers


def image_set(n: int, seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    return ImageSet(torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8, generator=g), labels, ["cat", "dog"],
                    ids=[f"img{i}.jpg" for i in range(n)])


def predictions(labels: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    """Predictions right on a random ``accuracy`` share of the images."""
    rng = np.random.default_rng(seed)
    wrong = rng.permutation(len(labels))[:round((1 - accuracy) * len(labels))]
    pred = labels.copy()
    pred[wrong] = 1 - pred[wrong]
    return pred


def write_report(folder: Path, runs: dict, test: ImageSet, notebook: str = "q3", **overrides) -> Path:
    """A notebook folder as a notebook writes it. ``runs``: ``{name: {"settings": {...}, "seeds": {seed:
    (accuracy, rng seed)}, "seconds": s, "error": msg}}``."""
    labels = test.labels.numpy()
    params = {"lr": 1e-3, "seed": 0, "output_dir": str(folder), **overrides.pop("params", {})}
    results = Results(notebook, "smoke", "none", "cpu", params, folder)
    outcomes = {}
    for name, spec in runs.items():
        outcomes[name] = []
        for seed, (acc, rng) in spec["seeds"].items():
            if spec.get("error"):
                outcomes[name].append(Outcome(name, spec["settings"], seed, None, np.array([]), np.array([]),
                                              error=spec["error"]))
                continue
            pred = predictions(labels, acc, rng)
            outcomes[name].append(Outcome(name, spec["settings"], seed, None, labels, pred,
                                          cost={"train_seconds": spec.get("seconds", 1.0), "epochs": 2},
                                          confidence=np.full(len(labels), 0.75)))
    record(results, summarize(outcomes, notebook), outcomes, test)
    results.write()
    return folder


ADAM = {"optimizer": "adam", "lr": 1e-3, "batch_size": 64}
SGD = {"optimizer": "sgd", "lr": 1e-3, "batch_size": 64}


def two_runs(**adam) -> dict:
    return {"sgd": {"settings": SGD, "seeds": {0: (0.70, 1)}},
            "adam": {"settings": {**ADAM, **adam.pop("settings", {})}, "seeds": adam.pop("seeds", {0: (0.80, 2)}),
                     **adam}}


def run_cli(*args) -> int:
    return cli(["compare", *map(str, args)])


def test_a_report_compared_with_itself_is_identical(tmp_path):
    a = write_report(tmp_path / "a", two_runs(), image_set(200))
    result = compare.compare(a, a)
    (nb,) = result["notebooks"].values()
    assert nb["paired"] and not result["changed"] and not result["significant"]
    assert [r["test"] for r in nb["runs"]] == ["mcnemar", "mcnemar"]
    assert all(r["counts"][0]["only_a"] == r["counts"][0]["only_b"] == 0 for r in nb["runs"])
    assert run_cli(a, a, "--out", tmp_path, "--fail-on-change", "--fail-on-significant") == 0


def test_one_changed_learning_rate_changes_that_run_only_and_names_it(tmp_path, capsys):
    test = image_set(300)
    a = write_report(tmp_path / "a", two_runs(), test)
    b = write_report(tmp_path / "b", two_runs(settings={"lr": 1e-2}, seeds={0: (0.78, 9)}), test)
    result = compare.compare(a, b)
    runs = {r["run"]: r for r in result["notebooks"]["q3"]["runs"]}
    assert runs["adam"]["changed"] and runs["adam"]["changed_params"] == "lr"
    assert not runs["sgd"]["changed"] and runs["sgd"]["changed_params"] == ""
    assert runs["adam"]["per_class"] and {c["class"] for c in runs["adam"]["per_class"]} == {"cat", "dog"}
    assert run_cli(a, b, "--out", tmp_path) == 0  # no flag: a report, not a gate
    assert run_cli(a, b, "--out", tmp_path, "--fail-on-change") == 2
    out = capsys.readouterr().out
    assert "lr" in out and "adam" in out
    csv = pd.read_csv(tmp_path / "compare.csv")
    assert list(csv.columns) == compare.CSV_COLUMNS
    assert csv.set_index("run").loc["adam", "changed"] and not csv.set_index("run").loc["sgd", "changed"]
    html = (tmp_path / "compare.html").read_text()
    assert "data:image/png;base64," in html and "<td>lr</td>" in html


def test_counts_interval_and_mcnemar_match_a_hand_computation(tmp_path):
    test = image_set(400)
    a = write_report(tmp_path / "a", two_runs(), test)
    b = write_report(tmp_path / "b", two_runs(seeds={0: (0.60, 5)}), test)
    run = {r["run"]: r for r in compare.compare(a, b)["notebooks"]["q3"]["runs"]}["adam"]
    y = test.labels.numpy()
    pa, pb = predictions(y, 0.80, 2) == y, predictions(y, 0.60, 5) == y
    only_a, only_b = int((pa & ~pb).sum()), int((~pa & pb).sum())
    assert run["counts"] == [{"both_right": int((pa & pb).sum()), "only_a": only_a, "only_b": only_b,
                              "both_wrong": int((~pa & ~pb).sum())}]
    assert run["difference"] == pytest.approx(pb.mean() - pa.mean())
    # McNemar from scipy directly, and the paired Wald interval by hand
    from scipy.stats import binomtest
    assert run["p"] == pytest.approx(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    d, se = (only_b - only_a) / 400, np.sqrt(only_a + only_b - (only_b - only_a) ** 2 / 400) / 400
    assert (run["ci_low"], run["ci_high"]) == pytest.approx((d - 1.959964 * se, d + 1.959964 * se), abs=1e-6)
    assert run["significant"] and run["p_holm"] == pytest.approx(min(1.0, 2 * run["p"]))  # Holm over 2 runs
    assert run_cli(a, b, "--out", tmp_path, "--fail-on-significant") == 2


def test_different_test_sets_are_compared_unpaired(tmp_path):
    a = write_report(tmp_path / "a", two_runs(), image_set(200, seed=0))
    b = write_report(tmp_path / "b", two_runs(), image_set(240, seed=1))
    nb = compare.compare(a, b)["notebooks"]["q3"]
    assert not nb["paired"] and nb["test_images"] == [200, 240]
    assert {r["test"] for r in nb["runs"]} == {"two-proportion (Fisher)"}
    assert all(r["changed"] and not r["counts"] for r in nb["runs"])


def test_same_images_pair_whatever_their_cache_key(tmp_path):
    """The test set's identity is its pixels and labels, not the dataset's cache key (file times, code)."""
    test = image_set(100)
    other = ImageSet(test.images.clone(), test.labels.clone(), test.classes, key="another-key", ids=test.ids)
    assert test.identity() == other.identity()
    assert image_set(100, seed=1).identity() != test.identity()
    flipped = ImageSet(test.images, 1 - test.labels, test.classes)
    assert flipped.identity() != test.identity()


def test_several_seeds_add_a_seed_test_and_one_sided_seeds_are_listed(tmp_path):
    test = image_set(300)
    a = write_report(tmp_path / "a", two_runs(seeds={0: (0.80, 1), 1: (0.82, 2), 2: (0.79, 3)}), test)
    b = write_report(tmp_path / "b", two_runs(seeds={0: (0.70, 4), 1: (0.71, 5), 2: (0.69, 6), 3: (0.7, 7)}),
                     test)
    nb = compare.compare(a, b)["notebooks"]["q3"]
    adam = [r for r in nb["rows"] if r["run"] == "adam"]
    assert [r["seed"] for r in adam] == [0, 1, 2, "all"] and [r["test"] for r in adam] == ["mcnemar"] * 3 + [
        "seed t-test"]
    accs_a = [adam[k]["accuracy_a"] for k in range(3)]
    accs_b = [adam[k]["accuracy_b"] for k in range(3)]
    assert adam[-1]["p"] == pytest.approx(metrics.seed_test(accs_b, accs_a)[1])
    run = {r["run"]: r for r in nb["runs"]}["adam"]
    assert run["test"] == "seed t-test" and run["seeds"] == [0, 1, 2]
    assert nb["only_b"]["seeds"] == {"adam": [3]} and nb["only_a"]["seeds"] == {}


def test_a_run_failed_on_one_side_is_changed_and_not_tested(tmp_path):
    test = image_set(100)
    a = write_report(tmp_path / "a", two_runs(), test)
    b = write_report(tmp_path / "b", two_runs(error="RuntimeError: CUDA out of memory"), test)
    run = {r["run"]: r for r in compare.compare(a, b)["notebooks"]["q3"]["runs"]}["adam"]
    assert run["changed"] and run["p"] is None and run["status_b"] == "failed" and not run["significant"]
    assert compare.verdict(run) == "status ok -> failed"


def test_runs_on_one_side_only_are_listed_not_tested(tmp_path):
    test = image_set(100)
    a = write_report(tmp_path / "a", two_runs(), test)
    runs = two_runs()
    runs["momentum"] = {"settings": {**SGD, "momentum": 0.9}, "seeds": {0: (0.75, 3)}}
    b = write_report(tmp_path / "b", runs, test)
    result = compare.compare(a, b)
    assert result["notebooks"]["q3"]["only_b"]["runs"] == ["momentum"] and not result["changed"]


def test_timings_never_count_but_any_other_number_does(tmp_path):
    a = {"accuracy": 0.8, "status": "ok", "train_seconds": 3.0, "train_images_per_second": 10.0, "updates": 7}
    assert same_numbers(a, {**a, "train_seconds": 9.0, "train_images_per_second": 1.0})
    assert same_numbers(a, {**a, "accuracy": 0.8 * (1 + 1e-13)})  # the same formula, another library
    assert not same_numbers(a, {**a, "accuracy": 0.8 * (1 + 1e-9)})
    assert not same_numbers(a, {**a, "updates": 8})
    assert not same_numbers(a, {**a, "status": "at_chance"})
    assert not same_numbers(a, {**a, "macro_f1": 0.5})


def test_a_changed_probability_alone_counts_as_changed(tmp_path):
    test = image_set(100)
    a = write_report(tmp_path / "a", two_runs(), test)
    b = write_report(tmp_path / "b", two_runs(), test)
    blob = dict(np.load(b / "predictions.npz"))
    blob["probability"][1, 0] = np.float16(0.5)
    np.savez_compressed(b / "predictions.npz", **blob)
    runs = {r["run"]: r["changed"] for r in compare.compare(a, b)["notebooks"]["q3"]["runs"]}
    assert runs[str(blob["run"][1])] and sum(runs.values()) == 1


def test_json_prints_one_object_only(tmp_path):
    a = write_report(tmp_path / "a", two_runs(), image_set(100))
    out = subprocess.run([sys.executable, "-m", "labkit", "compare", str(a), str(a), "--json", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "LABKIT_ROOT": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["changed"] is False and result["notebooks"]["q3"]["paired"] is True


def test_provenance_is_compared(tmp_path):
    test = image_set(100)
    a = write_report(tmp_path / "a", two_runs(), test)
    b = write_report(tmp_path / "b", two_runs(), test, params={"seed": 3})
    m = json.loads((b / "metrics.json").read_text())
    m["versions"]["torch"] = "9.9.9"
    m["code_fingerprint"] = "abcdef012345"
    (b / "metrics.json").write_text(json.dumps(m))
    diff = compare.compare(a, b)["notebooks"]["q3"]["differences"]
    assert diff["version torch"][1] == "9.9.9" and diff["code_fingerprint"][1] == "abcdef012345"
    assert diff["param seed"] == [0, 3] and "param output_dir" not in diff


@pytest.mark.parametrize("case", ["empty", "profile_vs_notebook", "two_notebooks", "no_predictions", "missing"])
def test_bad_input_exits_1_with_one_line(tmp_path, capsys, case):
    test = image_set(50)
    q3 = write_report(tmp_path / "profile" / "q3", two_runs(), test)
    q2 = write_report(tmp_path / "other" / "q2", two_runs(), test, notebook="q2")
    (tmp_path / "empty").mkdir()
    args = {"empty": (tmp_path / "empty", q3), "profile_vs_notebook": (tmp_path / "profile", q3),
            "two_notebooks": (q3, q2), "no_predictions": (q3, q3), "missing": (tmp_path / "nowhere", q3)}[case]
    if case == "no_predictions":
        (q3 / "predictions.npz").unlink()
    assert run_cli(*args, "--out", tmp_path) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("labkit: error: ") and "\n" not in err
    expected = {"empty": "holds no metrics.json", "profile_vs_notebook": "is a profile folder and",
                "two_notebooks": "holds notebook q3", "no_predictions": "no predictions.npz",
                "missing": "is not a folder"}[case]
    assert expected in err


def test_profile_folders_compare_every_shared_notebook(tmp_path):
    test = image_set(60)
    for side in ("a", "b"):
        write_report(tmp_path / side / "q3", two_runs(), test)
    write_report(tmp_path / "a" / "q2", two_runs(), test, notebook="q2")
    result = compare.compare(tmp_path / "a", tmp_path / "b")
    assert result["kind"] == "profile" and list(result["notebooks"]) == ["q3"]
    assert result["notebooks_only_a"] == ["q2"] and not result["changed"]


# --------------------------------------------------------------------------- real notebooks

def test_the_smoke_report_compared_with_itself(smoke_report, tmp_path):
    root, _ = smoke_report
    assert run_cli(root, root, "--out", tmp_path, "--fail-on-change", "--fail-on-significant") == 0
    csv = pd.read_csv(tmp_path / "compare.csv")
    assert set(csv["notebook"]) == {"q1", "q2", "q3"} and csv["paired"].all() and not csv["changed"].any()
    for nb in ("q1", "q2", "q3"):
        blob = np.load(root / nb / "predictions.npz")
        m = json.loads((root / nb / "metrics.json").read_text())
        assert blob["predictions"].shape == (len(blob["run"]), len(blob["labels"])) == blob["probability"].shape
        assert blob["probability"].dtype == np.float16 and len(blob["ids"]) == len(blob["labels"])
        assert set(blob["run"]) == set(m["runs"]) and len(str(blob["test_identity"])) == 64
        assert m["code_fingerprint"] and set(m["versions"]) >= {"python", "torch", "torchvision", "numpy", "scipy",
                                                                 "scikit-learn", "pytorch-metric-learning"}
        assert set(m["run_settings"]) == set(m["runs"])
        for name in m["runs"]:  # the run's rows (one per seed) give its recorded accuracy, a mean over seeds
            rows = [i for i, r in enumerate(blob["run"]) if r == name]
            assert len(rows) == m["runs"][name]["seeds"]
            accuracy = np.mean([(blob["predictions"][i] == blob["labels"]).mean() for i in rows])
            assert accuracy == pytest.approx(m["runs"][name]["accuracy"])
    q3 = np.load(root / "q3" / "predictions.npz")
    assert all(i.startswith(("cat.", "dog.", "train/")) for i in q3["ids"])  # the photos' file names


def test_one_q3_learning_rate_changed_through_papermill(smoke_report, tmp_path):
    """The same smoke root (its caches: only the changed run trains again), Q3 with adam's lr changed."""
    reports, _ = smoke_report
    root = reports.parent.parent
    out = tmp_path / "q3"
    out.mkdir()
    runs = [{"name": "sgd_bs1", "optimizer": "sgd", "batch_size": 1, "lr": 0.001, "epochs": 1},
            {"name": "sgd", "optimizer": "sgd", "lr": 0.001},
            {"name": "sgd_momentum", "optimizer": "sgd", "lr": 0.001, "momentum": 0.9},
            {"name": "adam", "optimizer": "adam", "lr": 0.02}]
    import papermill
    import yaml
    from labkit.report.execute import private_kernels
    params = {**yaml.safe_load((root / "notebooks/params/smoke/q3.yaml").read_text()),
              "output_dir": str(out), "runs_optimizers": runs}
    with pytest.MonkeyPatch.context() as mp, private_kernels() as manager:
        mp.setenv("LABKIT_ROOT", str(root))
        papermill.execute_notebook(str(root / "notebooks/q3_dogs_vs_cats_optimizers.ipynb"), str(out / "q3.ipynb"),
                                   parameters=params, cwd=str(root / "notebooks"), progress_bar=False,
                                   kernel_manager_class=manager, execution_timeout=300)
    result = compare.compare(reports / "q3", out)
    runs = {r["run"]: r for r in result["notebooks"]["q3"]["runs"]}
    assert result["notebooks"]["q3"]["paired"]
    assert runs["adam"]["changed_params"] == "lr"
    assert [name for name, r in runs.items() if r["changed"]] == ["adam"]  # its probabilities moved, at least
    assert not any(r["changed_params"] for name, r in runs.items() if name != "adam")


def test_a_status_that_moves_within_the_contract_is_still_tested(tmp_path):
    """at_chance -> ok is a changed run with a test; only failed and diverged runs are left untested."""
    test = image_set(200)
    a = write_report(tmp_path / "a", two_runs(seeds={0: (0.50, 2)}), test)
    b = write_report(tmp_path / "b", two_runs(seeds={0: (0.90, 3)}), test)
    run = {r["run"]: r for r in compare.compare(a, b)["notebooks"]["q3"]["runs"]}["adam"]
    assert (run["status_a"], run["status_b"]) == ("at_chance", "ok")
    assert run["changed"] and run["test"] == "mcnemar" and run["significant"]
