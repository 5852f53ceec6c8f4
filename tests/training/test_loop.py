import math

import pytest
import torch
import torch.nn as nn

from labkit.data import Batches
from labkit.data.synthetic import render_many
from labkit.models import SmallCNN
from labkit.training.losses import LossTerm, ModelOutput, cross_entropy_term
from labkit.training.optim import make_optimizer
from labkit.training import loop
from labkit.training.gradflow import GradientFlow
from labkit.training.loop import Diverged, History, _group_weights, evaluate, fit, predict, train_one_epoch

# fit registers every CPU training under data/cache/running (its thread share): keep that out of the checkout
pytestmark = pytest.mark.usefixtures("isolated_root")


def _data(n=96, size=16):
    labels = torch.arange(n) % 2
    images = torch.from_numpy(render_many((labels * 4 + 1).tolist(), size, seed=1)).permute(0, 3, 1, 2).contiguous()
    return images, labels


def _run(tmp_path, epochs, interrupt_at=None, name="run"):
    images, labels = _data()
    torch.manual_seed(0)
    model = SmallCNN(width=4, hidden=8)  # dropout inside: the RNG state must resume too
    opt = make_optimizer("sgd", model.parameters(), lr=0.05, momentum=0.9)
    train = Batches(images, labels, 16, augment=True, seed=5)
    val = Batches(images[:32], labels[:32], 32, order="sequential")

    def on_update(update, _model):
        if update == interrupt_at:
            raise KeyboardInterrupt

    hist = fit(model, train, epochs=epochs, optimizer=opt, val=val, checkpoint=tmp_path / f"{name}.pt",
               on_update=on_update, progress=False)
    return model, hist


def test_interrupted_fit_resumes_to_the_same_weights(tmp_path):
    straight, h1 = _run(tmp_path, 3, name="straight")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, 3, interrupt_at=14, name="resumed")  # in epoch 3 (6 updates per epoch)
    resumed, h2 = _run(tmp_path, 3, name="resumed")
    assert h2.resumed_from_epoch == 2
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert [e["train_loss"] for e in h1.epochs] == pytest.approx([e["train_loss"] for e in h2.epochs])
    assert len(h2.updates) == len(h1.updates) == 18


def test_divergence_guard_marks_the_run(tmp_path):
    images, labels = _data()
    model = SmallCNN(width=4, hidden=8)
    exploding = LossTerm("boom", lambda out, y: out.logits.sum() * float("inf"))
    h = fit(model, Batches(images, labels, 32), epochs=3, optimizer=make_optimizer("sgd", model.parameters(), 0.1),
            loss_terms=[cross_entropy_term(), exploding], checkpoint=tmp_path / "d.pt", progress=False)
    assert h.status == "diverged" and "epoch 1" in h.message and h.epochs == []
    # re-running does not retrain a diverged run
    again = fit(model, Batches(images, labels, 32), epochs=3, optimizer=make_optimizer("sgd", model.parameters(), 0.1),
                checkpoint=tmp_path / "d.pt", progress=False)
    assert again.status == "diverged"


def test_full_batch_accumulation_equals_one_big_batch():
    images, labels = _data(n=40)
    results = []
    for batch_size, accumulate in ((40, 1), (7, "epoch")):
        torch.manual_seed(0)
        model = SmallCNN(width=4, hidden=8, dropout=0.0)
        model.eval()  # no batch-norm batch statistics: the gradient must not depend on how batches are cut
        model.train = lambda mode=True: model  # keep eval mode inside fit
        opt = make_optimizer("sgd", model.parameters(), lr=0.1)
        h = fit(model, Batches(images, labels, batch_size, order="sequential"), epochs=2, optimizer=opt,
                accumulate=accumulate, progress=False)
        assert len(h.updates) == 2  # one update per epoch
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-5)


