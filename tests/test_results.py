import json

import pytest

from labkit.results import Results, run_status


def test_metrics_json_contract(tmp_path):
    r = Results("q3", "smoke", "none", "cpu", {"lr": 1e-3, "betas": (0.9, 0.999)}, tmp_path / "out")
    r.add_run("adam", 0.8, status=run_status(0.8, 1200, 0.5), macro_f1=0.79, accuracy_ci_low=0.7,
              accuracy_ci_high=0.88, train_seconds=12.5, train_images_per_second=800.0, epochs=5, updates=60)
    r.add_run("sgd_bs1", 0.43, status=run_status(0.43, 1200, 0.5), torch_threads=1)
    r.add_run("broken", None, status=run_status(None, 1200, 0.5, diverged=True))
    r.add_run("oom", None, status=run_status(None, 0, 0.5, failed=True), error="OutOfMemoryError: ...")
    path = r.write()
    data = json.loads(path.read_text())
    assert set(data) == {"notebook", "profile", "weights", "device", "device_name", "torch_threads",
                         "torch_threads_per_run", "git_commit", "code_fingerprint", "versions", "params",
                         "run_settings", "started", "finished", "runs"}
    from labkit.paths import code_fingerprint
    assert data["code_fingerprint"] == code_fingerprint() and data["git_commit"]
    from importlib.metadata import version
    assert data["versions"]["torch"] == version("torch") and data["versions"]["scipy"] == version("scipy")
    assert list(data["versions"]) == ["python", "torch", "torchvision", "numpy", "scipy", "scikit-learn",
                                      "pytorch-metric-learning"]
    assert data["torch_threads_per_run"] == {"sgd_bs1": 1} and "torch_threads" not in data["runs"]["sgd_bs1"]
    assert data["finished"] is not None and data["params"]["betas"] == [0.9, 0.999]
    assert data["runs"]["adam"]["status"] == "ok" and data["runs"]["adam"]["train_seconds"] == 12.5
    assert data["runs"]["sgd_bs1"]["status"] == "below_chance"
    assert data["runs"]["broken"] == {"accuracy": None, "status": "diverged"}
    assert data["runs"]["oom"] == {"accuracy": None, "status": "failed", "error": "OutOfMemoryError: ..."}
    assert data["torch_threads"] >= 1 and data["device_name"]
    assert not list((tmp_path / "out").glob(".*tmp"))  # atomic writes leave no temporaries


def test_metrics_must_be_snake_case_fractions(tmp_path):
    r = Results("q1", "smoke", "standin", "cpu", {}, tmp_path)
    with pytest.raises(ValueError, match="fraction"):
        r.add_run("svm", 83.65, status="ok")
    with pytest.raises(ValueError, match="snake_case"):
        r.add_run("svm", 0.8, status="ok", MacroF1=0.5)
    with pytest.raises(ValueError, match="fraction"):
        r.add_run("svm", 0.8, status="ok", macro_f1=76)
    with pytest.raises(ValueError, match="number >= 0"):
        r.add_run("svm", 0.8, status="ok", train_seconds=-1)
    with pytest.raises(ValueError, match="status='great' is not allowed"):
        r.add_run("svm", 0.8, status="great")


def test_status_comes_from_the_wilson_interval_against_chance():
    from labkit.metrics import chance_status, majority_share
    assert chance_status(0.498, 1200, 0.5) == "at_chance"  # noise, not below chance
    assert chance_status(0.5, 1200, 0.5) == "at_chance"  # a model that predicts one class of two
    assert chance_status(0.46, 1200, 0.5) == "below_chance" and chance_status(0.54, 1200, 0.5) == "ok"
    assert chance_status(0.2, 100, 0.1) == "ok" and chance_status(0.12, 100, 0.1) == "at_chance"
    assert majority_share([0, 0, 0, 1]) == 0.75



