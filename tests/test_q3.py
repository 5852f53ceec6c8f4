import json

import numpy as np
import torch

from labkit import q3_optimizers as q3
from labkit.experiments import Outcome, Runner
from labkit.notebooks import NOTEBOOKS

Q3_RUNS = {"sgd_bs1", "sgd", "sgd_momentum", "adam", "adam_bs16", "adam_bs32", "adam_bs64", "shuffled", "sorted",
           "full_batch", "adam_b1_0.0_b2_0.0", "adam_b1_0.5_b2_0.999", "adam_b1_0.9_b2_0.99",
           "adam_b1_0.9_b2_0.999", "adam_b1_0.99_b2_0.999"}


def test_smoke_notebook_writes_every_run(smoke_report):
    root, _ = smoke_report
    metrics = json.loads((root / "q3" / "metrics.json").read_text())
    assert set(metrics["runs"]) == Q3_RUNS
    assert metrics["profile"] == "smoke" and metrics["finished"]
    for name, run in metrics["runs"].items():
        assert run["status"] in ("ok", "diverged", "below_chance"), name
        assert run["accuracy"] is None or 0 <= run["accuracy"] <= 1
    # equal settings are trained once and recorded under both names
    assert metrics["runs"]["adam_bs64"] == metrics["runs"]["adam"]


def test_demo_sized_adam_beats_chance():
    """The demo's data and Adam settings (from the notebook's defaults) learn the synthetic task."""
    splits = q3.load_data("synthetic", None, 32, 400, 0.3, 0.15, 0)
    assert len(splits.data.skipped) == 3 and len(splits.test) == 240
    runner = Runner()
    out = q3.run_part([{"name": "adam", "optimizer": "adam"}], {"batch_size": 64, "lr": 1e-3, "epochs": 5},
                      splits, [0], torch.device("cpu"), runner, 5, {"split_seed": 0, "test": "demo-adam"})
    acc = out["adam"][0].accuracy
    assert acc > 0.65, acc  # chance is 0.5; the test split has 240 images


def test_equal_settings_train_once():
    calls = []
    runner = Runner()

    def fake():
        calls.append(1)
        return Outcome("x", {}, 0, None, np.array([0]), np.array([0]))

    a = runner.run("adam", {"lr": 1}, 0, fake)
    b = runner.run("adam_bs64", {"lr": 1}, 0, fake)
    assert len(calls) == 1 and a.name == "adam" and b.name == "adam_bs64"


def test_q3_notebook_is_known_to_the_report():
    assert NOTEBOOKS["q3"] == "q3_dogs_vs_cats_optimizers.ipynb"
