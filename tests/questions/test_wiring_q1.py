"""Q1's run settings reach the code they control: each one set away from its library default (and the notebook's)
and observed where it acts — the optimizer's param_groups, the frozen parameters, the new head, the batches'
shapes and pixels, the update count, the SVM fitted, the checkpoint — at smoke size (50 training images, a ResNet
in shape only from conftest.tiny_resnet: the wiring does not need the stand-in's pre-training)."""
import math
import time

import numpy as np

import pytest
import torch
import torch.nn as nn

from conftest import FitSpy, tiny_resnet
from labkit.questions import q1_transfer as q1
from labkit.training import standin
from labkit.data import Batches
from labkit.questions.registry import default_parameters
from labkit.params import ParameterError

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def tiny_backbone(monkeypatch):
    monkeypatch.setattr(q1, "resnet", lambda arch, weights: tiny_resnet(num_classes=len(standin.source_classes())))


@pytest.fixture(scope="module")
def P(module_root):
    return q1.parameters(default_parameters("q1", "smoke"))


@pytest.fixture(scope="module")
def data(P):
    return q1.load_data(P)


def finetune(P, data, monkeypatch, keep="none", seeds=(0,), P_over=None, **run):
    spy = FitSpy(monkeypatch, q1)
    planned = q1.plan({**P, **(P_over or {}), "seeds": list(seeds), "runs": [{"name": "finetune", **run}]})
    outcomes = [q1.train_and_test(r, data, CPU, keep_checkpoints=keep) for r in planned["finetune"]["finetune"]]
    return (outcomes[0], spy.calls[0]) if len(seeds) == 1 else (outcomes, spy.calls)


@pytest.mark.parametrize("settings, expected", [
    ({"optimizer": "adam", "lr": 3e-4}, {"type": torch.optim.Adam, "lr": 3e-4, "betas": (0.9, 0.999)}),
    ({"optimizer": "adam", "lr": 1e-5}, {"type": torch.optim.Adam, "lr": 1e-5}),
    ({"optimizer": "sgd", "lr": 0.02, "momentum": 0.9}, {"type": torch.optim.SGD, "lr": 0.02, "momentum": 0.9}),
    ({"optimizer": "sgd", "lr": 0.02, "momentum": 0.0}, {"type": torch.optim.SGD, "lr": 0.02, "momentum": 0.0}),
    ({"optimizer": "sgd", "lr": 0.02}, {"type": torch.optim.SGD, "lr": 0.02, "momentum": 0.0}),  # SGD's own default
    ({"optimizer": "adam", "betas": [0.5, 0.999]}, {"type": torch.optim.Adam, "betas": (0.5, 0.999)}),
    ({"optimizer": "adamw", "weight_decay": 0.05}, {"type": torch.optim.AdamW, "weight_decay": 0.05}),
], ids=["adam-3e-4", "adam-1e-5", "sgd-momentum-0.9", "sgd-momentum-0", "sgd-default", "adam-betas", "adamw-wd"])
def test_optimizer_and_lr_reach_the_param_groups(P, data, monkeypatch, settings, expected):
    out, call = finetune(P, data, monkeypatch, **settings)
    expected = dict(expected)  # the parameter itself stays whole for a second run in the same process (mutmut's)
    assert type(call["optimizer"]) is expected.pop("type")
    (group,) = call["groups"]
    for key, value in expected.items():
        assert group[key] == pytest.approx(value), key
    assert out.cost["updates"] > 0