def test_the_validation_curve_is_computed_on_the_validation_split():
    """Each epoch's val_loss and val_accuracy are the validation split's, not the training batches': the split
    here has its labels flipped, so the two can never agree."""
    images, labels = _data(n=64)
    torch.manual_seed(0)
    model = SmallCNN(width=4, hidden=8, dropout=0.3)
    train = Batches(images, labels, 16, augment=False, seed=2)
    val = Batches(images[:20], 1 - labels[:20], 8, order="sequential")
    h = fit(model, train, epochs=2, optimizer=make_optimizer("sgd", model.parameters(), lr=0.05, momentum=0.9),
            val=val, progress=False)
    expected = evaluate(model, val)  # the last epoch's validation, computed again on the final model
    assert h.epochs[-1]["val_loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert h.epochs[-1]["val_accuracy"] == pytest.approx(expected["accuracy"])
    on_train = evaluate(model, Batches(images[:20], labels[:20], 8, order="sequential"))
    assert on_train["accuracy"] == pytest.approx(1 - expected["accuracy"])  # the flipped labels: never equal...
    assert on_train["loss"] != pytest.approx(expected["loss"], rel=1e-3)  # ...unless the model learnt nothing


def test_fit_learns_and_predict_evaluate_agree():
    images, labels = _data(n=128)
    torch.manual_seed(0)
    model = SmallCNN(width=8, hidden=16)
    h = fit(model, Batches(images, labels, 16), epochs=4, optimizer=make_optimizer("adam", model.parameters(), 3e-3),
            val=Batches(images, labels, 64, order="sequential"), progress=False)
    assert h.epochs[-1]["train_loss"] < h.epochs[0]["train_loss"]
    p = predict(model, Batches(images, labels, 64, order="sequential"))
    e = evaluate(model, Batches(images, labels, 64, order="sequential"))
    assert e["accuracy"] == pytest.approx((p["predictions"] == labels).float().mean().item())
    assert e["accuracy"] > 0.8


def test_extra_loss_term_with_its_own_optimizer_and_hook():
    images, labels = _data()
    model = SmallCNN(width=4, hidden=8)
    scale = nn.Parameter(torch.tensor(1.0))
    holder = nn.Module()
    holder.scale = scale
    seen = []
    term = LossTerm("scaled", lambda out, y: (scale * out.logits).pow(2).mean(), weight=0.1, module=holder,
                    optimizer=torch.optim.SGD([scale], lr=0.1), after_update=lambda out, y: seen.append(len(y)))
    fit(model, Batches(images, labels, 32), epochs=1, optimizer=make_optimizer("sgd", model.parameters(), 0.01),
        loss_terms=[cross_entropy_term(), term], progress=False)
    assert scale.item() != 1.0 and seen == [32, 32, 32]


def test_resume_is_identical_with_adam_the_center_term_and_the_pk_sampler(tmp_path):
    """The hardest run kind to resume: Adam's moments, the center loss's centres (a buffer updated after
    each step) and P x K batches drawn by pytorch-metric-learning's sampler from numpy's global generator."""
    from labkit.device import seed_everything
    from labkit.training.losses import center_term
    from labkit.models import classifier
    from labkit.questions.q2_losses import PKSampler
    import torchvision

    labels = torch.arange(48) % 4
    images = torch.from_numpy(render_many((labels * 3 + 1).tolist(), 16, seed=2)).permute(0, 3, 1, 2).contiguous()

    def run(name, interrupt_at=None):
        seed_everything(0)
        backbone = torchvision.models.resnet18(num_classes=4)
        model = classifier(backbone, num_classes=4, freeze_until="layer3")
        center = center_term(0.1, 4, 512, 0.5, "cpu")
        train = Batches(images, labels, 8, order=PKSampler(labels, 2, 8, seed=1), augment=True, seed=3, drop_last=True)

        def stop(update, _model):
            if update == interrupt_at:
                raise KeyboardInterrupt

        fit(model, train, epochs=3, optimizer=make_optimizer("adam", model.parameters(), 1e-3),
            loss_terms=[cross_entropy_term(), center], checkpoint=tmp_path / f"{name}.pt", on_update=stop,
            progress=False)
        return model, center.module.centers.clone()

    straight, straight_centers = run("straight")
    with pytest.raises(KeyboardInterrupt):
        run("resumed", interrupt_at=15)  # in the third epoch (6 updates per epoch)
    seed_everything(123)  # a different global state before resuming: the checkpoint must restore it
    resumed, resumed_centers = run("resumed")
    assert torch.equal(straight_centers, resumed_centers)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def _fit_kept(folder, keep, epochs=3, on_update=None):
    images, labels = _data()
    torch.manual_seed(0)
    model = SmallCNN(width=4, hidden=8)
    hist = fit(model, Batches(images, labels, 16, augment=True, seed=5), epochs=epochs,
               optimizer=make_optimizer("adam", model.parameters(), 1e-3), checkpoint=folder / "run.pt",
               keep_checkpoints=keep, on_update=on_update, progress=False)
    return model, hist


@pytest.fixture
def folder(tmp_path):
    """The checkpoints' folder, apart from the test's project root (which is in tmp_path too)."""
    (tmp_path / "checkpoints").mkdir()
    return tmp_path / "checkpoints"


def test_one_checkpoint_while_training_and_the_final_state_after(folder):
    during = []

    def look(update, _model):  # 6 updates per epoch: look once in epochs 2 and 3
        if update in (7, 13):
            during.append((sorted(p.name for p in folder.iterdir()),
                           "optimizer" in torch.load(folder / "run.pt", weights_only=True)))

    trained, _ = _fit_kept(folder, "final", on_update=look)
    assert during == [(["run.pt", "run.pt.lock"], True)] * 2  # the latest epoch only, with what resuming needs
    assert sorted(p.name for p in folder.iterdir()) == ["run.pt"]
    blob = torch.load(folder / "run.pt", weights_only=True)
    assert blob["final"] and "optimizer" not in blob and "rng" not in blob and len(blob["history"]["epochs"]) == 3
    # a re-run (a re-rendered notebook) loads the final state: nothing trained, the very same weights
    again, hist = _fit_kept(folder, "final", on_update=lambda *a: pytest.fail("trained again"))
    assert hist.resumed_from_epoch == 3 and len(hist.epochs) == 3
    for (k, a), b in zip(trained.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_keep_checkpoints_none_and_all(folder):
    _fit_kept(folder, "none", epochs=1)
    assert list(folder.iterdir()) == []  # a re-run retrains
    _, hist = _fit_kept(folder, "all", epochs=2)
    assert hist.resumed_from_epoch == 0
    assert sorted(p.name for p in folder.iterdir()) == ["run.epoch1.pt", "run.epoch2.pt", "run.pt"]
    epochs = [torch.load(folder / f"run.epoch{e}.pt", weights_only=True) for e in (1, 2)]
    assert [b["epoch"] for b in epochs] == [1, 2] and all("optimizer" in b for b in epochs)  # each resumable
    assert torch.load(folder / "run.pt", weights_only=True)["final"]
    _, hist = _fit_kept(folder, "none", epochs=2)  # loaded, then removed as asked
    assert hist.resumed_from_epoch == 2 and not (folder / "run.pt").exists()
    with pytest.raises(ValueError, match="keep_checkpoints='some' is not allowed; allowed: 'final', 'none', 'all'"):
        _fit_kept(folder, "some")


def test_precision_reaches_the_forward_pass_of_training_validation_and_predict():
    """bf16 asked: every forward pass (training steps, the validation after each epoch, predict) computes in
    bfloat16; fp32 (the default) in float32. Observed on the network's last layer's output."""
    images, labels = _data(32)
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        torch.manual_seed(0)
        model = SmallCNN(width=4, hidden=8)
        seen = []
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        last.register_forward_hook(lambda m, i, o: seen.append((m.training, o.dtype)))
        fit(model, Batches(images, labels, 16), epochs=1, optimizer=make_optimizer("adam", model.parameters(), 1e-3),
            val=Batches(images, labels, 32, order="sequential"), progress=False, precision=precision)
        assert {d for training, d in seen if training} == {dtype}  # the two training steps
        assert {d for training, d in seen if not training} == {dtype}  # the validation pass
        seen.clear()
        out = predict(model, Batches(images, labels, 32, order="sequential"), precision=precision)
        assert seen == [(False, dtype)] and out["logits"].dtype == torch.float32  # handed back as float32


# --------------------------------------------------------------------------- hand-computed steps
# A one-weight model and fixed batches make every number of a training step computable by hand: the logits are
# (w x, -w x) for a single input feature x (class 0 is predicted where w x > 0), and the loss term below is
# w * mean(x), whose gradient with respect to w is the mean of the batch's inputs.

class Scaled(nn.Module):
    def __init__(self, w=1.0, embed=False):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(float(w)))
        self.embed = embed

    def forward(self, x):
        z = self.weight * x
        logits = torch.cat([z, -z], 1)
        return ModelOutput(logits, 3 * z) if self.embed else logits


class FixedBatches:
    """A stand-in for Batches with batches of chosen sizes: ``(inputs, labels)`` pairs, the same every epoch;
    records the epoch that fit sets before each pass."""

    def __init__(self, *batches):
        self.batches = [(torch.tensor(x, dtype=torch.float32).view(-1, 1), torch.tensor(y)) for x, y in batches]
        self.epoch = None
        self.epochs = []

    def batch_sizes(self):
        return [len(y) for _, y in self.batches]

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        self.epochs.append(self.epoch)
        return iter(self.batches)


def mean_input_term():
    """w * mean(x), as weight 2 times half of it: a weight other than 1 must multiply the term."""
    return LossTerm("mean_input", lambda out, y: out.logits[:, 0].mean() / 2, weight=2.0)


def three_batches():
    """Sizes 2, 1, 2. With accumulate=2, w=1 and SGD lr=0.25, by hand:
    step 1 (batches 1 and 2, at w=1): losses 1*mean(1,3)=2 and 1*5=5, accuracies 1/2 (both predicted 0) and 1;
    the gradient is the mean over the step's 3 samples, 2/3*2 + 1/3*5 = 3, so w = 1 - 0.25*3 = 0.25.
    step 2 (batch 3, at w=0.25): loss 0.25*mean(-4,2) = -0.25, predictions (1, 0): accuracy 1/2; gradient -1,
    so w = 0.25 + 0.25 = 0.5.
    The epoch: loss (2*2 + 5*1 - 0.25*2) / 5 = 1.7, accuracy 3/5 (one hit per batch), 5 images."""
    return FixedBatches(([1, 3], [0, 1]), ([5], [0]), ([-4, 2], [1, 1]))


class Spy:
    """What a gradient-flow recorder and an ``on_update`` callback see: the update number, the weight and its
    gradient at that moment."""

    def __init__(self, model):
        self.model, self.seen = model, []

    def record(self, update):  # GradientFlow's interface: called before the optimizer step
        self.seen.append(("record", update, self.model.weight.item(), self.model.weight.grad.item()))

    def __call__(self, update, model):  # on_update: after the step and the zero_grad
        self.seen.append(("on_update", update, model.weight.item(), model.weight.grad))


class Counter:
    def __init__(self):
        self.n = 0

    def update(self, n):
        self.n += n


def test_train_one_epoch_accumulates_records_and_averages_as_computed_by_hand():
    model = Scaled(1.0)
    model.eval()  # train_one_epoch switches to training mode
    model.weight.grad = torch.tensor(100.0)  # a stale gradient: cleared before the first step
    batches = three_batches()
    # a term of weight 0 is not computed (a NaN here would turn the loss into NaN)
    off = LossTerm("off", lambda out, y: torch.tensor(float("nan")), weight=0.0)
    # a resumed run's history: update numbers go on from the last one, and earlier records stay as they are
    history = History(updates=[{"update": 10, "epoch": 4, "loss": 0.125, "accuracy": 0.5}])
    spy, progress = Spy(model), Counter()
    stats = train_one_epoch(model, batches, torch.optim.SGD(model.parameters(), lr=0.25), [mean_input_term(), off],
                            epoch=4, history=history, device=torch.device("cpu"), accumulate=2,
                            gradient_flow=spy, on_update=spy, progress=progress)
    assert stats == {"train_loss": pytest.approx(1.7), "train_accuracy": pytest.approx(0.6), "images": 5}
    assert history.updates == [{"update": 10, "epoch": 4, "loss": 0.125, "accuracy": 0.5},
                               {"update": 11, "epoch": 5, "loss": pytest.approx(3.5), "accuracy": pytest.approx(0.75)},
                               {"update": 12, "epoch": 5, "loss": pytest.approx(-0.25), "accuracy": pytest.approx(0.5)}]
    assert all(type(r["loss"]) is float and type(r["accuracy"]) is float for r in history.updates)
    assert spy.seen == [("record", 11, 1.0, pytest.approx(3.0)), ("on_update", 11, pytest.approx(0.25), None),
                        ("record", 12, pytest.approx(0.25), pytest.approx(-1.0)), ("on_update", 12, pytest.approx(0.5), None)]
    assert model.training and batches.epochs == [4] and progress.n == 3


def test_train_one_epoch_defaults_step_after_every_batch():
    """accumulate=1 (the default): three steps, each batch's gradient on its own: w = 1 - 0.25*2 = 0.5, then
    0.5 - 0.25*5 = -0.75, then -0.75 + 0.25 = -0.5 (the mean input of the last batch is -1)."""
    model = Scaled(1.0)
    history = History()
    train_one_epoch(model, three_batches(), torch.optim.SGD(model.parameters(), lr=0.25), [mean_input_term()],
                    epoch=0, history=history, device=torch.device("cpu"))
    assert model.weight.item() == pytest.approx(-0.5)
    assert [(r["update"], r["epoch"]) for r in history.updates] == [(1, 1), (2, 1), (3, 1)]
    # losses: 2 at w=1, 0.5*5=2.5 at w=0.5, -0.75*-1=0.75 at w=-0.75
    assert [r["loss"] for r in history.updates] == pytest.approx([2.0, 2.5, 0.75])


def test_accumulate_epoch_makes_one_step_from_the_mean_over_all_samples():
    """One step: gradient (1 + 3 + 5 - 4 + 2) / 5 = 1.4, w = 1 - 0.25*1.4 = 0.65."""
    model = Scaled(1.0)
    history = History()
    train_one_epoch(model, three_batches(), torch.optim.SGD(model.parameters(), lr=0.25), [mean_input_term()],
                    epoch=0, history=history, device=torch.device("cpu"), accumulate="epoch")
    assert model.weight.item() == pytest.approx(0.65)
    assert [r["update"] for r in history.updates] == [1]
    assert history.updates[0]["loss"] == pytest.approx((2 + 5 - 1) / 3)  # the mean of the three batches' losses


@pytest.mark.parametrize("embed", [True, False])
def test_a_terms_optimizer_and_hook_act_once_per_step_on_all_its_batches(embed):
    """A term with a parameter of its own (loss b * mean(y), gradient mean(y)), its own optimizer (lr 0.75) and an
    after-update hook: the hook sees the outputs and labels of every batch of the step, after the step.
    b: step 1 gradient 2/3*mean(0,1) + 1/3*0 = 1/3, b = -0.25; step 2 gradient mean(1,1) = 1, b = -1."""
    model = Scaled(1.0, embed=embed)
    b = nn.Parameter(torch.tensor(0.0))
    calls = []
    term = LossTerm("b", lambda out, y: b * y.float().mean(), weight=1.0, optimizer=torch.optim.SGD([b], lr=0.75),
                    after_update=lambda out, y: calls.append((out, y, b.item())))
    b.grad = torch.tensor(7.0)  # stale: cleared before the first step like the model's
    history = History()
    train_one_epoch(model, three_batches(), torch.optim.SGD(model.parameters(), lr=0.25), [mean_input_term(), term],
                    epoch=0, history=history, device=torch.device("cpu"), accumulate=2,
                    on_update=lambda update, m: calls.append(("grad", b.grad)))
    assert b.item() == pytest.approx(-1.0) and model.weight.item() == pytest.approx(0.5)  # w as without the term
    (out1, y1, b1), after1, (out2, y2, b2), after2 = calls
    assert after1 == after2 == ("grad", None)  # the term's gradient cleared after each step too
    assert (b1, b2) == (pytest.approx(-0.25), pytest.approx(-1.0))
    # step 1 at w=1: inputs 1, 3, 5; step 2 at w=0.25: inputs -4, 2 (z = w x; logits (z, -z); embedding 3 z)
    z1, z2 = torch.tensor([1.0, 3.0, 5.0]), torch.tensor([-1.0, 0.5])
    assert torch.allclose(out1.logits, torch.stack([z1, -z1], 1)) and torch.equal(y1, torch.tensor([0, 1, 0]))
    assert torch.allclose(out2.logits, torch.stack([z2, -z2], 1)) and torch.equal(y2, torch.tensor([1, 1]))
    if embed:
        assert torch.allclose(out1.embedding, 3 * z1.view(-1, 1)) and torch.allclose(out2.embedding, 3 * z2.view(-1, 1))
    else:
        assert out1.embedding is None and out2.embedding is None
    assert not out1.logits.requires_grad


def test_an_epoch_of_one_image_and_an_empty_epoch():
    """One image of class 0 at w=1, input 2: loss 2, accuracy 1. No batches (drop_last with fewer images than a
    batch): nothing trained, loss and accuracy 0, no update."""
    model = Scaled(1.0)
    history = History()
    stats = train_one_epoch(model, FixedBatches(([2], [0]),), torch.optim.SGD(model.parameters(), lr=0.25),
                            [mean_input_term()], epoch=0, history=history, device=torch.device("cpu"))
    assert stats == {"train_loss": pytest.approx(2.0), "train_accuracy": 1.0, "images": 1}
    stats = train_one_epoch(model, FixedBatches(), torch.optim.SGD(model.parameters(), lr=0.25), [mean_input_term()],
                            epoch=1, history=history, device=torch.device("cpu"))
    assert stats == {"train_loss": 0.0, "train_accuracy": 0.0, "images": 0} and len(history.updates) == 1


def test_a_loss_turning_inf_stops_the_epoch_at_the_next_64th_batch():
    """The loss is checked once every 64 batches: inf from the 71st batch on stops the epoch after batch 128
    (not 64: still finite there) and raises Diverged; a finite loss runs all 140 batches."""
    def run(inf_from):
        calls = []

        def fn(out, y):
            calls.append(1)
            bad = len(calls) >= inf_from
            return out.logits[:, 0].sum() * 0 + (float("inf") if bad else 1.0)

        model, progress, history = Scaled(1.0), Counter(), History()
        try:
            train_one_epoch(model, FixedBatches(*[([1], [0])] * 140), torch.optim.SGD(model.parameters(), lr=0.1),
                            [LossTerm("maybe_inf", fn)], epoch=2, history=history, device=torch.device("cpu"),
                            progress=progress)
        except Diverged as err:
            return progress.n, len(history.updates), str(err)
        return progress.n, len(history.updates), None

    assert run(inf_from=71) == (128, 128, "training loss became inf in epoch 3")
    assert run(inf_from=10_000) == (140, 140, None)


def test_group_weights_are_each_batchs_share_of_its_step():
    assert _group_weights([4, 2, 3, 5, 1], 2) == pytest.approx([4 / 6, 2 / 6, 3 / 8, 5 / 8, 1.0])
    assert _group_weights([4, 2, 3], 3) == pytest.approx([4 / 9, 2 / 9, 3 / 9])
    assert _group_weights([4, 2], 1) == [1.0, 1.0]
    assert _group_weights([], 2) == []


def test_predict_and_evaluate_by_hand():
    """z = w x with w=0.5; logits (z, -z), so the softmax of class 0 is sigmoid(2 z) and the cross-entropy of a
    label-0 sample is log(1 + exp(-2 z)), of a label-1 sample log(1 + exp(2 z))."""
    model = Scaled(0.5, embed=True)
    model.train()
    batches = FixedBatches(([2, -4], [0, 0]), ([1], [1]))
    p = predict(model, batches)
    assert not model.training  # evaluation mode: no dropout, batch-norm statistics left alone
    z = torch.tensor([1.0, -2.0, 0.5])
    assert torch.allclose(p["logits"], torch.stack([z, -z], 1)) and p["logits"].dtype == torch.float32
    assert torch.equal(p["labels"], torch.tensor([0, 0, 1])) and torch.equal(p["predictions"], torch.tensor([0, 1, 0]))
    sigmoid = lambda v: 1 / (1 + math.exp(-v))
    assert p["confidence"].tolist() == pytest.approx([sigmoid(2), sigmoid(4), sigmoid(1)])
    assert torch.allclose(p["embeddings"], 3 * z.view(-1, 1))
    assert predict(Scaled(0.5), batches)["embeddings"] is None
    e = evaluate(model, batches)
    ce = [math.log(1 + math.exp(-2)), math.log(1 + math.exp(4)), math.log(1 + math.exp(1))]
    assert e == {"loss": pytest.approx(sum(ce) / 3), "accuracy": pytest.approx(1 / 3)}


def test_predict_and_evaluate_on_no_batches():
    p = predict(Scaled(0.5), FixedBatches())
    assert p["embeddings"] is None
    for key, dtype in (("logits", torch.float32), ("labels", torch.long), ("predictions", torch.long),
                       ("confidence", torch.float32)):
        assert p[key].shape == (0,) and p[key].dtype == dtype, key
    e = evaluate(Scaled(0.5), FixedBatches())
    assert math.isnan(e["loss"]) and math.isnan(e["accuracy"])


def test_history_cost_and_dict_round_trip():
    h = History(epochs=[{"epoch": 1}, {"epoch": 2}, {"epoch": 3}], updates=[{"update": 4}, {"update": 6}, {"update": 9}],
                status="diverged", message="m", resumed_from_epoch=2, seconds=2.5, images=300, threads=3)
    assert h.cost() == {"train_seconds": 2.5, "train_images_per_second": 120.0, "epochs": 3, "updates": 9,
                        "torch_threads": 3}
    assert History(seconds=0.5, images=30).cost()["train_images_per_second"] == 60.0  # under a second too
    assert History().cost() == {"train_seconds": 0.0, "train_images_per_second": None, "epochs": 0, "updates": 0,
                                "torch_threads": None}
    assert History.from_dict(h.to_dict()) == h
    assert h.to_dict() == {"epochs": h.epochs, "updates": h.updates, "status": "diverged", "message": "m",
                           "resumed_from_epoch": 2, "seconds": 2.5, "images": 300, "threads": 3}


def test_fit_defaults_to_cross_entropy():
    """w=0: every logit is 0, the cross-entropy of 2 classes is log 2, whatever the labels."""
    model = Scaled(0.0)
    h = fit(model, FixedBatches(([1, -2, 3], [0, 1, 1]),), epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            progress=False)
    assert h.epochs[0]["train_loss"] == pytest.approx(math.log(2))


@pytest.mark.parametrize("accumulate", [0, -1, 1.5, "2", None])
def test_fit_refuses_an_accumulate_that_is_not_a_positive_integer_or_epoch(accumulate):
    model = Scaled(1.0)
    with pytest.raises(ValueError, match=f"^accumulate={accumulate!r} is not allowed; allowed: an integer >= 1 or "
                                         "'epoch'$".replace(".", r"\.")):
        fit(model, three_batches(), epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            accumulate=accumulate, progress=False)


@pytest.mark.parametrize("channels_last, expected", [(True, True), (False, False), (None, False)])
def test_channels_last_converts_the_model_when_asked_and_on_the_cpu_not_by_default(channels_last, expected):
    images, labels = _data(n=8)
    model = SmallCNN(width=4, hidden=8)
    fit(model, Batches(images, labels, 8), epochs=1, optimizer=make_optimizer("sgd", model.parameters(), 0.01),
        channels_last=channels_last, progress=False)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == expected
    assert conv.weight.is_contiguous() != expected


def test_fit_on_the_cpu_keeps_freed_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(loop, "keep_freed_memory", lambda: calls.append(1))
    model = Scaled(1.0)
    fit(model, three_batches(), epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        loss_terms=[mean_input_term()], progress=False)
    assert calls == [1]


class Clock:
    """``time`` for the loop: perf_counter reads 100, 110, 120, ... (one tick per reading)."""

    def __init__(self):
        self.now = 90.0

    def perf_counter(self):
        self.now += 10.0
        return self.now


def test_a_resumed_run_goes_on_with_its_thread_count_its_clock_and_its_image_count(tmp_path, monkeypatch):
    """A run interrupted in epoch 2 and resumed trains with the thread count it started with (2, though torch is
    at 1 when it resumes), adds to its recorded time (epoch 1 took one tick of 10 s; the resumed part's clock
    starts 10 s back) and to its image count (5 per epoch)."""
    monkeypatch.setenv("LABKIT_SHARE_CORES", "0")  # the run's thread count is then torch's own when it starts
    monkeypatch.setattr(loop, "time", Clock())
    threads_seen = []

    def run(interrupt_at=None):
        model = Scaled(1.0)
        flow = GradientFlow(model)

        def on_update(update, _model):
            threads_seen.append(torch.get_num_threads())
            if update == interrupt_at:
                raise KeyboardInterrupt

        h = fit(model, three_batches(), epochs=3, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                loss_terms=[mean_input_term()], accumulate=2, checkpoint=tmp_path / "run.pt", gradient_flow=flow,
                on_update=on_update, progress=False)
        return h, flow

    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(KeyboardInterrupt):
            run(interrupt_at=3)  # in epoch 2: 2 updates per epoch
        torch.set_num_threads(1)
        h, flow = run()
        assert torch.get_num_threads() == 1  # given back after the run
    finally:
        torch.set_num_threads(previous)
    assert threads_seen == [2] * 3 + [2] * 4 and h.threads == 2  # run 1: updates 1-3; run 2: updates 3-6
    assert h.resumed_from_epoch == 1 and [r["update"] for r in h.updates] == [1, 2, 3, 4, 5, 6]
    assert [e["seconds"] for e in h.epochs] == [10.0, 20.0, 30.0] and h.seconds == 30.0
    assert h.images == 15
    # the gradient flow of every update, the first epoch's from the checkpoint
    assert [r["update"] for r in flow.rows] == [1, 2, 3, 4, 5, 6]
    # a run loaded from its final checkpoint gets its gradient flow back too
    h2, flow2 = run()
    assert h2.resumed_from_epoch == 3 and flow2.rows == flow.rows and h2.epochs == h.epochs


class FakeBar:
    """tqdm as the loop uses it: what it was made with, how far it went, the postfixes it showed, closings."""

    def __init__(self, total, desc, leave):
        self.made_with, self.n, self.postfixes, self.closed = (total, desc, leave), 0, [], 0
        FakeBar.made.append(self)

    def update(self, n):
        self.n += n

    def set_postfix(self, values):
        self.postfixes.append(values)

    def close(self):
        self.closed += 1


def test_the_progress_bar_counts_the_batches_still_to_train_and_shows_loss_and_validation_accuracy(tmp_path,
                                                                                                  monkeypatch):
    """3 epochs of 3 batches, interrupted in epoch 2 and resumed: the resumed bar counts 2 epochs' batches. With
    SGD lr 0.1 (2 updates per epoch, gradients 3 then -1 as in three_batches) w goes 1 -> 0.7 -> 0.8 -> 0.5 -> 0.6
    -> 0.3 -> 0.4; the training losses of epochs 2 and 3: (2*0.8*2 + 0.8*5 - 2*0.5) / 5 = 1.24 and
    (2*0.6*2 + 0.6*5 - 2*0.3) / 5 = 0.96; the validation inputs 4 and -2 (labels 0, 0) are always predicted 0 and 1."""
    monkeypatch.setattr("tqdm.auto.tqdm", FakeBar)
    monkeypatch.delenv("LABKIT_PLAIN_PROGRESS", raising=False)
    FakeBar.made = []
    model = Scaled(1.0)
    kwargs = dict(epochs=3, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_terms=[mean_input_term()],
                  accumulate=2, val=FixedBatches(([4, -2], [0, 0]),), checkpoint=tmp_path / "run.pt")

    def stop(update, _model):
        if update == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(model, three_batches(), on_update=stop, desc="q1 frozen", **kwargs)
    interrupted = FakeBar.made.pop()
    assert interrupted.made_with == (9, "q1 frozen", False) and interrupted.n == 4 and interrupted.closed == 1
    model = Scaled(1.0)
    kwargs["optimizer"] = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(model, three_batches(), **kwargs)  # the default progress and desc
    (bar,) = FakeBar.made
    assert bar.made_with == (6, "train", False) and bar.n == 6 and bar.closed == 1
    assert bar.postfixes == [{"train_loss": "1.240", "val_accuracy": "0.500"},
                             {"train_loss": "0.960", "val_accuracy": "0.500"}]


def test_no_progress_bar_when_not_asked_or_under_the_report_runner(monkeypatch):
    monkeypatch.setattr("tqdm.auto.tqdm", FakeBar)
    FakeBar.made = []
    model = Scaled(1.0)
    fit(model, three_batches(), epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False)
    monkeypatch.setenv("LABKIT_PLAIN_PROGRESS", "1")
    fit(model, three_batches(), epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=True)
    assert FakeBar.made == []


def test_a_final_checkpoint_of_other_starting_weights_is_trained_again_with_a_warning(tmp_path):
    """A frozen layer is stored by reference to its starting weights: a model built with other frozen weights
    (another pretrained backbone) cannot use the final checkpoint and trains again."""
    def run(frozen_value):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(1, 2), nn.Linear(2, 2))
        with torch.no_grad():
            model[0].weight.fill_(frozen_value)
        model[0].requires_grad_(False)
        updates = []
        h = fit(model, three_batches(), epochs=1, optimizer=torch.optim.SGD(model[1].parameters(), lr=0.1),
                checkpoint=tmp_path / "run.pt", on_update=lambda update, _m: updates.append(update), progress=False)
        return h, updates

    run(1.0)
    h, updates = run(1.0)
    assert h.resumed_from_epoch == 1 and updates == []  # the final state, loaded
    with pytest.warns(UserWarning, match=r"^training again: run\.pt: 1 stored-by-reference weight\(s\) differ "
                                         r"from the model's starting weights \(e\.g\. 0\.weight\)$"):
        h, updates = run(2.0)
    assert h.resumed_from_epoch == 0 and updates == [1, 2, 3] and len(h.epochs) == 1