def test_predictions_npz_holds_every_run_and_seed(tmp_path):
    import numpy as np
    import torch

    from labkit.data import ImageSet
    from labkit.questions.experiments import Outcome
    labels = np.array([0, 1, 1, 0, 1])
    test = ImageSet(torch.zeros(5, 3, 2, 2, dtype=torch.uint8), torch.as_tensor(labels), ["cat", "dog"],
                    ids=[f"cat.{i}.jpg" for i in range(5)])
    outcomes = {"adam": [Outcome("adam", {}, s, None, labels, (labels + s) % 2, confidence=np.full(5, 0.6 + s / 10))
                         for s in (0, 1)],
                "svm": [Outcome("svm", {}, 0, None, labels, np.array([1, 1, 1, 1, 1]))],  # no probabilities
                "oom": [Outcome("oom", {}, 0, None, np.array([]), np.array([]), error="OutOfMemoryError")]}
    path = Results("q3", "smoke", "none", "cpu", {}, tmp_path).predictions(outcomes, test)
    blob = np.load(path, allow_pickle=False)  # no pickles: plain arrays
    assert list(blob["run"]) == ["adam", "adam", "svm"] and list(blob["seed"]) == [0, 1, 0]
    assert blob["predictions"].tolist() == [[0, 1, 1, 0, 1], [1, 0, 0, 1, 0], [1, 1, 1, 1, 1]]
    assert blob["probability"].dtype == np.float16 and blob["probability"][1, 0] == np.float16(0.7)
    assert np.isnan(blob["probability"][2]).all()
    assert blob["labels"].tolist() == labels.tolist() and list(blob["ids"]) == [f"cat.{i}.jpg" for i in range(5)]
    assert list(blob["classes"]) == ["cat", "dog"] and str(blob["test_identity"]) == test.identity()


def test_flags_and_statuses_by_hand():
    """Each status's flag spelled out (a swapped mapping would show FAILED on a diverged row), and run_status's
    precedence: failed over diverged over the chance verdict."""
    from labkit.results import FLAGS, STATUSES, run_status
    assert FLAGS == {"at_chance": "AT CHANCE", "below_chance": "BELOW CHANCE", "diverged": "DIVERGED",
                     "failed": "FAILED"}
    assert STATUSES == ("ok", "at_chance", "below_chance", "diverged", "failed")
    assert run_status(0.9, 100, 0.5, diverged=True, failed=True) == "failed"
    assert run_status(0.9, 100, 0.5, diverged=True) == "diverged"
    assert run_status(None, 100, 0.5, failed=True) == "failed"
    assert run_status(0.60, 100, 0.5) == "ok" and run_status(0.59, 100, 0.5) == "at_chance"  # Wilson low 50.2 %
    assert run_status(0.40, 100, 0.5) == "below_chance"
    assert run_status(None, 100, 0.5) == run_status(0.1, 0, 0.5) == run_status(0.1, 100, None) == "ok"


def test_numpy_and_torch_scalars_become_plain_json_numbers(tmp_path):
    """Settings and metrics often arrive as numpy or torch scalars (np.int64 from a grid, a tensor's mean):
    metrics.json gets plain numbers, and a non-finite one (NaN, inf, even as float32) null, not a crash."""
    import numpy as np
    import torch
    r = Results("q2", "smoke", "none", "cpu", {"epochs": np.int64(3), "lr": np.float32(0.5),
                                               "margin": torch.tensor(0.25), "nested": [np.float32("nan")],
                                               "text": "a", "inf": float("inf")}, tmp_path)
    # numpy float64 is a float (add_run takes it); float32 is not, but an accuracy is only compared
    r.add_run("triplet", np.float32(0.75), status="ok", macro_f1=np.float64(0.5), updates=np.float64(7.0))
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["params"] == {"epochs": 3, "lr": 0.5, "margin": 0.25, "nested": [None], "text": "a", "inf": None}
    assert type(data["params"]["epochs"]) is int and type(data["params"]["lr"]) is float
    assert data["runs"]["triplet"] == {"accuracy": 0.75, "status": "ok", "macro_f1": 0.5, "updates": 7}
    assert type(r.runs["triplet"]["updates"]) is float  # the in-memory copy is plain too (not np.float64)
    assert type(r.runs["triplet"]["accuracy"]) is float