@pytest.mark.parametrize("freeze_until, frozen", [
    ("layer2", ("conv1", "bn1", "layer1", "layer2")),
    ("stem", ("conv1", "bn1")),
    ("none", ()),
])
def test_freeze_until_keeps_those_stages_out_of_training(P, data, monkeypatch, freeze_until, frozen):
    _, call = finetune(P, data, monkeypatch, freeze_until=freeze_until, lr=0.05)
    model, start = call["model"], call["start"]
    trained_ids = {id(p) for p in call["optimizer"].param_groups[0]["params"]}
    after = model.state_dict()
    for name, p in model.named_parameters():
        stage = name.split(".")[1] if name.startswith("backbone.") else "head"
        if stage in frozen:
            assert not p.requires_grad and p.grad is None and id(p) not in trained_ids, name
            assert torch.equal(after[name], start[name]), name  # unchanged by training
        else:
            assert p.requires_grad and id(p) in trained_ids, name
    for stage in ("layer3", "layer4", "head"):  # what trains moved
        prefix = "head." if stage == "head" else f"backbone.{stage}."
        assert any(not torch.equal(after[k], start[k]) for k in after if k.startswith(prefix)
                   and after[k].is_floating_point()), stage
    for stage in frozen:  # frozen batch norms keep their statistics (eval mode while the rest trains)
        for k in after:
            if k.startswith(f"backbone.{stage}.") and "running_" in k:
                assert torch.equal(after[k], start[k]), k


@pytest.mark.parametrize("hidden_units, dropout", [(6, 0.3), (0, 0.4), (5, 0.0)])
def test_hidden_units_and_dropout_shape_the_new_head(P, data, monkeypatch, hidden_units, dropout):
    _, call = finetune(P, data, monkeypatch, hidden_units=hidden_units, dropout=dropout)
    head = call["model"].head
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    drops = [m.p for m in head.modules() if isinstance(m, nn.Dropout)]
    if hidden_units:
        assert [(l.in_features, l.out_features) for l in linears] == [(16, hidden_units), (hidden_units, 10)]
        assert drops == [dropout]
    else:
        assert [(l.in_features, l.out_features) for l in linears] == [(16, 10)]
        assert drops == ([dropout] if dropout else [])


