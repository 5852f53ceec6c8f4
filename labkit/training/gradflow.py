"""Gradient flow: how large each layer's gradients are during training, input to output."""
from __future__ import annotations

import torch
import torch.nn as nn


class GradientFlow:
    """Mean and max absolute gradient of each layer's weight, recorded every ``every`` updates.

    Layers are the modules that own a trainable ``weight``, in registration order,
    which for the models here is input to output.
    """

    def __init__(self, model: nn.Module, every: int = 1):
        self.every = max(1, int(every))
        self.layers = [(name, m) for name, m in model.named_modules()
                       if isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.requires_grad]
        self.names = [name for name, _ in self.layers]
        self.rows: list[dict] = []

    def record(self, update: int) -> None:
        if update % self.every:
            return
        grads = [m.weight.grad for _, m in self.layers]
        stats = torch.stack([torch.stack([g.abs().mean(), g.abs().max()]) if g is not None
                             else torch.zeros(2, device=grads[0].device if grads[0] is not None else "cpu")
                             for g in grads]).float().cpu().tolist()
        for name, (mean, mx) in zip(self.names, stats):
            self.rows.append({"update": update, "layer": name, "mean_abs_grad": mean, "max_abs_grad": mx})

    def summary(self):
        """Per layer (input to output): the mean of the recorded means and the largest max."""
        import pandas as pd
        df = pd.DataFrame(self.rows)
        if df.empty:
            return pd.DataFrame(columns=["layer", "mean_abs_grad", "max_abs_grad"])
        out = df.groupby("layer", sort=False).agg(mean_abs_grad=("mean_abs_grad", "mean"),
                                                   max_abs_grad=("max_abs_grad", "max"))
        return out.reindex(self.names).reset_index()