class NoWeights(nn.Module):
    """Logits (x, -x) and no parameters: nothing to tell predict where the model is, so the device it is given
    must be used."""

    def forward(self, x):
        return torch.cat([x, -x], 1)


def test_predict_and_evaluate_use_the_device_they_are_given():
    batches = FixedBatches(([2, -1], [0, 0]),)
    assert evaluate(NoWeights(), batches, torch.device("cpu"), "fp32")["accuracy"] == pytest.approx(0.5)
    assert torch.equal(predict(NoWeights(), batches, torch.device("cpu"))["predictions"], torch.tensor([0, 1]))


def test_a_stale_gradient_is_cleared_not_zeroed_before_the_first_step():
    """A parameter the loss does not reach, with a gradient left from before: cleared (None), the optimizer skips
    it; zeroed, SGD's weight decay would still shrink it."""
    model = Scaled(1.0)
    model.unused = nn.Parameter(torch.tensor(4.0))
    model.unused.grad = torch.tensor(1.0)
    train_one_epoch(model, three_batches(), torch.optim.SGD(model.parameters(), lr=0.25, weight_decay=0.5),
                    [mean_input_term()], epoch=0, history=History(), device=torch.device("cpu"))
    assert model.unused.item() == 4.0 and model.unused.grad is None