def test_batch_size_and_epochs_reach_the_batches_and_the_update_count(P, data, monkeypatch):
    out, call = finetune(P, data, monkeypatch, batch_size=7, epochs=2)
    n = len(call["train"].labels)
    assert call["train"].batch_size == 7 and call["epochs"] == 2
    assert [s[0] for s in call["shapes"]] == ([7] * (n // 7) + ([n % 7] if n % 7 else [])) * 2
    assert out.cost["epochs"] == 2 and out.cost["updates"] == 2 * math.ceil(n / 7) == len(out.history.updates)


@pytest.mark.parametrize("augment", [True, False])
def test_augment_reaches_the_training_batches(P, data, monkeypatch, augment):
    _, call = finetune(P, data, monkeypatch, P_over={"augment": not augment}, augment=augment)
    batches = call["train"]
    assert batches.augment is augment
    plain = Batches(batches.images, batches.labels, batches.batch_size, order=batches.indices(),
                    image_size=batches.image_size, channels_last=True)
    assert torch.equal(next(iter(batches))[0], next(iter(plain))[0]) is not augment


def test_image_size_reaches_the_network(P, data, monkeypatch):
    _, call = finetune(P, data, monkeypatch, P_over={"image_size": 40})
    assert {s[1:] for s in call["shapes"]} == {(3, 40, 40)}


@pytest.mark.parametrize("val_fraction, n_val", [(0.2, 10), (0.4, 20)])  # of 50 (the smoke profile's 0.15: 10)
def test_val_fraction_carves_the_validation_split(P, data, monkeypatch, val_fraction, n_val):
    out, call = finetune(P, data, monkeypatch, val_fraction=val_fraction)
    assert len(data.train) == 50 and len(call["val"].labels) == n_val
    n_train = len(call["train"].labels)
    assert n_val + n_train == len(data.train)
    assert out.history.images == n_train and "val_loss" in out.history.epochs[-1]


def test_each_training_seed_trains_from_scratch_with_its_own_checkpoint(P, data, monkeypatch):
    outs, calls = finetune(P, data, monkeypatch, keep="final", seeds=(3, 4), batch_size=8)
    paths = [c["checkpoint"] for c in calls]
    assert paths[0] != paths[1] and all(p.exists() for p in paths)
    assert [o.history.resumed_from_epoch for o in outs] == [0, 0]
    assert [c["train"].seed for c in calls] == [3, 4]
    assert [u["loss"] for u in outs[0].history.updates] != [u["loss"] for u in outs[1].history.updates]


@pytest.mark.parametrize("layer, kernel, c", [("avgpool", "rbf", 3.5), ("fc", "linear", 0.02)])
def test_svm_settings_reach_the_svm(P, data, monkeypatch, layer, kernel, c):
    fitted = []
    real = q1.train_svm
    monkeypatch.setattr(q1, "train_svm", lambda x, y, k, cc, seed: fitted.append((x.shape, real(x, y, k, cc, seed)))
                        or fitted[-1][1])
    (run,) = q1.plan({**P, "runs": [{"name": "svm", "feature_layer": layer, "svm_kernel": kernel,
                                     "svm_c": c}]})["svm"]["svm"]
    out = q1.train_and_test(run, data, CPU)
    ((shape, svm),) = fitted
    dim = 16 if layer == "avgpool" else len(standin.source_classes())
    assert shape == (len(data.train), dim) and out.artifacts["dim"] == dim
    base = svm[-1].estimator
    assert (base.kernel, base.C) == (kernel, c)


def test_precision_reaches_fine_tuning_but_never_the_feature_pass(P, data, monkeypatch):
    asked = []
    real = q1.predict
    monkeypatch.setattr(q1, "predict", lambda *a, **k: asked.append(k.get("precision", a[3] if len(a) > 3 else None))
                        or real(*a, **k))
    out, call = finetune(P, data, monkeypatch, P_over={"precision": "bf16"})
    assert call["precision"] == out.settings["precision"] == "bf16" and asked == ["bf16"]
    svm = q1.plan({**P, "precision": "bf16", "runs": [{"name": "svm"}]})["svm"]["svm"][0]
    assert "precision" not in svm.settings  # not in the SVM's key: its feature pass is fp32 whatever is asked
    # (that the pass asks predict for fp32: test_q1_transfer.test_the_feature_pass_runs_in_full_precision)


def test_train_per_class_serves_the_svm_and_fine_tuning_and_keeps_every_test_image(P, data):
    fewer = q1.load_data({**P, "train_per_class": 2})
    assert torch.bincount(fewer.train.labels).tolist() == [2] * 10
    assert fewer.test.labels.tolist() == data.test.labels.tolist()


def test_finetune_outcome_holds_the_trained_networks_test_predictions(P, data, monkeypatch):
    """The test set evaluated once, in order, by the network as trained: predictions, their softmax
    probabilities and the macro F1 over the 10 classes, recomputed here from the model itself."""
    from sklearn.metrics import f1_score
    tested = []
    real = q1.predict
    monkeypatch.setattr(q1, "predict", lambda model, batches, *a, **k: tested.append(batches) or real(model, batches,
                                                                                                       *a, **k))
    out, call = finetune(P, data, monkeypatch, P_over={"image_size": 40})
    (batches,) = tested
    # the test batches: as passes() forecasts them (batch 128), in order, as the training batches are shaped
    (forecast,) = [p for p in q1.passes({**P, "runs": [{"name": "finetune"}]}) if p.what.endswith("test")]
    assert batches.batch_size == forecast.setting.batch_size == 128 and torch.equal(batches.indices(),
                                                                                   torch.arange(len(data.test)))
    assert (batches.image_size, batches.channels_last, batches.device) == (40, True, CPU)
    model = call["model"].eval()
    plain = Batches(data.test.images, data.test.labels, len(data.test), order="sequential", image_size=40)
    with torch.no_grad():
        logits = model(next(iter(plain))[0])
        logits = getattr(logits, "logits", logits)
    assert torch.equal(torch.as_tensor(out.y_pred), logits.argmax(1))
    assert out.confidence == pytest.approx(logits.softmax(1).amax(1).numpy(), abs=1e-5)
    assert torch.equal(torch.as_tensor(out.y_true), data.test.labels)
    assert out.metrics == {"macro_f1": pytest.approx(f1_score(data.test.labels.numpy(), out.y_pred, average="macro",
                                                              labels=list(range(10)), zero_division=0))}
    assert out.history is call["history"] and out.cost == call["history"].cost()
    assert (out.name, out.seed) == ("finetune", 0) and out.settings["precision"] == "fp32"  # "auto", resolved


def test_a_diverged_fine_tuning_run_has_no_macro_f1(P, data, monkeypatch):
    out, _ = finetune(P, data, monkeypatch, optimizer="sgd", lr=1e30)
    assert out.history.status == "diverged" and out.metrics == {"macro_f1": None}


def test_fine_tuning_trains_channels_last_on_the_runs_device_with_its_own_progress_label(P, data, monkeypatch):
    moved = []
    real = q1.classifier

    def classifier(*args, **kwargs):
        model = real(*args, **kwargs)
        to = model.to
        model.to = lambda *a, **k: moved.append(a) or to(*a, **k)
        return model

    monkeypatch.setattr(q1, "classifier", classifier)
    _, call = finetune(P, data, monkeypatch)
    assert moved[0] == (CPU,) and call["device"] == CPU and call["train"].device == call["val"].device == CPU
    assert call["channels_last"] is True and call["train"].channels_last and call["val"].channels_last
    x, _ = next(iter(call["val"]))
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    conv = call["model"].backbone.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert call["desc"] == "fine-tune"


def test_validation_is_the_split_seeds_stratified_share_in_order(P, data, monkeypatch):
    from dataclasses import replace
    from labkit.data import stratified_split
    splits = {}
    for seed in (0, 5):
        _, call = finetune(P, replace(data, split_seed=seed), monkeypatch, val_fraction=0.2)
        train_idx, val_idx = stratified_split(data.train.labels.numpy(), 0.2, seed)
        assert torch.equal(call["val"].images, data.train.images[val_idx])
        assert torch.equal(call["train"].images, data.train.images[train_idx])
        assert call["val"].batch_size == 128 and torch.equal(call["val"].indices(), torch.arange(10))
        assert call["val"].image_size == P["image_size"]
        splits[seed] = val_idx.tolist()
    assert splits[0] != splits[5]


def test_too_few_images_for_the_validation_split_names_val_fraction(P, data, monkeypatch):
    from dataclasses import replace
    labels = data.train.labels.numpy()
    keep = [i for i in range(len(labels)) if labels[i] != 3] + [int(np.flatnonzero(labels == 3)[0])]
    with pytest.raises(ParameterError) as refused:
        finetune(P, replace(data, train=data.train.subset(sorted(keep))), monkeypatch)
    assert str(refused.value) == ("val_fraction=0.15: too few images for this split (46 images; class 3 has 1): "
                                  "every class needs at least 2, one on each side. Use more images per class or "
                                  "val_fraction=0 (no validation split)")


@pytest.mark.parametrize("keep, seed", [("none", 7), ("final", 17)])  # a run of its own each: no resuming
def test_keep_checkpoints_decides_whether_the_final_checkpoint_stays(P, data, monkeypatch, keep, seed):
    from labkit.runs import run_key
    out, call = finetune(P, data, monkeypatch, keep=keep, seeds=(seed,), batch_size=9)
    # q1-<run name>-<key of the resolved settings, seed and data>.pt: `python -m labkit cache` reads the question
    key = run_key("q1", out.settings, seed, data.key)
    assert call["checkpoint"] == q1.cache_dir("checkpoints") / f"q1-finetune-{key}.pt"
    assert call["checkpoint"].exists() is (keep == "final")


def test_the_default_is_to_keep_the_final_checkpoint(P, data, monkeypatch):
    spy = FitSpy(monkeypatch, q1)
    (run,) = q1.plan({**P, "seeds": [8], "runs": [{"name": "finetune", "batch_size": 11}]})["finetune"]["finetune"]
    q1.train_and_test(run, data, CPU)
    (run,) = q1.plan({**P, "seeds": [9], "runs": [{"name": "finetune", "batch_size": 11}]})["finetune"]["finetune"]
    q1.finetune(q1.with_precision(run, CPU, "resnet18", 32), data, CPU)
    assert [c["keep_checkpoints"] for c in spy.calls] == ["final", "final"]
    assert all(c["checkpoint"].exists() for c in spy.calls)


@pytest.mark.parametrize("image_size, precision", [(64, "bf16"), (32, "fp32")])
def test_auto_precision_is_resolved_for_the_runs_network_and_image_size(P, data, monkeypatch, image_size, precision):
    """On a CPU with native bf16, "auto" trains ResNets in bf16 from 64 px up (labkit.device.resolve_precision)."""
    import labkit.device
    monkeypatch.setattr(labkit.device, "native_bf16_cpu", lambda: True)
    out, call = finetune(P, data, monkeypatch, P_over={"image_size": image_size, "precision": "auto"}, epochs=1)
    assert out.settings["precision"] == call["precision"] == precision


@pytest.fixture
def backbones(module_root, monkeypatch):
    """A fixed ResNet in shape only per architecture (the autouse one is new, random, at each call): what the
    features must come from."""
    # seed 6: a net whose largest source logit is an unmapped class for about 20 of the 30 test images and a mapped
    # one for the rest (most random tiny nets pick one class for every image), so both zero-shot rules show
    torch.manual_seed(6)
    made = {arch: tiny_resnet(num_classes=len(standin.source_classes())) for arch in ("resnet18", "resnet50")}
    made["asked"] = []  # (arch, weights) of each backbone built
    # features are cached by the weights' name, and other tests here computed some with other nets of that name
    for cached in q1.cache_dir("features").glob("*.pt"):
        cached.unlink()
    import copy
    monkeypatch.setattr(q1, "resnet", lambda arch, weights: made["asked"].append((arch, weights))
                        or copy.deepcopy(made[arch]))
    return made


def features_of(model, images, run):
    return q1.extract(model, images, image_size=run["image_size"], device=CPU, weights=run["weights"], arch=run["arch"])


def test_svm_outcome_is_fitted_on_the_training_features_and_scored_on_the_test_features(P, data, backbones):
    from sklearn.metrics import f1_score, roc_auc_score
    from sklearn.preprocessing import label_binarize
    (run,) = q1.plan({**P, "image_size": 40, "runs": [{"name": "svm", "svm_kernel": "rbf", "svm_c": 5.0,
                                                       "feature_layer": "fc"}]})["svm"]["svm"]
    started = time.perf_counter()
    out = q1.train_and_test(run, data, CPU)
    elapsed = time.perf_counter() - started
    model = backbones[run["arch"]]
    train, test = features_of(model, data.train.images, run)["fc"], features_of(model, data.test.images, run)["fc"]
    svm = q1.train_svm(train.numpy(), data.train.labels.numpy(), "rbf", 5.0, 0)
    y = data.test.labels.numpy()
    assert np.array_equal(out.y_pred, svm.predict(test.numpy())) and np.array_equal(out.y_true, y)
    scores = svm.decision_function(test.numpy())
    assert out.metrics == {
        "macro_f1": pytest.approx(f1_score(y, out.y_pred, average="macro", labels=list(range(10)), zero_division=0)),
        "auc_macro": pytest.approx(np.mean([roc_auc_score(y == c, scores[:, c]) for c in range(10)])),
        "auc_micro": pytest.approx(roc_auc_score(label_binarize(y, classes=list(range(10))), scores,
                                                 average="micro"))}
    assert out.artifacts["dim"] == 40 and set(out.artifacts["roc"]) == {*data.train.classes, "micro", "macro"}
    assert out.artifacts["roc"]["macro"]["auc"] == out.metrics["auc_macro"]
    assert (out.name, out.settings, out.seed, out.history) == ("svm", run.settings, 0, None)
    # the SVM's fit alone, within the whole call; no epochs, updates nor threads for an SVM
    seconds = out.cost.pop("train_seconds")
    assert 0 < seconds < elapsed and out.cost == {"train_images_per_second": pytest.approx(50 / seconds),
                                                  "epochs": None, "updates": None, "torch_threads": None}


@pytest.mark.parametrize("method", ["zero_shot", "zero_shot_restricted"])
def test_zero_shot_outcome_maps_the_test_images_source_logits(P, data, backbones, method):
    (run,) = q1.plan({**P, "runs": [{"name": method}]})["zero_shot"][method]
    out = q1.train_and_test(run, data, CPU)
    logits = features_of(backbones[run["arch"]], data.test.images, run)["fc"]
    mapping = standin.source_to_stl10()
    mapped = torch.tensor(sorted(mapping))
    probs = logits.softmax(1)
    if method == "zero_shot":  # the largest of the 40 source logits, "other" (10) for the 22 unmapped classes
        chosen = logits.argmax(1)
        expected = [mapping.get(int(c), 10) for c in chosen]
        assert 0 < expected.count(10) < len(expected) and out.metrics == {"other_rate": pytest.approx(expected.count(10) / len(expected))}
    else:  # the largest of the 18 mapped ones: never "other"
        chosen = mapped[logits[:, mapped].argmax(1)]
        expected = [mapping[int(c)] for c in chosen]
        assert out.metrics == {}
    assert out.y_pred.tolist() == expected and np.array_equal(out.y_true, data.test.labels.numpy())
    assert out.confidence == pytest.approx(probs.gather(1, chosen[:, None])[:, 0].numpy())
    assert out.artifacts == {"source_name": "the stand-in's synthetic source task (40 classes)", "mapped": 18}
    assert (out.name, out.settings, out.seed, out.history) == (method, run.settings, 0, None)


def test_features_come_from_the_runs_backbone_for_both_splits_and_are_cached_per_architecture(P, data, backbones):
    runs = {arch: q1.plan({**P, "arch": arch, "image_size": 24, "runs": [{"name": "svm"}]})["svm"]["svm"][0]
            for arch in ("resnet18", "resnet50")}
    got = {arch: q1.features(data, run, CPU) for arch, run in runs.items()}
    assert backbones["asked"] == [("resnet18", "standin-smoke"), ("resnet50", "standin-smoke")]
    for arch, (train, test, mapping, name) in got.items():
        model = backbones[arch]
        model.eval()
        plain = Batches(data.train.images, data.train.labels, 100, order="sequential", image_size=24)
        with torch.no_grad():
            expected = model(next(iter(plain))[0])
        assert torch.allclose(train["fc"], expected, atol=1e-5), arch
        assert test["fc"].shape == (len(data.test), 40) and test["avgpool"].shape == (len(data.test), 16)
        assert mapping == standin.source_to_stl10() and name.startswith("the stand-in's")
    # two backbones with the same weights name: two cache entries, not one served twice
    assert not torch.allclose(got["resnet18"][1]["fc"], got["resnet50"][1]["fc"])


def test_fine_tuning_starts_from_the_runs_backbone_and_weights(P, data, monkeypatch, backbones):
    _, call = finetune(P, data, monkeypatch, P_over={"arch": "resnet50"})
    assert backbones["asked"] == [("resnet50", "standin-smoke")]
    start = call["start"]
    for name, value in backbones["resnet50"].state_dict().items():  # the backbone as built, before training
        if not name.startswith("fc."):  # its source head replaced by the new one
            assert torch.equal(start[f"backbone.{name}"], value), name


def test_every_batch_goes_to_the_runs_device(P, data, monkeypatch):
    """``cpu:0`` is the CPU under another name: where each batch is sent is seen on a machine without a GPU."""
    device = torch.device("cpu", 0)
    tested = []
    real = q1.predict
    monkeypatch.setattr(q1, "predict", lambda model, batches, *a, **k: tested.append(batches) or real(model, batches,
                                                                                                       *a, **k))
    spy = FitSpy(monkeypatch, q1)
    (run,) = q1.plan({**P, "runs": [{"name": "finetune"}]})["finetune"]["finetune"]
    q1.train_and_test(run, data, device, keep_checkpoints="none")
    (call,) = spy.calls
    assert call["train"].device == call["val"].device == tested[0].device == device != torch.device("cpu")
