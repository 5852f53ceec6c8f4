"""Results as data: metrics.json (the contract in the README), figures and CSV tables in ``output_dir``."""
from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path

from labkit.paths import atomic_write_bytes, atomic_write_text, code_fingerprint, git_commit
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
# How many training seeds stand behind a run's numbers, and how many of them gave an accuracy (a mean over
# fewer than all says so): counts, like the cost keys any number >= 0.
COUNT_KEYS = ("seeds", "seeds_ok")

# What may differ between two runs of the same code without a number having changed.
TIMING_KEYS = {"train_seconds", "train_images_per_second"}


def same_numbers(ma: dict, mb: dict) -> bool:
    """A run's metrics.json entries hold the same values (floats within 1e-12 relative), timings aside."""
    keys = (set(ma) | set(mb)) - TIMING_KEYS
    for key in keys:
        va, vb = ma.get(key), mb.get(key)
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool):
            if not math.isclose(va, vb, rel_tol=1e-12, abs_tol=1e-15):
                return False
        elif va != vb:
            return False
    return True


# The libraries whose versions can move a number; recorded in every metrics.json.
LIBRARIES = ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "pytorch-metric-learning")


def library_versions() -> dict[str, str]:
    """Python's and each of :data:`LIBRARIES`' installed version ("not installed" when absent)."""
    import platform
    from importlib import metadata
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class Results:
    """Collects one notebook's runs and writes ``output_dir/metrics.json`` atomically after each change.

    ``metrics.json``: ``{"notebook", "profile", "weights", "device", "params", "started",
    "finished", "runs": {name: {"accuracy", "status", <metric>: fraction, ...}}}``, and beside them the
    device's name, torch's thread count when the notebook started (``torch_threads``), the count each
    CPU-trained run used (``torch_threads_per_run``: its fair share on a shared machine), what made the
    numbers (``git_commit``, ``code_fingerprint``, library ``versions``) and each run's resolved settings
    (``run_settings``). A run's own entry keeps only the contract's keys (metrics there are fractions).
    Beside it, :meth:`predictions` writes ``predictions.npz``.
    """

    def __init__(self, notebook: str, profile: str, weights: str, device: str, params: dict, output_dir):
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        import torch

        from labkit.device import device_name
        # the thread count is part of a CPU result: other counts sum in another order and round differently
        self.data = {"notebook": notebook, "profile": profile, "weights": weights, "device": str(device),
                     "device_name": device_name(torch.device(device)), "torch_threads": torch.get_num_threads(),
                     "torch_threads_per_run": {}, "git_commit": git_commit(), "code_fingerprint": code_fingerprint(),
                     "versions": library_versions(), "params": _clean(params), "run_settings": {},
                     "started": _now(), "finished": None, "runs": {}}

    @property
    def runs(self) -> dict:
        return self.data["runs"]

    def add_run(self, name: str, accuracy: float | None, *, status: str, torch_threads: int | None = None,
                settings: dict | None = None, **metrics) -> dict:
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
            if key in COST_KEYS or key in COUNT_KEYS:
                if value is not None and not (isinstance(value, (int, float)) and value >= 0):
                    raise ValueError(f"run {name!r}: {key}={value!r} must be a number >= 0 or None")
                continue
            if value is not None and not isinstance(value, str) and not (
                    isinstance(value, (int, float)) and (not math.isfinite(value) or 0.0 <= value <= 1.0)):
                raise ValueError(f"run {name!r}: metric {key}={value!r} must be a fraction in 0..1 or None")
        self.runs[name] = _clean({"accuracy": accuracy, "status": status, **metrics})
        if torch_threads is not None:
            self.data["torch_threads_per_run"][name] = int(torch_threads)
        if settings is not None:  # the run's resolved settings: what `labkit compare` names when a run changed
            self.data["run_settings"][name] = _clean(settings)
        self.write(finished=False)
        return self.runs[name]

    def predictions(self, outcomes: dict, test, classes: list[str] | None = None) -> Path:
        """Write ``predictions.npz`` (compressed numpy, no pickles) beside metrics.json: for every run and
        training seed that has predictions, each test image's predicted class (``predictions``, runs x images)
        and that class's probability (``probability``, float16; NaN where the method gives none, e.g. the SVM),
        with ``run`` and ``seed`` per row, the true ``labels``, each image's id (``ids``: its file, or its index
        in the source file), the ``classes`` and the test set's identity (``test_identity``: SHA-256 of the
        decoded images and labels in test order, see :meth:`labkit.data.ImageSet.identity`).

        ``outcomes``: ``{name: [Outcome per seed]}``; ``test``: the ImageSet the runs were tested on."""
        import io

        import numpy as np
        labels = test.labels.numpy()
        rows = [o for runs in outcomes.values() for o in runs if o.error is None and len(o.y_pred) == len(labels)]
        n = len(labels)
        blob = {"test_identity": np.array(test.identity()), "ids": np.array(test.image_ids(), dtype=str),
                "labels": labels.astype(np.int16), "classes": np.array(classes or test.classes, dtype=str),
                "run": np.array([o.name for o in rows], dtype=str), "seed": np.array([o.seed for o in rows], np.int64),
                "predictions": np.array([o.y_pred for o in rows], np.int16).reshape(len(rows), n),
                "probability": np.array([o.confidence if o.confidence is not None else np.full(n, np.nan)
                                         for o in rows], np.float16).reshape(len(rows), n)}
        buf = io.BytesIO()
        np.savez_compressed(buf, **blob)
        path = self.output_dir / "predictions.npz"
        atomic_write_bytes(path, buf.getvalue())
        return path

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

