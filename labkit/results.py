"""Results as data: metrics.json (the contract in the README), figures and CSV tables in ``output_dir``."""
from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path

from labkit.paths import atomic_write_bytes, atomic_write_text
from labkit.text import status_text

STATUSES = ("ok", "at_chance", "below_chance", "diverged", "failed")
# How tables and the report index name every status but "ok".
FLAGS = {s: status_text(s).upper() for s in STATUSES if s != "ok"}
_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _clean(value):
    """JSON-safe: NaN and inf become null, numpy scalars plain numbers."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def run_status(accuracy: float | None, n: int, chance: float | None, diverged: bool = False,
               failed: bool = False) -> str:
    """"failed" (the run raised), "diverged" (NaN/inf loss), else the chance verdict of the 95 % Wilson
    interval on ``n`` test images (:func:`labkit.metrics.chance_status`)."""
    if failed:
        return "failed"
    if diverged:
        return "diverged"
    if accuracy is None or chance is None or not n:
        return "ok"
    from labkit.metrics import chance_status
    return chance_status(accuracy, n, chance)


# What a run cost: any non-negative number, unlike the metrics (fractions).
COST_KEYS = ("train_seconds", "train_images_per_second", "epochs", "updates")


class Results:
    """Collects one notebook's runs and writes ``output_dir/metrics.json`` atomically after each change.

    ``metrics.json``: ``{"notebook", "profile", "weights", "device", "params", "started",
    "finished", "runs": {name: {"accuracy", "status", <metric>: fraction, ...}}}``, and beside them the
    device's name, torch's thread count when the notebook started (``torch_threads``) and the count each
    CPU-trained run used (``torch_threads_per_run``: its fair share on a shared machine). A run's own entry
    keeps only the contract's keys (metrics there are fractions).
    """

    def __init__(self, notebook: str, profile: str, weights: str, device: str, params: dict, output_dir):
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        import torch

        from labkit.device import device_name
        # the thread count is part of a CPU result: other counts sum in another order and round differently
        self.data = {"notebook": notebook, "profile": profile, "weights": weights, "device": str(device),
                     "device_name": device_name(torch.device(device)), "torch_threads": torch.get_num_threads(),
                     "torch_threads_per_run": {}, "params": _clean(params), "started": _now(), "finished": None,
                     "runs": {}}

    @property
    def runs(self) -> dict:
        return self.data["runs"]

    def add_run(self, name: str, accuracy: float | None, *, status: str, torch_threads: int | None = None,
                **metrics) -> dict:
        """Record a run. Extra metrics must be snake_case fractions (0..1) or None, e.g. ``macro_f1``,
        ``precision_at_1``, ``accuracy_ci_low``; the cost keys (:data:`COST_KEYS`) any number >= 0; an
        ``error`` a message."""
        if accuracy is not None and not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"run {name!r}: accuracy must be a fraction in 0..1, got {accuracy}")
        if status not in STATUSES:
            raise ValueError(f"run {name!r}: status={status!r} is not allowed; allowed: {', '.join(STATUSES)}")
        for key, value in metrics.items():
            if not _SNAKE.match(key):
                raise ValueError(f"run {name!r}: metric name {key!r} must be snake_case")
            if key in COST_KEYS:
                if value is not None and not (isinstance(value, (int, float)) and value >= 0):
                    raise ValueError(f"run {name!r}: {key}={value!r} must be a number >= 0 or None")
                continue
            if value is not None and not isinstance(value, str) and not (
                    isinstance(value, (int, float)) and (not math.isfinite(value) or 0.0 <= value <= 1.0)):
                raise ValueError(f"run {name!r}: metric {key}={value!r} must be a fraction in 0..1 or None")
        self.runs[name] = _clean({"accuracy": accuracy, "status": status, **metrics})
        if torch_threads is not None:
            self.data["torch_threads_per_run"][name] = int(torch_threads)
        self.write(finished=False)
        return self.runs[name]

    def figure(self, fig, name: str, dpi: int = 110) -> Path:
        """Save a figure as ``<name>.png`` (atomically) and return its path."""
        import io
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        path = self.output_dir / f"{name}.png"
        atomic_write_bytes(path, buf.getvalue())
        return path

    def table(self, df, name: str, index: bool = True) -> Path:
        path = self.output_dir / f"{name}.csv"
        atomic_write_text(path, df.to_csv(index=index))
        return path

    def write(self, finished: bool = True) -> Path:
        if finished:
            self.data["finished"] = _now()
        path = self.output_dir / "metrics.json"
        atomic_write_text(path, json.dumps(self.data, indent=1, sort_keys=False) + "\n")
        return path

