import pytest
import torch

from labkit.data import Batches
from labkit.data.synthetic import render_many
from labkit.training.gradflow import GradientFlow
from labkit.models import SmallCNN
from labkit.training.optim import make_optimizer
from labkit.training.loop import fit

# fit registers every CPU training under data/cache/running (its thread share): keep that out of the checkout
pytestmark = pytest.mark.usefixtures("isolated_root")


def _data(n=96, size=16):
    labels = torch.arange(n) % 2
    images = torch.from_numpy(render_many((labels * 4 + 1).tolist(), size, seed=1)).permute(0, 3, 1, 2).contiguous()
    return images, labels


def test_gradient_flow_names_every_layer_in_order():
    images, labels = _data()
    model = SmallCNN(width=4, hidden=8)
    flow = GradientFlow(model, every=2)
    fit(model, Batches(images, labels, 32), epochs=2, optimizer=make_optimizer("adam", model.parameters(), 1e-3),
        gradient_flow=flow, progress=False)
    summary = flow.summary()
    assert summary["layer"].tolist() == ["conv1", "bn1", "conv2", "bn2", "conv3", "linear1", "linear2"]
    assert (summary["max_abs_grad"] >= summary["mean_abs_grad"]).all() and (summary["mean_abs_grad"] > 0).all()
    assert sorted({r["update"] for r in flow.rows}) == [2, 4, 6]


def _two_linear_layers():
    """x = (1, -2, 0.5), W1 = [[1, 2, 3], [4, 5, 7]], W2 = [[0.5, -3]], loss = W2 W1 x. By hand: h = W1 x =
    (-1.5, -2.5); dL/dW2 = h = (-1.5, -2.5): mean |g| 2.0, max 2.5; dL/dW1 = W2^T x^T = [[0.5, -1, 0.25],
    [-3, 6, -1.5]]: mean |g| 12.25 / 6, max 6. The weights' own means and maxima (3.67 / 7, 1.75 / 3) differ."""
    import torch.nn as nn
    model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 7.0]]))
        model[1].weight.copy_(torch.tensor([[0.5, -3.0]]))
    return model, torch.tensor([[1.0, -2.0, 0.5]])


def test_gradient_flow_records_the_gradients_not_the_weights():
    model, x = _two_linear_layers()
    flow = GradientFlow(model, every=3)
    model(x).sum().backward()
    flow.record(2)  # not a multiple of 3: nothing
    flow.record(3)
    assert flow.rows == [
        {"update": 3, "layer": "0", "mean_abs_grad": pytest.approx(12.25 / 6), "max_abs_grad": pytest.approx(6.0)},
        {"update": 3, "layer": "1", "mean_abs_grad": pytest.approx(2.0), "max_abs_grad": pytest.approx(2.5)}]
    model.zero_grad()
    (2 * model(x)).sum().backward()  # twice the gradients at the next recorded update
    flow.record(6)
    summary = flow.summary().set_index("layer")
    assert summary.loc["0"].tolist() == pytest.approx([1.5 * 12.25 / 6, 12.0])  # mean of the means, largest max
    assert summary.loc["1"].tolist() == pytest.approx([3.0, 5.0])


def test_fit_records_each_updates_gradients_before_the_step(isolated_root):
    """Inside fit, update 1's row holds the first batch's gradients (computed here by hand from the same start
    weights and batch), not the weights, and not zeros after the optimizer cleared them."""
    import copy

    import torch.nn as nn
    import torch.nn.functional as F
    images, labels = _data(n=8, size=4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    start = copy.deepcopy(model)
    batches = Batches(images, labels, 8, order="sequential")
    flow = GradientFlow(model)
    fit(model, batches, epochs=1, optimizer=make_optimizer("sgd", model.parameters(), 0.5), gradient_flow=flow,
        progress=False)
    x, y = next(iter(batches))
    F.cross_entropy(start(x), y).backward()
    g = start[1].weight.grad.abs()
    (row,) = flow.rows
    assert row["update"] == 1 and row["layer"] == "1"
    assert row["mean_abs_grad"] == pytest.approx(g.mean().item(), rel=1e-4)
    assert row["max_abs_grad"] == pytest.approx(g.max().item(), rel=1e-4)