def test_a_library_that_is_not_installed_is_named_so(monkeypatch):
    from labkit import results
    monkeypatch.setattr(results, "LIBRARIES", ("numpy", "labkit-no-such-library"))
    versions = results.library_versions()
    from importlib.metadata import version
    assert versions == {"python": versions["python"], "numpy": version("numpy"),
                        "labkit-no-such-library": "not installed"}
    import platform
    assert versions["python"] == platform.python_version()


def test_results_makes_nested_output_folders_and_records_who_ran(tmp_path):
    """A report folder several levels deep that does not exist yet is made; the notebook, profile, weights and
    device as given (a torch.device is stored as its text)."""
    import torch
    out = tmp_path / "reports" / "smoke" / "q1"
    r = Results("q1", "smoke", "imagenet", torch.device("cpu"), {}, out)
    data = json.loads(r.write(finished=False).read_text())
    assert r.write(finished=False) == out / "metrics.json"
    assert (data["notebook"], data["profile"], data["weights"], data["device"]) == ("q1", "smoke", "imagenet", "cpu")
    assert data["finished"] is None and data["runs"] == {} and data["run_settings"] == {}


def test_metrics_json_is_written_after_each_run_unfinished_and_indented_by_one_space(tmp_path):
    """add_run writes metrics.json at once, still marked unfinished (finished null) until write(); the file keeps
    the insertion order of its keys and one space of indent per level (small diffs between reports)."""
    r = Results("q3", "smoke", "none", "cpu", {"lr": 0.1}, tmp_path)
    r.add_run("adam", 0.5, status="ok")
    text = (tmp_path / "metrics.json").read_text()
    assert json.loads(text)["finished"] is None and json.loads(text)["runs"]["adam"]["accuracy"] == 0.5
    lines = text.splitlines()
    assert lines[:3] == ["{", ' "notebook": "q3",', ' "profile": "smoke",'] and text.endswith("}\n")
    assert '  "lr": 0.1' in lines and '  "adam": {' in lines and '   "accuracy": 0.5,' in lines
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    r.write()
    assert json.loads((tmp_path / "metrics.json").read_text())["finished"] is not None


def test_fractions_and_costs_are_accepted_at_their_bounds_and_refused_beyond(tmp_path):
    """0 and 1 are fractions (a run that got nothing or everything right); 1.5 is not. A cost may be 0 or any
    non-integer >= 0. A metric after a cost key is still checked."""
    r = Results("q1", "smoke", "none", "cpu", {}, tmp_path)
    assert r.add_run("none_right", 0.0, status="ok", macro_f1=0.0)["accuracy"] == 0.0
    assert r.add_run("all_right", 1.0, status="ok", macro_f1=1.0)["macro_f1"] == 1.0
    assert r.add_run("free", 0.5, status="ok", train_seconds=0, epochs=0.5, seeds=0)["epochs"] == 0.5
    assert r.add_run("nan_metric", 0.5, status="ok", macro_f1=float("nan"))["macro_f1"] is None
    with pytest.raises(ValueError, match=r"run 'x': accuracy must be a fraction in 0..1, got 1.5"):
        r.add_run("x", 1.5, status="ok")
    with pytest.raises(ValueError, match=r"run 'x': accuracy must be a fraction in 0..1, got -0.01"):
        r.add_run("x", -0.01, status="ok")
    with pytest.raises(ValueError, match=r"metric macro_f1=1.5 must be a fraction"):
        r.add_run("x", 0.5, status="ok", macro_f1=1.5)
    with pytest.raises(ValueError, match=r"metric macro_f1=-0.5 must be a fraction"):
        r.add_run("x", 0.5, status="ok", macro_f1=-0.5)
    with pytest.raises(ValueError, match=r"metric macro_f1=5 must be a fraction"):
        r.add_run("x", 0.5, status="ok", train_seconds=1.0, macro_f1=5)
    with pytest.raises(ValueError, match=r"seeds_ok='3' must be a number >= 0 or None"):
        r.add_run("x", 0.5, status="ok", seeds_ok="3")
    with pytest.raises(ValueError, match=r"allowed: ok, at_chance, below_chance, diverged, failed$"):
        r.add_run("x", 0.5, status="OK")
    assert "x" not in r.runs and list(r.runs) == ["none_right", "all_right", "free", "nan_metric"]


