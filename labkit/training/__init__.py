"""The one training loop (``loop``), its checkpoints, CPU core sharing and run locks, losses, optimizers and
gradient flow."""
