"""The notebooks' sentences that hold numbers: each number where it belongs."""
import numpy as np

from labkit.questions import sentences
from labkit.questions.experiments import Outcome


def test_setup_line_names_the_profile_data_device_and_seeds():
    P = {"profile": "demo", "data_source": "synthetic", "image_size": 32, "seeds": [0, 1, 2]}
    assert sentences.setup_line(P, "cpu", {"classes": "10 (sorted order)"}) == (
        "**profile** `demo` · **data** synthetic · **device** `cpu` · **classes** 10 (sorted order) · "
        "**input size** 32 px · **training seeds** [0, 1, 2]")


def test_method_sentences_hold_this_runs_numbers():
    y = np.array([0, 1, 1, 0, 1, 1, 0, 1, 1, 1])
    roc = {"macro": {"auc": 0.8125}}
    svm = Outcome("svm", {"feature_layer": "avgpool", "svm_kernel": "linear", "svm_c": 0.1}, 0, None, y,
                  np.where(np.arange(10) < 8, y, 1 - y), artifacts={"roc": roc, "dim": 512})
    text = sentences.svm(svm, y)
    assert "(512-d, linear kernel, C = 0.1)" in text and "80.00 %" in text and "AUC 0.812" in text
    zs = Outcome("zero_shot", {}, 0, None, y, y, metrics={"other_rate": 0.25},
                 artifacts={"source_name": "ImageNet-1k (1000 classes)", "mapped": 20})
    assert "20 source classes mapped" in sentences.zero_shot({"zero_shot": zs}, y)
    assert "`other` predicted for 25.0 %" in sentences.zero_shot({"zero_shot": zs}, y)
    run = Outcome("ce", {}, 0, None, y, y, metrics={"precision_at_1": 0.95, "map_at_r": 0.5})
    assert sentences.retrieval(run) == "P@1 95.0 %, MAP@R 50.0 %"