def test_a_diverged_run_keeping_no_checkpoints_leaves_none_and_records_its_time_to_the_divergence(tmp_path, monkeypatch):
    """keep_checkpoints="none": the checkpoint of the epoch before the divergence is removed; where the run
    diverged in its first epoch there is none to remove, and that is no error. The time recorded is up to the
    divergence: one tick of the clock (10 s) for epoch 1, which completed, one more for epoch 2."""
    monkeypatch.setattr(loop, "time", Clock())
    model = Scaled(1.0)
    calls = []

    def blows_up_in_epoch_2(out, y):
        calls.append(1)
        return out.logits[:, 0].mean() + (float("inf") if len(calls) > 3 else 0.0)  # the gradient stays finite

    h = fit(model, three_batches(), epochs=3, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            loss_terms=[LossTerm("inf_later", blows_up_in_epoch_2)], checkpoint=tmp_path / "run.pt",
            keep_checkpoints="none", progress=False)
    assert h.status == "diverged" and h.message == "training loss became inf in epoch 2"
    assert len(h.epochs) == 1 and h.seconds == 20.0 and not (tmp_path / "run.pt").exists()
    h = fit(Scaled(1.0), three_batches(), epochs=3, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            loss_terms=[LossTerm("inf_at_once", lambda out, y: out.logits[:, 0].mean() * float("inf"))],
            checkpoint=tmp_path / "run.pt", keep_checkpoints="none", progress=False)
    assert h.status == "diverged" and h.epochs == [] and not (tmp_path / "run.pt").exists()


