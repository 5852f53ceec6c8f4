import json

import numpy as np
import pytest
import torch

from labkit.questions import q3_optimizers as q3
from labkit.data import ImageSet
from labkit.questions.contract import Data
from labkit.questions.registry import NOTEBOOKS, default_parameters, resolved_parameters
from labkit.params import ParameterError

Q3_RUNS = {"sgd_bs1", "sgd", "sgd_momentum", "adam", "adam_bs16", "adam_bs32", "adam_bs64", "shuffled", "sorted",
           "full_batch", "adam_b1_0.0_b2_0.0", "adam_b1_0.5_b2_0.999", "adam_b1_0.9_b2_0.99",
           "adam_b1_0.9_b2_0.999", "adam_b1_0.99_b2_0.999"}


@pytest.mark.slow
def test_smoke_notebook_writes_every_run(smoke_report):
    root, _ = smoke_report
    metrics = json.loads((root / "q3" / "metrics.json").read_text())
    assert set(metrics["runs"]) == Q3_RUNS
    assert metrics["profile"] == "smoke" and metrics["finished"]
    for name, run in metrics["runs"].items():
        assert run["status"] in ("ok", "at_chance", "below_chance", "diverged"), name  # smoke: a few images
        assert run["accuracy"] is None or 0 <= run["accuracy"] <= 1
    # equal settings are trained once and recorded under both names
    assert metrics["runs"]["adam_bs64"] == metrics["runs"]["adam"]


@pytest.mark.slow
def test_demo_sized_adam_beats_chance(isolated_root):
    """The demo's data and Adam settings (from the notebook's defaults) learn the synthetic task."""
    P = q3.parameters(default_parameters("q3"))
    data = q3.load_data(P)
    assert len(data.skipped) == 3 and len(data.test) == 240
    run = q3.plan(P)["optimizers"]["adam"][0]  # the first of the demo's seeds
    acc = q3.train_and_test(run, data, torch.device("cpu")).accuracy
    assert acc > 0.65, acc  # chance is 0.5; the test split has 240 images


def test_empty_parts_are_skipped_and_betas_checked():
    P = q3.parameters(default_parameters("q3"))
    planned = q3.plan({**P, "runs_batch_sizes": [], "runs_order": [], "runs_betas": []})
    assert planned["batch_sizes"] == planned["order"] == planned["betas"] == {} and len(planned["optimizers"]) == 4
    with pytest.raises(ParameterError, match="betas"):
        q3.plan({**P, "runs_betas": [{"name": "bad", "betas": [0.9, 1.0]}]})


def test_q3_notebook_is_known_to_the_report():
    assert NOTEBOOKS["q3"] == "q3_dogs_vs_cats_optimizers.ipynb"


def test_same_seed_same_numbers_with_caches_cleared(same_twice):
    same_twice(q3, "q3",
               q3.load_data,
               lambda plan: [plan["optimizers"]["sgd_bs1"][0],
                              plan["optimizers"]["adam"][0],
                              plan["order"]["full_batch"][0]])


def test_val_fraction_0_trains_on_the_whole_training_split(isolated_root):
    P = resolved_parameters("q3", "smoke", val_fraction=0.0)
    data = q3.load_data(P)
    assert len(data.val) == 0 and len(data.train) + len(data.test) == data.counts().to_numpy().sum()
    out = q3.train_and_test(q3.plan(P)["optimizers"]["adam"][0], data, torch.device("cpu"))
    assert out.history.epochs and all("val_accuracy" not in e for e in out.history.epochs)
    assert out.cost["epochs"] == len(out.history.epochs) and out.cost["train_images_per_second"] > 0
    assert out.history.images == len(data.train) * len(out.history.epochs)  # every training image, each epoch


def test_split_counts_are_ints_with_0_for_an_empty_validation_split():
    """val_fraction 0 (the full profiles) leaves the validation split empty: its column shows 0, not NaN,
    and a class missing from one split counts 0 there too."""
    images = ImageSet(torch.zeros(7, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1, 0, 0, 0]),
                      ["cat", "dog"])
    data = Data(images.subset([0, 1, 2, 3]), images.subset([]), images.subset([4, 5, 6]), "", "")
    counts = data.counts()
    assert list(counts.columns) == ["train", "validation", "test"] and list(counts.index) == ["cat", "dog"]
    assert counts.to_dict("list") == {"train": [2, 2], "validation": [0, 0], "test": [3, 0]}
    assert all(dtype.kind == "i" for dtype in counts.dtypes) and not counts.isna().any().any()


def test_the_batch_size_verdict_says_what_the_originals_numbers_cannot_tell():
    """Its 0.96-point span on 7,500 images cannot be judged without its predictions and seeds; "either" only when
    our own runs found no difference; the update counts beside, since the comparison is at equal epochs."""
    import pandas as pd
    assert q3.two_run_yardstick(0.5, 10_000) == pytest.approx(1.96 * np.sqrt(2) * 0.005)
    y = np.arange(200) % 2

    def runs(ks):  # right on the first k images, one k per seed
        return {name: [q3.Outcome(name, {}, s, None, y, np.where(np.arange(200) < k, y, 1 - y))
                       for s, k in enumerate(per_seed)] for name, per_seed in ks}

    summary = pd.DataFrame({"updates": [330.0, 165.0, 84.0]}, index=["adam_bs16", "adam_bs32", "adam_bs64"])
    close = q3.batch_size_verdict(runs((("adam_bs16", (170, 166, 173)), ("adam_bs32", (169, 171, 167)),
                                         ("adam_bs64", (171, 168, 170)))), summary)
    assert "span 0.96 points on 7,500 test images" in close and "cannot be judged from its numbers" in close
    assert "up to 1.2 points by test-set noise alone" in close and "our own runs show no real difference" in close
    assert "`adam_bs16` 330, `adam_bs32` 165, `adam_bs64` 84" in close and "equal epochs" in close
    apart = q3.batch_size_verdict(runs((("adam_bs16", (190, 189, 191)), ("adam_bs32", (150, 152, 149)),
                                         ("adam_bs64", (120, 121, 119)))), summary)
    assert "real difference" in apart and "either" not in apart
