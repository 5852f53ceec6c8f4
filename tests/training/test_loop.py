import pytest
import torch
import torch.nn as nn

from labkit.data import Batches
from labkit.data.synthetic import render_many
from labkit.models import SmallCNN
from labkit.training.losses import LossTerm, cross_entropy_term
from labkit.training.optim import make_optimizer
from labkit.training.loop import evaluate, fit, predict

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
