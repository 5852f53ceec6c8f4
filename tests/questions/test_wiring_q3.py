"""Q3's run settings reach the code they control: each one set away from its library default (and the notebook's)
and observed where it acts — the optimizer's param_groups, the batches, the update count, the validation curve,
the gradient-flow rows, the checkpoint — at smoke size (a few dozen 16-pixel images, a small CNN, 1-2 epochs)."""
import math

import pytest
import torch

from conftest import FitSpy
from labkit.questions import q3_optimizers as q3
from labkit.data import Batches
from labkit.questions.registry import default_parameters
from labkit.training.loop import evaluate

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def P(module_root):
    return q3.parameters(default_parameters("q3", "smoke"))


def load(P, **over):
    return q3.load_data({**P, **over})


@pytest.fixture(scope="module")
def splits(P):
    return load(P)


def train(P, splits, monkeypatch, keep="none", seeds=(0,), **run):
    """One run named "r" with these settings over the smoke profile's, trained through the spy."""
    spy = FitSpy(monkeypatch, q3)
    planned = q3.plan({**P, "seeds": list(seeds), "runs_optimizers": [{"name": "r", **run}], "runs_batch_sizes": [],
                       "runs_order": [], "runs_betas": []})
    outcomes = [q3.train_and_test(r, splits, CPU, keep_checkpoints=keep) for r in planned["optimizers"]["r"]]
    return (outcomes[0], spy.calls[0]) if len(seeds) == 1 else (outcomes, spy.calls)


@pytest.mark.parametrize("settings, expected", [
    ({"optimizer": "adam", "lr": 3e-4, "betas": [0.5, 0.99]},
     {"type": torch.optim.Adam, "lr": 3e-4, "betas": (0.5, 0.99)}),
    ({"optimizer": "adam", "lr": 0.02},
     {"type": torch.optim.Adam, "lr": 0.02, "betas": (0.9, 0.999)}),
    ({"optimizer": "sgd", "lr": 0.037, "momentum": 0.6},
     {"type": torch.optim.SGD, "lr": 0.037, "momentum": 0.6}),
    ({"optimizer": "sgd", "lr": 0.004},
     {"type": torch.optim.SGD, "lr": 0.004, "momentum": 0.0}),
], ids=["adam-lr-betas", "adam-lr", "sgd-lr-momentum", "sgd-plain"])
def test_optimizer_settings_reach_the_param_groups(P, splits, monkeypatch, settings, expected):
    out, call = train(P, splits, monkeypatch, **settings)
    expected = dict(expected)  # the parameter itself stays whole for a second run in the same process (mutmut's)
    assert type(call["optimizer"]) is expected.pop("type")
    (group,) = call["groups"]
    for key, value in expected.items():
        assert group[key] == pytest.approx(value), (key, group[key])
    # every trainable parameter of the model is in the optimizer, and it stepped
    assert {id(p) for p in call["optimizer"].param_groups[0]["params"]} == {id(p) for p in call["model"].parameters()}
    assert out.cost["updates"] > 0


