"""Q2's run settings reach the code they control: each one set away from its library default (and the notebook's)
and observed where it acts — the optimizer's param_groups, the loss terms fit receives, the P x K sampler's
draws, the batches' shapes and pixels, the update count, the checkpoint — at smoke size (4 classes, 40 training
images of 32 pixels, a ResNet in shape only (conftest.tiny_resnet: the wiring does not need the stand-in's
pre-training), one or two epochs)."""
import math

import numpy as np
import pytest
import torch

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
