"""Training losses as terms of one objective: cross-entropy, triplet (pytorch-metric-learning) and center
loss, and the model output they share (logits and the embedding they are computed from)."""
from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

ModelOutput = namedtuple("ModelOutput", ["logits", "embedding"])
LOSSES = ("ce", "ce_triplet", "ce_center")
MINERS = ("batch_hard", "semihard", "all")


def as_output(out) -> ModelOutput:
    """Models may return plain logits or ``ModelOutput(logits, embedding)``."""
    return out if isinstance(out, ModelOutput) else ModelOutput(out, None)


@dataclass
class LossTerm:
    """One term of the training loss: ``weight * fn(output, labels)``.

    A term may own state (``module``, checkpointed with the model), its own
    ``optimizer`` (stepped after the model's), and an ``after_update`` hook
    (e.g. center loss's center update, which does not go through an optimizer).
    """

    name: str
    fn: Callable[[ModelOutput, torch.Tensor], torch.Tensor]
    weight: float = 1.0
    module: nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    after_update: Callable[[ModelOutput, torch.Tensor], None] | None = None


def cross_entropy_term(weight: float = 1.0) -> LossTerm:
    return LossTerm("cross_entropy", lambda out, y: F.cross_entropy(out.logits, y), weight)


def triplet_term(weight: float, margin: float, miner: str) -> LossTerm:
    """Triplet margin loss on the L2-normalised embedding (pytorch-metric-learning), with a miner."""
    from pytorch_metric_learning import losses, miners
    if miner not in MINERS:
        raise ValueError(f"miner={miner!r} is not allowed; allowed: {', '.join(MINERS)}")
    loss_fn = losses.TripletMarginLoss(margin=margin)
    mine = {"batch_hard": miners.BatchHardMiner(), "semihard": miners.TripletMarginMiner(margin, "semihard"),
            "all": None}[miner]

    def fn(out, y):
        emb = F.normalize(out.embedding.float(), dim=1)
        return loss_fn(emb, y, mine(emb, y) if mine is not None else None)

    return LossTerm("triplet", fn, weight)


def center_term(weight: float, num_classes: int, dim: int, alpha: float, device) -> LossTerm:
    center = CenterLoss(num_classes, dim, alpha).to(device)
    return LossTerm("center", lambda out, y: center(out.embedding, y), weight, module=center,
                    after_update=lambda out, y: center.update_centers(out.embedding, y))


class CenterLoss(nn.Module):
    """Center loss of Wen et al. (ECCV 2016), as a per-sample mean.

    L_C = 1/2 * mean_i ||x_i - c_{y_i}||^2 over the mini-batch. The paper's Eq. 2 sums over the batch;
    its authors' own code divides by the batch size, and so do we: cross-entropy is a batch mean too,
    so a loss weight lambda then means the same at every batch size (with the sum, 0.1 at batch 64
    acts like 6.4). The gradient with respect to x_i is (x_i - c_{y_i}) / B. The centres are not learned
    by back-propagation: after each update they move by Eq. 4,
        delta c_j = sum_i [y_i = j] (c_j - x_i) / (1 + sum_i [y_i = j]),
        c_j <- c_j - alpha * delta c_j,
    independently of lambda. They are buffers, so checkpoints keep them and no optimizer touches them.

    A class's centre starts at the mean of its features in the first batch that holds it. Centres that
    all start at zero would make the first updates pull every feature towards the origin, a pull that
    has nothing to do with the classes and only shrinks the features.
    """

    def __init__(self, num_classes: int, dim: int, alpha: float = 0.5):
        super().__init__()
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"center_alpha={alpha} is not allowed; allowed: a number in (0, 1]")
        self.alpha = alpha
        self.register_buffer("centers", torch.zeros(num_classes, dim))
        self.register_buffer("initialized", torch.zeros(num_classes, dtype=torch.bool))

    @torch.no_grad()
    def _class_sums(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per class: how many of the batch's features it has, and their sum."""
        counts = torch.bincount(labels, minlength=len(self.centers)).to(features.dtype)
        return counts, torch.zeros_like(self.centers).index_add_(0, labels, features)

    @torch.no_grad()
    def _initialize(self, counts: torch.Tensor, sums: torch.Tensor) -> None:
        """Classes seen for the first time start at their mean in this batch. Written with masks, not an
        ``if``, so it never makes the CPU wait for the GPU."""
        new = ~self.initialized & (counts > 0)
        self.centers.copy_(torch.where(new[:, None], sums / counts.clamp(min=1)[:, None], self.centers))
        self.initialized |= new

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        features = features.float()
        self._initialize(*self._class_sums(features.detach(), labels))
        diff = features - self.centers[labels]
        return 0.5 * (diff * diff).sum(1).mean()

    @torch.no_grad()
    def update_centers(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Eq. 4 of the paper, for every class present in the batch at once."""
        counts, sums = self._class_sums(features.float(), labels)
        self._initialize(counts, sums)
        delta = (counts[:, None] * self.centers - sums) / (1.0 + counts[:, None])
        self.centers -= self.alpha * delta
