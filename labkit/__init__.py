"""labkit: helpers behind the lab-report notebooks (data, models, training, metrics, plots, results)."""

__version__ = "0.1.0"
