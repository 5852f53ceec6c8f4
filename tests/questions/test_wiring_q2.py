"""Q2's run settings reach the code they control: each one set away from its library default (and the notebook's)
and observed where it acts — the optimizer's param_groups, the loss terms fit receives, the P x K sampler's
draws, the batches' shapes and pixels, the update count, the checkpoint — at smoke size (4 classes, 40 training
images of 32 pixels, a ResNet in shape only (conftest.tiny_resnet: the wiring does not need the stand-in's
pre-training), one or two epochs)."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from conftest import FitSpy, tiny_resnet
from labkit.questions import q2_losses as q2
from labkit.data import Batches
from labkit.training.losses import ModelOutput, triplet_term
from labkit.questions.registry import default_parameters

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def tiny_backbone(monkeypatch):
    monkeypatch.setattr(q2, "resnet", tiny_resnet)


@pytest.fixture(scope="module")
def P(module_root):
    return q2.parameters(default_parameters("q2", "smoke"))


def load(P, **over):
    return q2.load_data({**P, **over})


@pytest.fixture(scope="module")
def data(P):
    return load(P)


def train(P, data, monkeypatch, keep="none", seeds=(0,), **run):
    spy = FitSpy(monkeypatch, q2)
    planned = q2.plan({**P, "seeds": list(seeds), "runs": [{"name": "r", **run}]})
    outcomes = [q2.train_and_test(r, data, CPU, keep_checkpoints=keep) for r in planned["losses"]["r"]]
    return (outcomes[0], spy.calls[0]) if len(seeds) == 1 else (outcomes, spy.calls)


def term(call, name):
    (found,) = [t for t in call["loss_terms"] if t.name == name]
    return found


@pytest.mark.parametrize("lr", [1e-4, 0.02])
def test_lr_reaches_adam(P, data, monkeypatch, lr):
    out, call = train(P, data, monkeypatch, loss="ce", lr=lr)
    assert type(call["optimizer"]) is torch.optim.Adam
    (group,) = call["groups"]
    assert group["lr"] == pytest.approx(lr) and out.cost["updates"] > 0


def test_batch_size_and_epochs_reach_the_batches_and_the_update_count(P, data, monkeypatch):
    out, call = train(P, data, monkeypatch, loss="ce", batch_size=6, epochs=2)
    n = len(data.train)
    assert call["train"].batch_size == 6 and call["epochs"] == 2
    assert [s[0] for s in call["shapes"]] == ([6] * (n // 6) + ([n % 6] if n % 6 else [])) * 2
    assert out.cost["epochs"] == 2 and out.cost["updates"] == 2 * math.ceil(n / 6) == len(out.history.updates)


def test_the_cross_entropy_run_has_one_term(P, data, monkeypatch):
    _, call = train(P, data, monkeypatch, loss="ce", loss_weight=0.7)
    assert [(t.name, t.weight) for t in call["loss_terms"]] == [("cross_entropy", 1.0)]
    assert call["train"].order == "shuffle"


def test_center_settings_reach_the_center_term(P, data, monkeypatch):
    _, call = train(P, data, monkeypatch, loss="ce_center", loss_weight=0.37, center_alpha=0.23)
    center = term(call, "center")
    assert center.weight == 0.37 and center.module.alpha == 0.23
    assert center.module.centers.shape == (len(data.train.classes), call["model"].head.in_features)
    assert bool(center.module.initialized.any())  # it took part in training


def _triplet_value(t, seed=0):
    """The term on a fixed batch of 4 classes x 3 embeddings."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(12, 8, generator=g)
    y = torch.arange(4).repeat_interleave(3)
    return float(t.fn(ModelOutput(torch.zeros(12, 4), emb), y))