def test_batch_size_and_epochs_reach_the_batches_and_the_update_count(P, splits, monkeypatch):
    out, call = train(P, splits, monkeypatch, batch_size=5, epochs=2)
    n = len(splits.train)
    per_epoch = math.ceil(n / 5)
    assert call["train"].batch_size == 5 and call["epochs"] == 2
    assert [s[0] for s in call["shapes"]] == ([5] * (n // 5) + ([n % 5] if n % 5 else [])) * 2
    assert out.cost["epochs"] == 2 == len(out.history.epochs)
    assert out.cost["updates"] == 2 * per_epoch == len(out.history.updates)
    assert out.history.images == 2 * n


def test_class_sorted_order_reaches_the_batches(P, splits, monkeypatch):
    _, sorted_call = train(P, splits, monkeypatch, order="class_sorted", batch_size=8)
    labels = sorted_call["labels_epoch0"]
    assert labels == sorted(labels) and set(labels) == {0, 1}
    _, shuffled_call = train(P, splits, monkeypatch, order="shuffle", batch_size=8)
    shuffled = shuffled_call["labels_epoch0"]
    assert sorted(shuffled) == labels and shuffled != labels  # the same images in another order


def test_full_batch_order_makes_one_update_per_epoch(P, splits, monkeypatch):
    out, call = train(P, splits, monkeypatch, order="full_batch", batch_size=8, epochs=2)
    assert call["accumulate"] == "epoch"
    assert len(call["train"]) > 1  # several batches per epoch ...
    assert out.cost["updates"] == 2 and [u["epoch"] for u in out.history.updates] == [1, 2]  # ... one step each
    shuffled, plain = train(P, splits, monkeypatch, order="shuffle", batch_size=8, epochs=2)
    assert plain["accumulate"] == 1 and shuffled.cost["updates"] == 2 * len(plain["train"])


def test_the_validation_curve_is_computed_on_the_validation_split(P, splits, monkeypatch):
    out, call = train({**P, "precision": "fp32"}, splits, monkeypatch, epochs=1, lr=0.01)  # recomputed exactly
    val = call["val"]
    assert torch.equal(val.labels, splits.val.labels) and torch.equal(val.images, splits.val.images)
    model = call["model"]  # its final weights: the last epoch's curve point must be recomputable from them

    def independent(part):
        return evaluate(model, Batches(part.images, part.labels, 7, order="sequential", channels_last=True), CPU)

    on_val, on_train = independent(splits.val), independent(splits.train)
    last = out.history.epochs[-1]
    assert last["val_loss"] == pytest.approx(on_val["loss"], rel=1e-4)
    assert last["val_accuracy"] == pytest.approx(on_val["accuracy"])
    assert on_val["loss"] != pytest.approx(on_train["loss"], rel=1e-4)  # the two splits are distinguishable


@pytest.mark.parametrize("val_fraction", [0.25, 0.5])
def test_val_fraction_sizes_the_validation_batches(P, monkeypatch, val_fraction):
    splits = load(P, val_fraction=val_fraction)
    n = len(splits.train) + len(splits.val)
    assert len(splits.val) == pytest.approx(val_fraction * n, abs=1)
    out, call = train(P, splits, monkeypatch)
    assert len(call["val"].labels) == len(splits.val) and len(call["train"].labels) == len(splits.train)
    assert out.history.images == len(splits.train)


def test_image_size_reaches_the_network(P, monkeypatch):
    splits = load(P, image_size=20)
    assert splits.train.images.shape[-2:] == (20, 20)
    out, call = train(P, splits, monkeypatch, batch_size=8)
    assert {s[1:] for s in call["shapes"]} == {(3, 20, 20)}


def test_gradient_flow_every_reaches_the_recorder(P, splits, monkeypatch):
    out, call = train({**P, "gradient_flow_every": 2}, splits, monkeypatch, batch_size=4, epochs=1)
    updates = out.cost["updates"]
    assert updates >= 4
    assert sorted({r["update"] for r in call["gradient_flow"].rows}) == list(range(2, updates + 1, 2))
    flow = out.artifacts["gradient_flow"]
    assert list(flow["layer"]) == ["conv1", "bn1", "conv2", "bn2", "conv3", "linear1", "linear2"]
    assert (flow["mean_abs_grad"] > 0).all()


def test_each_training_seed_trains_from_scratch_with_its_own_checkpoint(P, splits, monkeypatch):
    """Two seeds of one run: two checkpoint files, each seed trained (not resumed from the other's final state),
    its own batch order and initialisation, so different weights."""
    outs, calls = train(P, splits, monkeypatch, keep="final", seeds=(3, 4), batch_size=8)
    paths = [c["checkpoint"] for c in calls]
    assert paths[0] != paths[1] and all(p.exists() for p in paths)
    assert [o.history.resumed_from_epoch for o in outs] == [0, 0]
    assert all(o.cost["updates"] == math.ceil(len(splits.train) / 8) for o in outs)
    assert [c["train"].seed for c in calls] == [3, 4]
    assert not torch.equal(calls[0]["train"].indices(), calls[1]["train"].indices())  # each seed's own order
    first, second = (c["model"].state_dict() for c in calls)
    assert any(not torch.equal(first[k], second[k]) for k in first if first[k].is_floating_point())
    assert [u["loss"] for u in outs[0].history.updates] != [u["loss"] for u in outs[1].history.updates]


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_precision_reaches_fit_predict_the_key_and_the_record(P, splits, monkeypatch, precision):
    """An explicit precision trains and tests in it, is recorded with the run's settings, and keys the checkpoint
    (a bf16 run never resumes an fp32 one)."""
    asked = []
    real_predict = q3.predict
    monkeypatch.setattr(q3, "predict", lambda *a, **k: asked.append(a[3]) or real_predict(*a, **k))
    out, call = train({**P, "precision": precision}, splits, monkeypatch, keep="final", batch_size=8)
    assert call["precision"] == precision and asked == [precision] and out.settings["precision"] == precision
    other = "fp32" if precision == "bf16" else "bf16"
    _, call_other = train({**P, "precision": other}, splits, monkeypatch, keep="final", batch_size=8)
    assert call["checkpoint"] != call_other["checkpoint"]


def test_auto_precision_is_resolved_before_the_key(P, splits, monkeypatch):
    from labkit import device
    monkeypatch.setattr(device, "native_bf16_cpu", lambda: True)
    out, call = train({**P, "precision": "auto"}, splits, monkeypatch, batch_size=8)
    assert out.settings["precision"] == call["precision"] == "bf16"  # the small CNN at batch >= 4
    out, call = train({**P, "precision": "auto"}, splits, monkeypatch, batch_size=1, epochs=1)
    assert out.settings["precision"] == call["precision"] == "fp32"  # batch-1 SGD: fp32 was faster


def test_train_per_class_keeps_that_many_training_images_and_every_test_image(P, splits):
    fewer = load(P, train_per_class=5)
    assert fewer.test.labels.tolist() == splits.test.labels.tolist()  # the test set is never reduced
    assert torch.bincount(fewer.train.labels).tolist() == [5, 5]
    assert set(fewer.train.image_ids()) <= set(splits.train.image_ids())  # drawn from the same training split
    assert fewer.key != splits.key


def test_the_device_batches_and_network_are_the_runs_own(P, monkeypatch, capsys):
    """Hand-made data (16-pixel noise: 24 training, 260 validation and 300 test images) so that validation and test
    take two batches of at most 256. The device is the CPU under another name, "cpu:0" (not equal to plain "cpu",
    every default), so each place that must be given it is seen to get it: the network's move, the three batch
    streams, fit. Training batches are the stored images normalised and nothing else (no augmentation); validation
    and test batches come in the split's order (the predictions are recorded per image); all three are
    channels-last, as the network is; the network has two outputs; the progress bar names the run; the outcome holds
    the run's name, seed, and the network's predictions and confidence on the test split."""
    from labkit.data import IMAGENET_MEAN, IMAGENET_STD, ImageSet
    from labkit.questions.contract import Data
    from labkit.models import SmallCNN
    monkeypatch.delenv("LABKIT_PLAIN_PROGRESS", raising=False)  # the bar is drawn (to stderr), with its name
    device = torch.device("cpu:0")
    assert device != CPU
    g = torch.Generator().manual_seed(0)

    def part(n):
        return ImageSet(torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g),
                        torch.randint(0, 2, (n,), generator=g), ["cat", "dog"])

    data = Data(part(24), part(260), part(300), "hand-made", "hand-made-noise")
    moves = []

    class Recorded(SmallCNN):
        def to(self, *args, **kwargs):
            moves.append((args, kwargs))
            return super().to(*args, **kwargs)

    monkeypatch.setattr(q3, "SmallCNN", Recorded)
    tested = []
    real_predict = q3.predict
    monkeypatch.setattr(q3, "predict", lambda model, batches, *a: tested.append(batches) or real_predict(model, batches,
                                                                                                       *a))
    spy = FitSpy(monkeypatch, q3)
    (run, _) = q3.plan({**P, "precision": "fp32", "runs_optimizers": [{"name": "batches_run", "batch_size": 8}],
                        "runs_batch_sizes": [], "runs_order": [], "runs_betas": []})["optimizers"]["batches_run"]
    out = q3.train_and_test(run, data, device, keep_checkpoints="none")
    (call,) = spy.calls
    assert any(device in args or kwargs.get("device") == device for args, kwargs in moves), moves
    assert call["device"] == device
    train, val, (test,) = call["train"], call["val"], tested
    assert [b.device for b in (train, val, test)] == [device] * 3
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    idx = train.indices()[:8]
    x, y = next(iter(train))
    assert torch.equal(y, data.train.labels[idx])
    assert torch.allclose(x, (data.train.images[idx].float() / 255 - mean) / std, atol=1e-5)  # not augmented
    for batches, split, sizes in ((val, data.val, [256, 4]), (test, data.test, [256, 44])):
        seen = list(batches)
        assert [len(b) for b, _ in seen] == sizes
        assert torch.equal(torch.cat([labels for _, labels in seen]), split.labels)  # in the split's order
        assert torch.allclose(seen[0][0], (split.images[:256].float() / 255 - mean) / std, atol=1e-5)
    assert out.y_true.tolist() == data.test.labels.tolist()
    for batches in (train, val, test):
        x, _ = next(iter(batches))
        assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    assert call["model"](x).shape == (256, 2)  # two classes, two outputs
    assert "batches_run" in capsys.readouterr().err
    # the outcome: the run's name and seed, the network's own answers on the test split in order, and their
    # softmax confidence; the checkpoint named after the question and the run, gone as `keep_checkpoints` asked
    assert (out.name, out.seed, out.settings) == ("batches_run", run.seed, run.settings)
    call["model"].eval()
    with torch.no_grad():
        logits = torch.cat([call["model"](x) for x, _ in test])
    assert out.y_pred.tolist() == logits.argmax(1).tolist()
    assert out.confidence == pytest.approx(logits.softmax(1).amax(1).numpy(), abs=1e-6)
    assert call["checkpoint"].name.startswith("q3-batches_run-") and call["keep_checkpoints"] == "none"
    assert not call["checkpoint"].exists()
