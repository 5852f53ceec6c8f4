import torch

from labkit.losses import CenterLoss


def test_center_loss_value_and_update_rule_match_the_paper():
    loss = CenterLoss(num_classes=3, dim=2, alpha=0.5)
    loss.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]))
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [1.0, 2.0]])
    y = torch.tensor([0, 0, 1])
    # Eq. 2: 1/2 * sum ||x_i - c_yi||^2 = 1/2 * (1 + 9 + (0 + 1)) = 5.5
    assert loss(x, y).item() == 5.5
    loss.update_centers(x, y)
    # Eq. 4, class 0: delta = ((c0 - x0) + (c0 - x1)) / (1 + 2) = (-4, 0) / 3; c0 <- c0 - 0.5 * delta
    assert torch.allclose(loss.centers[0], torch.tensor([2.0 / 3.0, 0.0]))
    # class 1: delta = (c1 - x2) / 2 = (0, -0.5); c1 <- (1, 1) - 0.5 * (0, -0.5) = (1, 1.25)
    assert torch.allclose(loss.centers[1], torch.tensor([1.0, 1.25]))
    # class 2 is absent: unchanged
    assert torch.equal(loss.centers[2], torch.tensor([5.0, 5.0]))
    # the centers are not trained by gradients
    assert not any(True for _ in loss.parameters())
