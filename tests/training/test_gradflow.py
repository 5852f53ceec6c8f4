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