def test_a_runs_settings_are_recorded_beside_its_entry_not_in_it(tmp_path):
    import numpy as np
    r = Results("q3", "smoke", "none", "cpu", {}, tmp_path)
    r.add_run("adam", 0.5, status="ok", settings={"lr": np.float32(0.25), "betas": (0.9, 0.99)})
    r.add_run("sgd", 0.5, status="ok")  # no settings given: none recorded
    data = json.loads(r.write().read_text())
    assert data["run_settings"] == {"adam": {"lr": 0.25, "betas": [0.9, 0.99]}}
    assert data["runs"]["adam"] == {"accuracy": 0.5, "status": "ok"}


def test_same_numbers_by_hand():
    """Equal up to 1e-12 relative (the same formula summed in another order), 1e-15 absolute (float noise near
    0); timings may differ; a key on one side only, a changed status or a changed count is a change."""
    from labkit.results import same_numbers
    a = {"accuracy": 0.8, "status": "ok", "updates": 60, "macro_f1": 0.0, "train_seconds": 3.0}
    assert same_numbers(a, dict(a))
    assert same_numbers(a, {**a, "accuracy": 0.8 * (1 + 1e-13), "macro_f1": 1e-16, "train_seconds": 99.0,
                            "train_images_per_second": 5.0})
    assert not same_numbers(a, {**a, "accuracy": 0.8 * (1 + 1e-11)})  # beyond 1e-12, within isclose's default
    assert not same_numbers(a, {**a, "macro_f1": 1e-14})  # beyond 1e-15 absolute
    assert not same_numbers(a, {**a, "accuracy": 0.5})
    assert not same_numbers(a, {**a, "accuracy": None}) and not same_numbers({**a, "accuracy": None}, a)
    assert not same_numbers(a, {**a, "status": "at_chance"})
    assert not same_numbers(a, {**a, "error": "boom"}) and not same_numbers({**a, "error": "boom"}, a)
    assert same_numbers({"status": "failed", "error": "boom"}, {"status": "failed", "error": "boom"})
    assert not same_numbers({"accuracy": 0.0}, {"accuracy": 1.0})


