import json
import math
import os

import numpy as np
import pytest
import torch

from labkit.questions import q1_transfer as q1
from labkit.questions.registry import default_parameters, resolved_parameters
from labkit.params import ParameterError


def test_zero_shot_rules():
    logits = torch.tensor([[0.0, 5.0, 1.0, 0.0], [3.0, 0.0, 1.0, 0.0]])
    mapping = {0: 2, 2: 7}  # source 0 -> car, 2 -> monkey; 1 and 3 unmapped
    assert q1.zero_shot(logits, mapping, restricted=False).tolist() == [10, 2]  # 10 = other
    assert q1.zero_shot(logits, mapping, restricted=True).tolist() == [7, 2]


@pytest.mark.slow
def test_smoke_notebook_writes_every_run(smoke_report):
    root, _ = smoke_report
    metrics = json.loads((root / "q1" / "metrics.json").read_text())
    assert set(metrics["runs"]) == {"svm", "zero_shot", "zero_shot_restricted", "finetune"}
    assert metrics["weights"] == "standin-smoke"  # the smoke profile's seconds-size stand-in
    assert "NOT ImageNet" in (root / "q1" / "q1_stl10_transfer.report.html").read_text()


@pytest.mark.slow
def test_demo_sized_svm_and_finetune_beat_chance(isolated_root):
    """Demo-sized synthetic STL-10 with the demo's stand-in (ResNet-18): both trained approaches beat chance (10 %)."""
    P = q1.parameters(default_parameters("q1"))
    data = q1.load_data(P)
    runs = q1.plan({**P, "runs": [{"name": "svm"}, {"name": "finetune"}]})
    out = {name: q1.train_and_test(per_seed[0], data, torch.device("cpu"))
           for part in runs.values() for name, per_seed in part.items()}
    # The demo measured about 95 % for both on these 300 test images: SE = sqrt(0.95 x 0.05 / 300) = 1.26 points,
    # so 3 SE below is 91 %; a floor of 0.9 lets test-set noise pass and catches a 5-point regression.
    assert out["svm"].accuracy > 0.9 and out["finetune"].accuracy > 0.9, out


def test_runs_select_methods_and_refuse_what_does_not_apply():
    P = q1.parameters(default_parameters("q1"))
    assert q1.plan({**P, "runs": [{"name": "svm", "svm_c": 1.0}]})["svm"].keys() == {"svm"}
    assert q1.plan({**P, "runs": []}) == {"svm": {}, "zero_shot": {}, "finetune": {}}  # the parts, each empty
    planned = q1.plan({**P, "seeds": [0, 1], "runs": [{"name": "zero_shot"}, {"name": "finetune", "lr": 0.1}]})
    zero_shot, finetune = planned["zero_shot"]["zero_shot"], planned["finetune"]["finetune"]
    assert len(zero_shot) == 1 and len(finetune) == 2  # deterministic methods run once
    assert finetune[1]["lr"] == 0.1 and "svm_c" not in finetune[0].settings
    with pytest.raises(ParameterError, match="name='knn' is not allowed"):
        q1.plan({**P, "runs": [{"name": "knn"}]})
    with pytest.raises(ParameterError, match="'lr' do not apply to svm"):
        q1.plan({**P, "runs": [{"name": "svm", "lr": 0.1}]})


def test_features_are_cached(isolated_root):
    """The cache, not the backbone, is under test: a ResNet in shape only (no stand-in to pre-train first)."""
    from conftest import tiny_resnet
    data = q1.load_data(resolved_parameters("q1", synthetic_train_per_class=2, synthetic_test_per_class=1))
    model = tiny_resnet(num_classes=7)
    args = dict(image_size=32, device=torch.device("cpu"), weights="standin", arch="resnet18")
    first = q1.extract(model, data.test.images, **args)
    model.fc.weight.data.zero_()  # a cache hit must not run the model again
    model.fc.bias.data.zero_()
    second = q1.extract(model, data.test.images, **args)
    assert torch.equal(first["fc"], second["fc"]) and first["avgpool"].shape == (10, 16)
    assert first["fc"].shape == (10, 7) and not np.allclose(second["fc"].numpy(), 0)
    other = q1.extract(model, data.test.images, **{**args, "image_size": 40})  # another key: the model runs
    assert np.allclose(other["fc"].numpy(), 0)


