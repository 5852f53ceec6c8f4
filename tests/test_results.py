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