def test_figure_is_a_png_at_the_given_dpi_cropped_to_its_content_whatever_matplotlibrc_says(tmp_path):
    """figure() writes ``<name>.png`` in the output folder: PNG even where a user's matplotlibrc asks for
    another savefig format, at 110 dpi unless told (the PNG's pHYs chunk records it), cropped to what is drawn
    (bbox_inches="tight": a 4 x 4 inch figure holding one short word is much smaller)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    r = Results("q1", "smoke", "none", "cpu", {}, tmp_path)
    fig = plt.figure(figsize=(4, 4))
    fig.text(0.5, 0.5, "x")
    try:
        with matplotlib.rc_context({"savefig.format": "svg", "savefig.bbox": None}):
            default = r.figure(fig, "curve")
            low = r.figure(fig, "curve_low", dpi=40)
    finally:
        plt.close(fig)
    assert default == tmp_path / "curve.png" and low == tmp_path / "curve_low.png"
    with Image.open(default) as png:
        assert png.format == "PNG" and round(png.info["dpi"][0]) == 110
        assert png.size[0] < 2 * 110 and png.size[1] < 2 * 110  # the full figure: 440 x 440
    with Image.open(low) as png:
        assert round(png.info["dpi"][0]) == 40 and png.size[0] < 2 * 40


def test_table_writes_csv_with_its_index_unless_told(tmp_path):
    import pandas as pd
    r = Results("q1", "smoke", "none", "cpu", {}, tmp_path)
    df = pd.DataFrame({"accuracy": [0.5, 0.75]}, index=pd.Index(["adam", "sgd"], name="run"))
    assert r.table(df, "runs") == tmp_path / "runs.csv"
    assert (tmp_path / "runs.csv").read_text() == "run,accuracy\nadam,0.5\nsgd,0.75\n"
    r.table(df, "plain", index=False)
    assert (tmp_path / "plain.csv").read_text() == "accuracy\n0.5\n0.75\n"


def _tiny_test_set(n: int = 4):
    import torch

    from labkit.data import ImageSet
    return ImageSet(torch.zeros(n, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 2, 1][:n]), ["a", "b", "c"])


def test_predictions_npz_keeps_its_dtypes_and_names_even_with_no_run_to_hold(tmp_path):
    """Every run failed: predictions.npz still has its arrays, with the types a reader expects (str names,
    int64 seeds, int16 classes, float16 probabilities), 0 rows of n images; ids default to each image's index
    as text; the classes given override the test set's."""
    import numpy as np

    from labkit.questions.experiments import Outcome
    test = _tiny_test_set()
    failed = {"adam": [Outcome("adam", {}, 0, None, np.array([]), np.array([]), error="RuntimeError: boom")]}
    path = Results("q3", "smoke", "none", "cpu", {}, tmp_path).predictions(failed, test, classes=["x", "y", "z"])
    assert path == tmp_path / "predictions.npz"
    blob = np.load(path, allow_pickle=False)
    assert blob["run"].dtype.kind == "U" and blob["run"].shape == (0,)
    assert blob["seed"].dtype == np.int64 and blob["seed"].shape == (0,)
    assert blob["predictions"].dtype == np.int16 and blob["predictions"].shape == (0, 4)
    assert blob["probability"].dtype == np.float16 and blob["probability"].shape == (0, 4)
    assert blob["labels"].dtype == np.int16 and blob["labels"].tolist() == [0, 1, 2, 1]
    assert blob["ids"].tolist() == ["0", "1", "2", "3"] and blob["classes"].tolist() == ["x", "y", "z"]


def test_predictions_leave_out_a_run_tested_on_other_images(tmp_path):
    """Only predictions for this test set's images are stored: a run (no error) whose predictions have another
    length (it was tested on other images) is left out rather than breaking the file; int64 predictions are
    stored as int16."""
    import numpy as np

    from labkit.questions.experiments import Outcome
    test = _tiny_test_set()
    y = np.array([0, 1, 2, 1], dtype=np.int64)
    outcomes = {"adam": [Outcome("adam", {}, 3, None, y, np.array([2, 1, 0, 1], dtype=np.int64))],
                "other": [Outcome("other", {}, 0, None, y[:3], np.array([0, 1, 2], dtype=np.int64))]}
    blob = np.load(Results("q3", "smoke", "none", "cpu", {}, tmp_path).predictions(outcomes, test))
    assert blob["run"].tolist() == ["adam"] and blob["seed"].tolist() == [3]
    assert blob["predictions"].dtype == np.int16 and blob["predictions"].tolist() == [[2, 1, 0, 1]]
    assert np.isnan(blob["probability"]).all() and blob["classes"].tolist() == ["a", "b", "c"]


def test_predictions_of_an_empty_test_set_keep_text_ids(tmp_path):
    """A split with no test images happens (summarize reports "no test images"): the ids array is still text
    (numpy would make an empty list float64), so a reader can compare ids across files of any size."""
    import numpy as np
    import torch

    from labkit.data import ImageSet
    empty = ImageSet(torch.zeros(0, 3, 2, 2, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64), ["a", "b"])
    blob = np.load(Results("q3", "smoke", "none", "cpu", {}, tmp_path).predictions({}, empty))
    assert blob["ids"].dtype.kind == "U" and blob["ids"].shape == (0,)
    assert blob["labels"].dtype == np.int16 and blob["predictions"].shape == (0, 0)
    assert blob["classes"].tolist() == ["a", "b"]