@pytest.mark.slow
def test_same_seed_same_numbers_with_caches_cleared(same_twice):
    same_twice(q1, "q1", q1.load_data, lambda plan: [plan["svm"]["svm"][0], plan["finetune"]["finetune"][0]])


@pytest.mark.slow
def test_the_feature_pass_runs_in_full_precision(isolated_root, monkeypatch):
    """The zero-shot argmax over 1,000 logits hinges on near-ties that bf16 could flip: the pass asks predict
    for fp32 on every device."""
    asked = []
    real = q1.predict
    monkeypatch.setattr(q1, "predict", lambda *a, **kw: asked.append(kw.get("precision")) or real(*a, **kw))
    data = q1.load_data(resolved_parameters("q1", synthetic_train_per_class=2, synthetic_test_per_class=1))
    model, _, _ = q1.source_model("resnet18", "standin-smoke")
    q1.extract(model, data.test.images, image_size=32, device=torch.device("cpu"), weights="standin-smoke",
               arch="resnet18")
    assert asked == ["fp32"]


def test_val_fraction_0_fine_tunes_on_the_whole_training_split(isolated_root, monkeypatch):
    """What is fine-tuned is under test, not how well: a ResNet in shape only (no stand-in to pre-train first)."""
    from conftest import tiny_resnet
    from labkit.training import standin
    monkeypatch.setattr(q1, "resnet", lambda arch, weights: tiny_resnet(num_classes=len(standin.source_classes())))
    P = q1.parameters({**default_parameters("q1", "smoke"), "val_fraction": 0.0, "arch": "resnet18"})
    data = q1.load_data(P)
    (run,) = q1.plan({**P, "runs": [{"name": "finetune"}]})["finetune"]["finetune"]
    out = q1.train_and_test(run, data, torch.device("cpu"))
    assert out.history.images == len(data.train) * run["epochs"]  # every training image, every epoch
    assert all(e.get("val_loss") is None for e in out.history.epochs)  # no validation curve


def test_architecture_names_the_network():
    assert q1.architecture({"arch": "resnet50"}) == "ResNet-50"
    assert q1.architecture({"arch": "resnet18"}) == "ResNet-18"


def test_zero_shot_with_another_number_of_classes():
    """``num_classes`` is the index of ``other`` (and what marks an unmapped source class)."""
    logits = torch.tensor([[0.0, 5.0, 1.0], [4.0, 0.0, 1.0]])
    mapping = {0: 1, 2: 0}  # source 1 unmapped
    assert q1.zero_shot(logits, mapping, restricted=False, num_classes=2).tolist() == [2, 1]
    assert q1.zero_shot(logits, mapping, restricted=True, num_classes=2).tolist() == [0, 1]
    assert torch.equal(logits, torch.tensor([[0.0, 5.0, 1.0], [4.0, 0.0, 1.0]]))  # the caller's logits untouched


def test_chosen_probability_is_the_softmax_of_the_class_each_rule_picks():
    logits = torch.tensor([[0.0, 5.0, 1.0, 0.0], [3.0, 0.0, 1.0, 0.0]])
    mapping = {2: 7, 0: 2}  # source 1 and 3 unmapped; given out of order
    e = math.exp
    row0, row1 = 1 + e(5) + e(1) + 1, e(3) + 1 + e(1) + 1
    assert q1.chosen_probability(logits, mapping, restricted=False) == pytest.approx([e(5) / row0, e(3) / row1])
    # restricted: the largest of sources 0 and 2 only (row 0: source 2, not the unmapped source 1)
    assert q1.chosen_probability(logits, mapping, restricted=True) == pytest.approx([e(1) / row0, e(3) / row1])