def test_each_epochs_row_holds_its_number_training_and_validation_results_and_time(monkeypatch):
    """The rows of three_batches' epochs at SGD lr 0.25 with accumulate=2: epoch 1 as computed there (w 1 -> 0.5);
    validation on inputs 4 and -2 (labels 0 and 1): at w=0.5, z = (2, -1), cross-entropy log(1 + exp(-4)) and
    log(1 + exp(-2)), both right."""
    monkeypatch.setattr(loop, "time", Clock())
    model = Scaled(1.0)
    h = fit(model, three_batches(), epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.25),
            loss_terms=[mean_input_term()], accumulate=2, val=FixedBatches(([4, -2], [0, 1]),), progress=False)
    assert h.epochs == [{"epoch": 1, "train_loss": pytest.approx(1.7), "train_accuracy": pytest.approx(0.6),
                         "val_loss": pytest.approx((math.log(1 + math.exp(-4)) + math.log(1 + math.exp(-2))) / 2),
                         "val_accuracy": 1.0, "seconds": 10.0}]
    assert h.images == 5 and h.seconds == 10.0 and h.status == "ok" and h.resumed_from_epoch == 0


def test_a_new_history_is_empty():
    assert History().to_dict() == {"epochs": [], "updates": [], "status": "ok", "message": "", "resumed_from_epoch": 0,
                                   "seconds": 0.0, "images": 0, "threads": None}


