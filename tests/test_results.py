import json

import pytest

from labkit.results import Results


def test_metrics_json_contract(tmp_path):
    r = Results("q3", "smoke", "none", "cpu", {"lr": 1e-3, "betas": (0.9, 0.999)}, tmp_path / "out")
    r.add_run("adam", 0.8, chance=0.5, macro_f1=0.79, accuracy_ci_low=0.7, accuracy_ci_high=0.88)
    r.add_run("sgd_bs1", 0.43, chance=0.5)
    r.add_run("broken", None, diverged=True)
    path = r.write()
    data = json.loads(path.read_text())
    assert set(data) == {"notebook", "profile", "weights", "device", "params", "started", "finished", "runs"}
    assert data["finished"] is not None and data["params"]["betas"] == [0.9, 0.999]
    assert data["runs"]["adam"]["status"] == "ok"
    assert data["runs"]["sgd_bs1"]["status"] == "below_chance"
    assert data["runs"]["broken"] == {"accuracy": None, "status": "diverged"}
    assert not list((tmp_path / "out").glob(".*tmp"))  # atomic writes leave no temporaries


def test_metrics_must_be_snake_case_fractions(tmp_path):
    r = Results("q1", "smoke", "standin", "cpu", {}, tmp_path)
    with pytest.raises(ValueError, match="fraction"):
        r.add_run("svm", 83.65)
    with pytest.raises(ValueError, match="snake_case"):
        r.add_run("svm", 0.8, MacroF1=0.5)
    with pytest.raises(ValueError, match="fraction"):
        r.add_run("svm", 0.8, macro_f1=76)