@pytest.mark.parametrize("weights, outputs, source", [
    ("standin-smoke", 40, "stand-in"),
    ("/models/standin-like.pt", 40, "stand-in"),  # a file holding a stand-in: known by its 40 source classes
    ("none", 1000, "imagenet"),
    ("/models/imagenet-like.pt", 1000, "imagenet"),  # a file of ImageNet's 1000 classes
])
def test_source_model_maps_the_source_classes_the_weights_hold(monkeypatch, weights, outputs, source):
    from conftest import tiny_resnet
    from labkit.questions.imagenet import IMAGENET_TO_STL10
    from labkit.training import standin
    built = []
    monkeypatch.setattr(q1, "resnet", lambda arch, w: built.append((arch, w)) or tiny_resnet(num_classes=outputs))
    model, mapping, name = q1.source_model("resnet18", weights)
    assert built == [("resnet18", weights)] and model.fc.out_features == outputs
    if source == "stand-in":
        assert mapping == standin.source_to_stl10() and len(mapping) == 18  # 9 classes (no deer) x 2 variants
        assert name == "the stand-in's synthetic source task (40 classes)"
    else:
        assert mapping == IMAGENET_TO_STL10 and name == "ImageNet-1k (1000 classes)"


def test_source_model_refuses_a_head_of_neither_source_task(monkeypatch):
    from conftest import tiny_resnet
    monkeypatch.setattr(q1, "resnet", lambda arch, w: tiny_resnet(num_classes=7))
    with pytest.raises(ValueError) as refused:
        q1.source_model("resnet50", "/models/seven.pt")
    assert str(refused.value) == ("weights='/models/seven.pt': its classifier has 7 outputs; the zero-shot part "
                                  "needs ImageNet's 1000 classes (or the stand-in's). Use weights='imagenet' or "
                                  "'standin'.")