@pytest.mark.parametrize("margin, miner", [(0.5, "all"), (0.07, "batch_hard"), (0.3, "semihard")])
def test_triplet_settings_reach_the_triplet_term_and_the_sampler(P, data, monkeypatch, margin, miner):
    out, call = train(P, data, monkeypatch, loss="ce_triplet", loss_weight=0.4, margin=margin, miner=miner,
                      batch_size=9, m_per_class=3, epochs=1)
    triplet = term(call, "triplet")
    assert triplet.weight == 0.4
    value = _triplet_value(triplet)
    assert value == pytest.approx(_triplet_value(triplet_term(0.4, margin, miner)))  # behaves as built with these
    # ... and unlike one built with another margin, or with the other miners
    assert _triplet_value(triplet_term(0.4, margin + 0.3, miner)) != pytest.approx(value)
    assert any(_triplet_value(triplet_term(0.4, margin, other)) != pytest.approx(value)
               for other in ("all", "batch_hard", "semihard") if other != miner)
    sampler = call["train"].order
    assert isinstance(sampler, q2.PKSampler) and (sampler.m_per_class, sampler.batch_size) == (3, 9)
    assert call["train"].drop_last
    labels = call["labels_epoch0"]
    assert len(labels) == len(data.train) // 9 * 9
    for start in range(0, len(labels), 9):  # P x K: 3 classes x 3 images in every batch
        assert sorted(c for c in np.bincount(labels[start:start + 9]).tolist() if c) == [3, 3, 3]
    assert [s[0] for s in call["shapes"]] == [9] * (len(data.train) // 9)
    assert out.cost["updates"] == len(data.train) // 9


def test_the_sampler_draws_from_the_training_seed(P, data, monkeypatch):
    _, calls = train(P, data, monkeypatch, seeds=(1, 2), loss="ce_triplet", loss_weight=1.0, batch_size=8,
                     m_per_class=2)
    assert [c["train"].order.seed for c in calls] == [1, 2]
    assert calls[0]["labels_epoch0"] != calls[1]["labels_epoch0"]


@pytest.mark.parametrize("augment", [True, False])
def test_augment_reaches_the_training_batches(P, data, monkeypatch, augment):
    _, call = train({**P, "augment": not augment}, data, monkeypatch, loss="ce", augment=augment)
    batches = call["train"]
    assert batches.augment is augment
    plain = Batches(data.train.images, data.train.labels, batches.batch_size, order=batches.indices(),
                    image_size=batches.image_size)
    x, _ = next(iter(batches))
    x_plain, _ = next(iter(plain))
    assert torch.equal(x, x_plain) is not augment  # augmented pixels differ from the plain ones


def test_image_size_reaches_the_network(P, data, monkeypatch):
    _, call = train({**P, "image_size": 24}, data, monkeypatch, loss="ce", batch_size=8)
    assert {s[1:] for s in call["shapes"]} == {(3, 24, 24)}


@pytest.mark.parametrize("val_fraction, n_val", [(0.25, 10), (0.5, 20)])  # of 40 (the smoke profile's 0.15: 6)
def test_val_fraction_sizes_the_splits(P, monkeypatch, val_fraction, n_val):
    data = load(P, val_fraction=val_fraction)
    assert len(data.train) + len(data.val) == P["num_classes"] * P["synthetic_train_per_class"] == 40
    assert len(data.val) == n_val
    out, call = train(P, data, monkeypatch, loss="ce")
    assert len(call["val"].labels) == len(data.val) and out.history.images == len(data.train)


def test_each_training_seed_trains_from_scratch_with_its_own_checkpoint(P, data, monkeypatch):
    outs, calls = train(P, data, monkeypatch, keep="final", seeds=(3, 4), loss="ce", batch_size=8)
    paths = [c["checkpoint"] for c in calls]
    assert paths[0] != paths[1] and all(p.exists() for p in paths)
    # each seed shuffles its own batch order
    assert [c["train"].seed for c in calls] == [3, 4] and calls[0]["labels_epoch0"] != calls[1]["labels_epoch0"]
    assert [o.history.resumed_from_epoch for o in outs] == [0, 0]
    assert all(o.cost["updates"] == math.ceil(len(data.train) / 8) for o in outs)
    assert [u["loss"] for u in outs[0].history.updates] != [u["loss"] for u in outs[1].history.updates]


def test_precision_reaches_fit_predict_and_the_channels_layout(P, data, monkeypatch):
    """bf16 trains channels-last (faster there), fp32 on the CPU not (slower there); both recorded."""
    for precision, channels_last in (("bf16", True), ("fp32", False)):
        out, call = train({**P, "precision": precision}, data, monkeypatch, loss="ce", batch_size=8)
        assert call["precision"] == out.settings["precision"] == precision
        assert call["channels_last"] is channels_last and call["train"].channels_last is channels_last


def test_train_per_class_keeps_that_many_training_images_and_every_test_image(P, data):
    fewer = load(P, train_per_class=3)
    assert fewer.test.labels.tolist() == data.test.labels.tolist()
    assert torch.bincount(fewer.train.labels).tolist() == [3] * P["num_classes"]
    assert len(fewer.val) == len(data.val)  # the validation share is carved first, from every image


class PredictSpy:
    """``predict`` replaced by a call-through that keeps the batches, device and precision it was given and what
    it returned."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = q2.predict

        def predict(model, batches, device=None, precision="fp32"):
            out = real(model, batches, device, precision)
            self.calls.append({"batches": batches, "device": device, "precision": precision, "out": out})
            return out

        monkeypatch.setattr(q2, "predict", predict)


def test_validation_and_test_batches_and_what_the_outcome_keeps_of_the_test_pass(P, data, monkeypatch):
    """Validation and test go through in order (labels as in the split), 256 images a batch (what the forecast
    times), at the run's image size, layout and device; the test pass in the run's precision; the outcome keeps its
    labels, predictions, confidences and embeddings, and scores them: macro-F1 as sklearn computes it, retrieval of those
    embeddings."""
    spy = PredictSpy(monkeypatch)
    out, call = train({**P, "image_size": 24, "precision": "bf16"}, data, monkeypatch, seeds=(2,), loss="ce")
    val = call["val"]
    assert (val.order, val.batch_size, val.image_size, val.channels_last, val.device, val.augment) == \
        ("sequential", 256, 24, True, CPU, False)
    assert val.labels.tolist() == data.val.labels.tolist()
    ((test_call),) = spy.calls
    test = test_call["batches"]
    assert (test.order, test.batch_size, test.image_size, test.channels_last, test.device) == \
        ("sequential", 256, 24, True, CPU)
    assert test_call["precision"] == "bf16" and test_call["device"] == CPU
    p = test_call["out"]
    assert out.name == "r" and out.seed == 2 and out.y_true.tolist() == data.test.labels.tolist()
    assert np.array_equal(out.y_pred, p["predictions"].numpy())
    assert np.array_equal(out.confidence, p["confidence"].numpy())
    assert np.array_equal(out.artifacts["embeddings"], p["embeddings"].numpy())
    assert out.artifacts["embeddings"].shape == (len(data.test), call["model"].head.in_features)
    assert set(out.metrics) == {"macro_f1", "precision_at_1", "map_at_r"}
    assert out.metrics["macro_f1"] == pytest.approx(f1_score(out.y_true, out.y_pred, average="macro",
                                                             labels=list(range(len(data.train.classes))),
                                                             zero_division=0))
    assert {k: out.metrics[k] for k in ("precision_at_1", "map_at_r")} == q2.retrieval(p["embeddings"], p["labels"])


def test_a_diverged_run_keeps_its_predictions_but_no_metrics(P, data, monkeypatch):
    real = q2.fit

    def diverging(*args, **kw):
        history = real(*args, **kw)
        history.status = "diverged"
        return history

    monkeypatch.setattr(q2, "fit", diverging)
    out = q2.train_and_test(q2.plan({**P, "runs": [{"name": "d", "loss": "ce"}]})["losses"]["d"][0], data, CPU,
                            keep_checkpoints="none")
    assert out.metrics == {} and len(out.y_pred) == len(data.test) and out.accuracy is None


def test_without_a_validation_split_there_are_no_validation_batches(P, monkeypatch):
    whole = load(P, val_fraction=0.0)
    out, call = train(P, whole, monkeypatch, loss="ce")
    assert call["val"] is None and out.history.images == len(whole.train) == 40


def test_the_network_is_resnet18_with_the_runs_weights(P, data, monkeypatch):
    built = []
    monkeypatch.setattr(q2, "resnet", lambda *args, **kw: built.append((args, kw)) or tiny_resnet(*args, **kw))
    train({**P, "weights": "none"}, data, monkeypatch, loss="ce")
    assert built == [(("resnet18", "none"), {})]  # not the stand-in, resnet's default weights


@pytest.mark.parametrize("image_size, precision", [(32, "fp32"), (64, "bf16")])
def test_auto_precision_on_a_cpu_with_native_bf16_follows_resnet18s_measured_rule(P, data, monkeypatch, image_size,
                                                                                    precision):
    """"auto" on such a CPU: bf16 for the ResNets from 64 px (measured faster there), fp32 below, at any batch
    size (the small CNN's rule, batch >= 4, would give bf16 at 32 px with batches of 8)."""
    import labkit.device
    monkeypatch.setattr(labkit.device, "native_bf16_cpu", lambda: True)
    out, call = train({**P, "precision": "auto", "image_size": image_size}, data, monkeypatch, loss="ce",
                      batch_size=8)
    assert out.settings["precision"] == call["precision"] == precision


def test_the_checkpoint_is_the_questions_the_runs_and_the_datas_and_the_default_keeps_it_final(P, data,
                                                                                               monkeypatch):
    """Its name: q2-<run name>-<run key of the settings as trained (precision resolved), seed, data identity>.
    Called without keep_checkpoints (the default), the final checkpoint stays; with "none" nothing does."""
    from labkit.paths import cache_dir
    from labkit.runs import run_key
    spy = FitSpy(monkeypatch, q2)
    (run,) = q2.plan({**P, "seeds": [6], "runs": [{"name": "kept", "loss": "ce", "batch_size": 16}]})["losses"]["kept"]
    out = q2.train_and_test(run, data, CPU)
    path = spy.calls[0]["checkpoint"]
    assert path == cache_dir("checkpoints") / f"q2-kept-{run_key('q2', out.settings, 6, data.key)}.pt"
    assert spy.calls[0]["keep_checkpoints"] == "final" and path.exists()
    assert spy.calls[0]["desc"] == "kept" and spy.calls[0]["device"] == CPU
    _, call = train(P, data, monkeypatch, keep="none", loss="ce", batch_size=12)
    assert call["keep_checkpoints"] == "none" and not call["checkpoint"].exists()