def test_fit_validates_on_the_device_it_was_given():
    """A model with no parameters of its own (what is trained sits in a loss term): only the device fit was
    given says where it runs, for the training steps and for the validation after each epoch."""
    b = nn.Parameter(torch.tensor(0.0))
    term = LossTerm("b", lambda out, y: b * y.float().mean())
    h = fit(NoWeights(), three_batches(), epochs=1, optimizer=torch.optim.SGD([b], lr=0.5), loss_terms=[term],
            val=FixedBatches(([2, -1], [0, 0]),), device=torch.device("cpu"), progress=False)
    # a step per batch, b's gradient each batch's mean label (0.5, 0, 1): b = -0.5 * (0.5 + 0 + 1); the validation
    # inputs 2 and -1 (labels 0, 0) are predicted 0 and 1
    assert b.item() == pytest.approx(-0.75) and h.epochs[0]["val_accuracy"] == pytest.approx(0.5)


def test_interrupted_while_writing_the_final_state_the_next_call_only_writes_it(tmp_path, monkeypatch):
    """The last epoch's training checkpoint is on disk when the final write is interrupted: the next call has
    nothing left to train (no progress bar, no update) and writes the final state."""
    from labkit.training import checkpoints
    real_save_final = checkpoints.save_final

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "save_final", interrupted)
    monkeypatch.setattr("tqdm.auto.tqdm", FakeBar)
    monkeypatch.delenv("LABKIT_PLAIN_PROGRESS", raising=False)

    def run(on_update=None):
        model = Scaled(1.0)
        return fit(model, three_batches(), epochs=2, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                   loss_terms=[mean_input_term()], checkpoint=tmp_path / "run.pt", on_update=on_update)

    FakeBar.made = []
    with pytest.raises(KeyboardInterrupt):
        run()
    assert torch.load(tmp_path / "run.pt", weights_only=True)["epoch"] == 2
    monkeypatch.setattr(checkpoints, "save_final", real_save_final)
    FakeBar.made = []
    h = run(on_update=lambda *a: pytest.fail("trained again"))
    assert FakeBar.made == [] and h.resumed_from_epoch == 2 and len(h.epochs) == 2
    assert torch.load(tmp_path / "run.pt", weights_only=True)["final"]


def test_channels_last_by_default_on_cuda():
    """The default follows the device fit is given: a CUDA device converts the model. With zero epochs nothing runs
    on the device, so the conversion shows without a GPU."""
    model = SmallCNN(width=4, hidden=8)
    h = fit(model, Batches(*_data(n=8), 8), epochs=0, optimizer=make_optimizer("sgd", model.parameters(), 0.01),
            device=torch.device("cuda"), progress=False)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert h.epochs == [] and h.threads is None  # CUDA: torch's CPU thread count is left alone
