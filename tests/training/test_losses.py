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


def test_plain_logits_and_a_model_output_both_become_a_model_output():
    from labkit.training.losses import ModelOutput, as_output
    logits = torch.randn(2, 3)
    out = ModelOutput(logits, torch.randn(2, 4))
    assert as_output(out) is out
    wrapped = as_output(logits)
    assert wrapped.logits is logits and wrapped.embedding is None


def test_the_cross_entropy_term_is_the_mean_cross_entropy_of_the_logits():
    """Logits (0, ln 3) for label 1: p = 3/4, loss ln(4/3); for label 0: p = 1/4, loss ln 4; mean of both."""
    import math
    from labkit.training.losses import ModelOutput
    term = cross_entropy_term(0.7)
    assert (term.name, term.weight, term.module, term.optimizer, term.after_update) == (
        "cross_entropy", 0.7, None, None, None)
    assert cross_entropy_term().weight == 1.0
    logits = torch.tensor([[0.0, math.log(3)], [0.0, math.log(3)]])
    value = term.fn(ModelOutput(logits, None), torch.tensor([1, 0]))
    assert value.item() == pytest.approx((math.log(4 / 3) + math.log(4)) / 2)


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5, 2.0])
def test_center_alpha_outside_0_1_is_refused(alpha):
    with pytest.raises(ValueError, match=rf"^center_alpha={alpha} is not allowed; allowed: a number in \(0, 1\]$"):
        CenterLoss(2, 2, alpha=alpha)


def test_center_alpha_1_moves_a_centre_by_the_whole_step():
    """alpha = 1 is allowed (the paper's range is (0, 1]): one feature x at distance d from its centre moves it
    by d / 2 (Eq. 4 with one sample: delta = (c - x) / 2)."""
    loss = _ready(CenterLoss(1, 2, alpha=1.0), [[0.0, 0.0]])
    loss.update_centers(torch.tensor([[2.0, 4.0]]), torch.tensor([0]))
    assert loss.centers[0].tolist() == [1.0, 2.0]


def test_the_center_term_wires_the_loss_its_centres_and_their_update():
    from labkit.training.losses import ModelOutput, center_term
    term = center_term(0.3, num_classes=3, dim=2, alpha=0.25, device="cpu")
    assert (term.name, term.weight, term.optimizer) == ("center", 0.3, None)
    assert isinstance(term.module, CenterLoss) and term.module.alpha == 0.25
    assert term.module.centers.shape == (3, 2)
    assert center_term(1.0, 2, 2, 0.5, device="meta").module.centers.device.type == "meta"  # the run's device
    _ready(term.module, [[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    emb = torch.tensor([[1.0, 0.0], [3.0, 0.0], [1.0, 2.0]])
    out = ModelOutput(torch.zeros(3, 3), emb)
    y = torch.tensor([0, 0, 1])
    assert term.fn(out, y).item() == pytest.approx(5.5 / 3)  # as in the test above: 1/2 * (1 + 9 + 1) / 3
    term.after_update(out, y)
    # class 0: delta = (-4, 0) / 3, c0 <- 0.25 * 4/3; class 1: delta = (0, -0.5), c1 <- (1, 1 + 0.125)
    assert torch.allclose(term.module.centers, torch.tensor([[1 / 3, 0.0], [1.0, 1.125], [5.0, 5.0]]))


# Four embeddings on the unit circle after normalisation (given at other lengths: the loss is of their
# directions only): class 0 at (1, 0) and (0, 1), class 1 at (-1, 0) and (0, -1). Each anchor's positive is sqrt(2)
# away; its negatives sqrt(2) and 2. With margin 1 a triplet's loss is max(0, d_ap - d_an + 1): 1 for the
# negative at sqrt(2), sqrt(2) - 2 + 1 = 0.414 for the one at 2. The average over the triplets with a nonzero
# loss (pytorch-metric-learning's reducer):
#   all triplets (8): (1 + 0.414) / 2 = 0.707;  batch_hard (hardest positive sqrt(2), hardest negative
#   sqrt(2)): 1;  semihard (d_ap < d_an < d_ap + margin: only the negatives at 2): 0.414.
TRIPLET_EMB = torch.tensor([[3.0, 0.0], [0.0, 0.5], [-2.0, 0.0], [0.0, -1.0]])
TRIPLET_Y = torch.tensor([0, 0, 1, 1])


@pytest.mark.parametrize("miner, expected", [("all", (1 + (2 ** 0.5 - 1)) / 2), ("batch_hard", 1.0),
                                             ("semihard", 2 ** 0.5 - 1)])
def test_the_triplet_term_on_hand_computed_embeddings(miner, expected):
    from labkit.training.losses import ModelOutput, triplet_term
    term = triplet_term(0.4, margin=1.0, miner=miner)
    assert (term.name, term.weight, term.module, term.after_update) == ("triplet", 0.4, None, None)
    value = term.fn(ModelOutput(torch.zeros(4, 2), TRIPLET_EMB), TRIPLET_Y)
    assert value.item() == pytest.approx(expected, abs=1e-5)


def test_the_triplet_margin_reaches_loss_and_miner():
    """Margin 0.5: the negatives at 2 are no longer within the margin (loss 0), those at sqrt(2) cost 0.5. The
    semihard miner keeps d_an - d_ap in (0, margin]: 2 - sqrt(2) = 0.586 > 0.5, so nothing is mined: 0."""
    from labkit.training.losses import ModelOutput, triplet_term
    out = ModelOutput(torch.zeros(4, 2), TRIPLET_EMB)
    assert triplet_term(1.0, 0.5, "all").fn(out, TRIPLET_Y).item() == pytest.approx(0.5, abs=1e-5)
    assert triplet_term(1.0, 0.5, "semihard").fn(out, TRIPLET_Y).item() == pytest.approx(0.0, abs=1e-6)


def test_an_unknown_miner_is_refused():
    from labkit.training.losses import triplet_term
    with pytest.raises(ValueError, match=r"^miner='hardest' is not allowed; allowed: batch_hard, semihard, all$"):
        triplet_term(1.0, 0.2, "hardest")
