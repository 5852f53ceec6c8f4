import pytest
import torch

from labkit.data import Batches
from labkit.training.losses import CenterLoss, LossTerm, cross_entropy_term
from labkit.models import SmallCNN
from labkit.training.optim import make_optimizer
from labkit.training.loop import fit

# fit registers every CPU training under data/cache/running (its thread share): keep that out of the checkout
pytestmark = pytest.mark.usefixtures("isolated_root")


def _ready(loss: CenterLoss, centers) -> CenterLoss:
    loss.centers.copy_(torch.tensor(centers))
    loss.initialized.fill_(True)
    return loss


def test_center_loss_is_a_per_sample_mean_and_the_update_rule_matches_the_paper():
    loss = _ready(CenterLoss(num_classes=3, dim=2, alpha=0.5), [[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [1.0, 2.0]])
    y = torch.tensor([0, 0, 1])
    # 1/2 * mean_i ||x_i - c_yi||^2 = 1/2 * (1 + 9 + (0 + 1)) / 3
    assert loss(x, y).item() == pytest.approx(5.5 / 3)
    loss.update_centers(x, y)
    # Eq. 4, class 0: delta = ((c0 - x0) + (c0 - x1)) / (1 + 2) = (-4, 0) / 3; c0 <- c0 - 0.5 * delta
    assert torch.allclose(loss.centers[0], torch.tensor([2.0 / 3.0, 0.0]))
    # class 1: delta = (c1 - x2) / 2 = (0, -0.5); c1 <- (1, 1) - 0.5 * (0, -0.5) = (1, 1.25)
    assert torch.allclose(loss.centers[1], torch.tensor([1.0, 1.25]))
    assert torch.equal(loss.centers[2], torch.tensor([5.0, 5.0]))  # class 2 is absent: unchanged
    assert not any(True for _ in loss.parameters())  # the centres are not trained by gradients


def test_the_value_does_not_depend_on_the_batch_size():
    loss = _ready(CenterLoss(2, 3), [[0.0, 1.0, 0.0], [1.0, 0.0, 2.0]])
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.tensor([0, 1] * 4)
    assert loss(torch.cat([x, x]), torch.cat([y, y])).item() == pytest.approx(loss(x, y).item())


def test_the_gradient_is_the_distance_to_the_centre_over_the_batch_size():
    loss = _ready(CenterLoss(2, 3), [[0.0, 1.0, 0.0], [1.0, 0.0, 2.0]])
    torch.manual_seed(1)
    x = torch.randn(5, 3, requires_grad=True)
    y = torch.tensor([0, 1, 1, 0, 1])
    loss(x, y).backward()
    assert torch.allclose(x.grad, (x.detach() - loss.centers[y]) / 5)


def test_centres_start_at_the_first_batch_class_means_then_converge_to_the_class_means():
    loss = CenterLoss(2, 2, alpha=0.5)
    torch.manual_seed(2)
    means = torch.tensor([[3.0, -1.0], [-2.0, 4.0]])
    first = means[torch.tensor([0, 0, 1])] + 0.1 * torch.randn(3, 2)
    loss(first, torch.tensor([0, 0, 1]))
    assert torch.allclose(loss.centers[0], first[:2].mean(0)) and torch.allclose(loss.centers[1], first[2])
    for _ in range(200):  # features drawn around fixed class means: the centres settle on them
        y = torch.randint(0, 2, (32,))
        loss.update_centers(means[y] + 0.5 * torch.randn(32, 2), y)
    assert torch.allclose(loss.centers, means, atol=0.15)


def test_an_accumulated_step_hands_every_batch_to_the_after_update_hook():
    torch.manual_seed(0)
    images, labels = torch.randint(0, 255, (64, 3, 8, 8), dtype=torch.uint8), torch.arange(64) % 2
    model = SmallCNN(width=4, hidden=8)
    seen = []
    term = LossTerm("count", lambda out, y: out.logits.sum() * 0, after_update=lambda out, y: seen.append(len(y)))
    fit(model, Batches(images, labels, 16), epochs=1, optimizer=make_optimizer("sgd", model.parameters(), 0.01),
        loss_terms=[cross_entropy_term(), term], accumulate=2, progress=False)
    assert seen == [32, 32]