def test_weights_id_names_a_file_by_its_path_size_and_time_and_named_weights_by_their_recipe(tmp_path, monkeypatch):
    """The feature cache's key: a weights file rewritten in place (same name) must not serve stale features."""
    from labkit.training import standin
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"12345")
    os.utime(weights, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    expected = f"{tmp_path.resolve()}/w.pt:5:1700000000123456789"
    assert q1._weights_id(str(weights)) == expected
    monkeypatch.setenv("HOME", str(tmp_path))
    assert q1._weights_id("~/w.pt") == expected  # a path from home, as a user writes it
    assert q1._weights_id("standin") == "standin" + str(standin.SETTINGS["standin"])
    assert q1._weights_id("standin-smoke") == "standin-smoke" + str(standin.SETTINGS["standin-smoke"])
    assert standin.SETTINGS["standin"] != standin.SETTINGS["standin-smoke"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imagenet").write_bytes(b"not weights")  # a file that happens to bear a weights name
    assert q1._weights_id("imagenet") == "imagenet" and q1._weights_id("none") == "none"
    assert q1._weights_id("missing.pt") == "missing.pt"


def test_passes_count_the_feature_pass_and_each_fine_tuning_seed():
    """Hand-counted: 7 images a class of 10 (fewer than the 200 given) and 70 test images; fine-tuning holds
    out ceil(0.25 x 70) = 18 for validation and trains on 52 for 3 epochs, per seed."""
    from labkit.questions.contract import Pass, Setting
    P = q1.parameters({**default_parameters("q1", "smoke"), "arch": "resnet18", "image_size": 40,
                       "train_per_class": 7})
    P = {**P, "seeds": [3, 5], "runs": [
        {"name": "svm"},
        {"name": "finetune", "val_fraction": 0.25, "batch_size": 9, "epochs": 3, "augment": False,
         "freeze_until": "layer2", "optimizer": "sgd", "precision": "bf16"}]}
    sizes = {"train": 200, "test": 70, "stored_size": 64, "classes": 10}
    train = Setting("resnet18", 64, 40, 9, 10, True, False, "layer2", "sgd", "bf16")
    evaluate = Setting("resnet18", 64, 40, 128, 10, False, False, "none", "adam", "bf16")
    per_seed = [[Pass("q1", f"finetune seed {s}: training", train, 52 * 3),
                 Pass("q1", f"finetune seed {s}: validation", evaluate, 18 * 3),
                 Pass("q1", f"finetune seed {s}: test", evaluate, 70)] for s in (3, 5)]
    features = Pass("q1", "feature pass (train + test)",
                    Setting("resnet18", 64, 40, 128, 1000, False, False, "none", "adam", "fp32"), 70 + 70)
    assert q1.passes(P, sizes) == [features, *per_seed[0], *per_seed[1]]
    # more images a class asked for than there are: every training image (200)
    assert q1.passes({**P, "train_per_class": 30}, sizes)[0].images == 200 + 70
    assert q1.passes({**P, "train_per_class": None}, sizes)[0].images == 200 + 70


def test_passes_default_to_the_sizes_of_the_data_the_parameters_name():
    P = q1.parameters({**default_parameters("q1", "smoke"), "synthetic_train_per_class": 6,
                       "synthetic_test_per_class": 4})
    only = lambda *names: {**P, "runs": [{"name": n} for n in names]}  # noqa: E731
    (features,) = q1.passes(only("zero_shot"))  # the zero-shot rules need the feature pass too
    assert features.images == 60 + 40 and features.setting.stored_size == 96
    assert q1.passes({**only("zero_shot"), "train_per_class": 2})[0].images == 2 * 10 + 40
    assert q1.passes({**only("zero_shot_restricted"), "data_source": "real"})[0].images == 5_000 + 8_000
    assert q1.passes({**only("svm"), "data_source": "real", "train_per_class": 30})[0].images == 300 + 8_000
    assert [p.what for p in q1.passes(only("finetune"))] == [  # no SVM nor zero-shot: no feature pass
        "finetune seed 0: training", "finetune seed 0: validation", "finetune seed 0: test"]
    training, validation, test = q1.passes(only("finetune"))  # smoke: val_fraction 0.15 of 60 -> 9, 1 epoch
    assert (training.images, validation.images, test.images) == (51, 9, 40)
    assert training.setting.stored_size == 96 and training.setting.num_classes == 10
    assert q1.passes(only()) == []


def outcome(name, y_pred, seed=0, metrics=None, artifacts=None):
    from labkit.questions.experiments import Outcome
    y_true = np.arange(20) % 10
    return Outcome(name, {}, seed, None, y_true, np.asarray(y_pred), metrics=metrics or {},
                   artifacts=artifacts or {})


def right(n):
    """Predictions for the 20 test images of :func:`outcome` with the first ``n`` right, the rest wrong."""
    y = np.arange(20) % 10
    return np.where(np.arange(20) < n, y, (y + 1) % 10)


def test_findings_rank_compare_flag_and_count_other():
    import pandas as pd
    parts = {"svm": {"svm": [outcome("svm", right(10))]},
             "zero_shot": {"zero_shot": [outcome("zero_shot", right(5), metrics={"other_rate": 0.4},
                                                 artifacts={"source_name": "ImageNet-1k (1000 classes)"})],
                           "zero_shot_restricted": [outcome("zero_shot_restricted", right(7))]},
             "finetune": {"finetune": [outcome("finetune", right(20))]}}
    summary = pd.DataFrame({"accuracy": [0.5, 0.25, float("nan"), 1.0],
                            "status": ["ok", "at_chance", "failed", "ok"]},
                           index=["svm", "zero_shot", "zero_shot_restricted", "finetune"])
    # one seed each: McNemar over the 10 images only fine-tuning gets right, p = 2 x 0.5^10 = 0.00195
    assert q1.findings(summary, parts, {}).split("\n\n") == [
        "**Ranking in this run:** fine-tuning (100.0 %) > features + SVM (50.0 %) > "
        "zero-shot mapping (original rule) (25.0 %).",
        "Fine-tuning vs the SVM on the same 20 test images: finetune vs svm: these two trained networks differ "
        "(one seed: not a verdict on the recipes) (Holm-adjusted p = 0.00195, McNemar).",
        "Flagged runs: zero-shot mapping (original rule) (at chance), zero-shot mapping (restricted rule) (failed).",
        "The original rule predicts `other` for 40.0 % of the test images (ImageNet-1k (1000 classes))."]


def test_findings_judge_fine_tuning_seeds_against_the_deterministic_svm():
    """Two fine-tuning seeds (90 % and 80 %) against the SVM's one run (50 %): the differences 0.4 and 0.3 have a
    one-sample t of 0.35 / 0.05 = 7 with 1 degree of freedom, p = 1 - 2 atan(7) / pi = 0.0903."""
    import pandas as pd
    parts = {"svm": {"svm": [outcome("svm", right(10))]},
             "finetune": {"finetune": [outcome("finetune", right(18), seed=0), outcome("finetune", right(16), seed=1)]}}
    summary = pd.DataFrame({"accuracy": [0.5, 0.85], "status": ["ok", "ok"]}, index=["svm", "finetune"])
    assert q1.findings(summary, parts, {}).split("\n\n") == [
        "**Ranking in this run:** fine-tuning (85.0 %) > features + SVM (50.0 %).",
        "Fine-tuning vs the SVM on the same 20 test images: finetune vs svm: within noise (Holm-adjusted p = 0.0903, "
        "one-sample t-test over 2 seeds)."]


@pytest.mark.parametrize("present", [["finetune"], ["svm"], ["svm", "zero_shot"]])
def test_findings_compare_only_what_ran(present):
    """No comparison without both fine-tuning and the SVM; no `other` sentence without the original rule's rate."""
    import pandas as pd
    zs = outcome("zero_shot", right(5), artifacts={"source_name": "x"})  # no other_rate
    made = {"svm": ("svm", outcome("svm", right(10))), "finetune": ("finetune", outcome("finetune", right(20))),
            "zero_shot": ("zero_shot", zs)}
    parts = {}
    for name in present:
        part, o = made[name]
        parts.setdefault(part, {})[name] = [o]
    accuracy = {"svm": 0.5, "finetune": 1.0, "zero_shot": 0.75}
    summary = pd.DataFrame({"accuracy": [accuracy[n] for n in present], "status": ["ok"] * len(present)},
                           index=present)
    ranking = {("finetune",): "fine-tuning (100.0 %)", ("svm",): "features + SVM (50.0 %)",
               # by accuracy, not by name
               ("svm", "zero_shot"): "zero-shot mapping (original rule) (75.0 %) > features + SVM (50.0 %)"}
    assert q1.findings(summary, parts, {}) == f"**Ranking in this run:** {ranking[tuple(present)]}."  # nothing else


def test_load_data_generates_the_synthetic_set_the_parameters_size(isolated_root):
    P = q1.parameters({**default_parameters("q1", "smoke"), "synthetic_train_per_class": 3,
                       "synthetic_test_per_class": 2, "seed": 7})
    data = q1.load_data(P)
    # the generator's seed is fixed (0): the split seed chooses subsets, never other images
    assert data.source == str(isolated_root / "data" / "synthetic" / "stl10" / "seed0-test_per_class2-train_per_class3")
    assert torch.bincount(data.train.labels).tolist() == [3] * 10 and torch.bincount(data.test.labels).tolist() == [2] * 10
    assert len(data.val) == 0 and data.split_seed == 7  # fine-tuning carves its own validation split, with seed 7
    same = q1.load_data(P)
    assert same.key == data.key and torch.equal(same.train.images, data.train.images)
    # the split seed is part of the data's identity (it decides fine-tuning's split), as is the training subset
    assert q1.load_data({**P, "seed": 8}).key != data.key
    fewer = q1.load_data({**P, "train_per_class": 2})
    assert fewer.key != data.key and torch.bincount(fewer.train.labels).tolist() == [2] * 10


def test_load_data_draws_the_training_subset_with_the_split_seed(isolated_root):
    from labkit.data import per_class_subset
    P = q1.parameters({**default_parameters("q1", "smoke"), "synthetic_train_per_class": 4,
                       "synthetic_test_per_class": 1, "train_per_class": 2})
    full = q1.load_data({**P, "train_per_class": None})
    chosen = {}
    for seed in (7, 8):
        data = q1.load_data({**P, "seed": seed})
        index = per_class_subset(full.train.labels.numpy(), 2, seed)
        assert torch.equal(data.train.images, full.train.images[index]), seed
        assert torch.equal(data.test.images, full.test.images)  # the test set is never reduced
        chosen[seed] = index.tolist()
    assert chosen[7] != chosen[8]


@pytest.mark.parametrize("source", ["synthetic", "real"])
def test_load_data_reads_the_folder_data_dir_names(isolated_root, tmp_path, source):
    from labkit.data.synthetic import write_stl10
    folder = write_stl10(tmp_path / "elsewhere", train_per_class=2, test_per_class=1, seed=3)
    P = q1.parameters({**default_parameters("q1", "smoke"), "data_source": source, "data_dir": str(folder)})
    data = q1.load_data(P)
    assert data.source == str(folder) and len(data.train) == 20 and len(data.test) == 10


def test_load_data_finds_the_real_set_where_make_data_puts_it(isolated_root):
    from labkit.data.synthetic import write_stl10
    write_stl10(isolated_root / "data" / "stl10", train_per_class=2, test_per_class=3, seed=3)
    data = q1.load_data(q1.parameters({**default_parameters("q1", "smoke"), "data_source": "real"}))
    assert data.source == str(isolated_root / "data" / "stl10") and (len(data.train), len(data.test)) == (20, 30)


@pytest.mark.parametrize("kernel, c", [("linear", 0.5), ("rbf", 20.0)])
def test_train_svm_standardises_then_fits_one_binary_svm_per_class(kernel, c):
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    x = np.array([[0.0, 0.0], [1.0, 1.0], [10.0, 0.0], [11.0, 1.0], [0.0, 10.0], [1.0, 11.0]])
    y = np.array([0, 0, 1, 1, 2, 2])
    svm = q1.train_svm(x, y, kernel, c, seed=3)
    scaler, ovr = svm
    assert type(scaler) is StandardScaler and type(ovr) is OneVsRestClassifier and len(svm) == 2
    assert scaler.mean_ == pytest.approx([23 / 6, 23 / 6])  # fitted on the training features
    assert len(ovr.estimators_) == 3 and all(type(e) is SVC for e in ovr.estimators_)  # one-vs-rest: one per class
    assert [(e.kernel, e.C, e.gamma) for e in ovr.estimators_] == [(kernel, c, "scale")] * 3
    assert svm.predict(np.array([[0.5, 0.5], [10.5, 0.5], [0.5, 10.5]])).tolist() == [0, 1, 2]
    assert svm.decision_function(x).shape == (6, 3)


def test_parameters_are_validated_and_write_to_q1s_folder(isolated_root):
    P = q1.parameters({**default_parameters("q1", "smoke"), "output_dir": None, "svm_c": 2})
    assert P["output_dir"] == str(isolated_root / "reports" / "smoke" / "q1") and P["svm_c"] == 2.0
    with pytest.raises(ParameterError, match="'train_per_class' = 1 is out of range"):  # Q1's own specs
        q1.parameters({**default_parameters("q1", "smoke"), "train_per_class": 1})


def test_plan_refuses_a_run_without_a_known_name_saying_which():
    P = q1.parameters(default_parameters("q1"))
    allowed = "allowed: svm, zero_shot, zero_shot_restricted, finetune"
    with pytest.raises(ParameterError) as refused:
        q1.plan({**P, "runs": [{"name": "svm"}, "finetune"]})  # a bare string, not a run
    assert str(refused.value) == f"runs[1]: name=None is not allowed; {allowed}"
    with pytest.raises(ParameterError) as refused:
        q1.plan({**P, "runs": [{"name": "svm"}, {"name": "zero_shot"}, {"name": "knn"}]})
    assert str(refused.value) == f"runs[2]: name='knn' is not allowed; {allowed}"


def test_plan_refuses_settings_a_method_does_not_use_naming_the_ones_it_does():
    P = q1.parameters(default_parameters("q1"))
    with pytest.raises(ParameterError) as refused:
        q1.plan({**P, "runs": [{"name": "finetune"}, {"name": "svm", "lr": 0.1, "epochs": 2, "svm_c": 1.0}]})
    # sorted, quoted; the backbone's settings (weights, arch, image_size) are notebook parameters, not run keys
    assert str(refused.value) == ("runs[1] (svm): key(s) 'epochs', 'lr' do not apply to svm; allowed: "
                                  "feature_layer, svm_kernel, svm_c")
    with pytest.raises(ParameterError) as refused:
        q1.plan({**P, "runs": [{"name": "zero_shot", "svm_c": 1.0}]})
    assert str(refused.value) == "runs[0] (zero_shot): key(s) 'svm_c' do not apply to zero_shot; allowed: "


def test_plan_keeps_each_methods_own_settings_and_names_the_method():
    P = q1.parameters({**default_parameters("q1"), "svm_c": 0.7, "lr": 0.003})
    planned = q1.plan({**P, "seeds": [4, 6, 9], "runs": [{"name": "svm", "svm_kernel": "rbf"}, {"name": "zero_shot"},
                                                         {"name": "zero_shot_restricted"}, {"name": "finetune"}]})
    (svm,), (zs,), (zsr,) = planned["svm"]["svm"], planned["zero_shot"]["zero_shot"], \
        planned["zero_shot"]["zero_shot_restricted"]
    backbone = {"weights": P["weights"], "arch": P["arch"], "image_size": P["image_size"]}
    assert svm.settings == {**backbone, "feature_layer": P["feature_layer"], "svm_kernel": "rbf", "svm_c": 0.7,
                            "method": "svm"} and svm.seed == 4  # one run, the first seed
    # the two zero-shot rules share every setting but the method: two runs, two keys
    assert zs.settings == {**backbone, "method": "zero_shot"} and zsr.settings == {**backbone,
                                                                                   "method": "zero_shot_restricted"}
    finetune = planned["finetune"]["finetune"]
    assert [r.seed for r in finetune] == [4, 6, 9] and finetune[0]["lr"] == 0.003
    assert set(finetune[0].settings) == {*q1.METHODS["finetune"], "method"}


def test_plan_refuses_an_optimizer_setting_its_optimizer_would_ignore_naming_the_run():
    P = q1.parameters(default_parameters("q1"))
    with pytest.raises(ParameterError) as refused:
        q1.plan({**P, "runs": [{"name": "finetune", "optimizer": "adam", "momentum": 0.9}]})
    assert str(refused.value).startswith("run 'finetune': momentum=0.9 does not apply to optimizer='adam'")


def test_load_data_key_changes_with_the_test_set_alone(isolated_root, tmp_path):
    """Checkpoints and results are keyed by the data: a new test set (same training images) is new data."""
    import shutil
    from labkit.data.synthetic import write_stl10
    folder = write_stl10(tmp_path / "stl", train_per_class=2, test_per_class=1, seed=3)
    P = q1.parameters({**default_parameters("q1", "smoke"), "data_dir": str(folder)})
    before = q1.load_data(P)
    other = write_stl10(tmp_path / "other", train_per_class=2, test_per_class=2, seed=3)
    for name in ("test_X.bin", "test_y.bin"):
        shutil.copy(other / "stl10_binary" / name, folder / "stl10_binary" / name)
    after = q1.load_data(P)
    assert torch.equal(after.train.images, before.train.images) and after.train.key == before.train.key
    assert (len(before.test), len(after.test)) == (10, 20) and after.key != before.key
