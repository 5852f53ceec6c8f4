"""Loss terms beyond cross-entropy."""
from __future__ import annotations

import torch
import torch.nn as nn


class CenterLoss(nn.Module):
    """Center loss of Wen et al. (ECCV 2016), exactly as in the paper.

    L_C = 1/2 * sum_i ||x_i - c_{y_i}||^2 over the mini-batch (Eq. 2). The centers are
    not learned by back-propagation: after each update they move by Eq. 4,
        delta c_j = sum_i [y_i = j] (c_j - x_i) / (1 + sum_i [y_i = j]),
        c_j <- c_j - alpha * delta c_j,
    independently of the loss weight lambda. They are a buffer, so they are saved
    with checkpoints but no optimizer touches them.
    """

    def __init__(self, num_classes: int, dim: int, alpha: float = 0.5):
        super().__init__()
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"center_alpha={alpha} is not allowed; allowed: a number in (0, 1]")
        self.alpha = alpha
        self.register_buffer("centers", torch.zeros(num_classes, dim))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        diff = features.float() - self.centers[labels]
        return 0.5 * (diff * diff).sum()

    @torch.no_grad()
    def update_centers(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Eq. 4 of the paper, for every class present in the batch at once."""
        features = features.float()
        counts = torch.bincount(labels, minlength=len(self.centers)).to(features.dtype)
        sums = torch.zeros_like(self.centers).index_add_(0, labels, features)
        delta = (counts[:, None] * self.centers - sums) / (1.0 + counts[:, None])
        self.centers -= self.alpha * delta
