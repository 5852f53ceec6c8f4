"""One run shape for every question: a resolved run is a name, every setting that changes its training
(the notebook's defaults merged under the run's own keys, in one place) and a training seed.

Its checkpoint key is derived here, from those settings, the seed, the identity of the data it trains
on and the code fingerprint, so a changed parameter, dataset or line of labkit never resumes a stale
run, while the same code and parameters always do.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from labkit.device import PRECISIONS, resolve_precision
from labkit.params import ParameterError, Spec, validate_runs
from labkit.paths import cache_dir, code_fingerprint


# A run setting of every notebook: the arithmetic its network trains and tests in (resolve_precision)
PRECISION = Spec(str, PRECISIONS, note="(auto: bf16 autocast where this machine computes it natively and faster, "
                                       "fp32 elsewhere)")


@dataclass(frozen=True)
class Run:
    """One training run: ``settings`` holds everything that changes its result; ``seed`` is the training
    seed (initialisation, batch order, augmentation), separate from the data split's ``seed``."""

    name: str
    settings: dict
    seed: int

    def __getitem__(self, key: str):
        return self.settings[key]


def resolve_runs(runs: list, defaults: dict, specs: dict[str, Spec], seeds: list[int], param: str = "runs",
                 keys_for: Callable[[str], list[str]] | None = None,
                 check: Callable[[str, dict], dict] | None = None) -> dict[str, list[Run]]:
    """``{name: [Run for each training seed]}``: each run's own keys over the notebook's ``defaults``.

    ``keys_for(name)`` narrows a run's settings to the ones its method uses (so an unused parameter does
    not change its key); ``check(name, settings)`` validates combinations and may normalise values.
    An empty list is allowed: that part of the notebook is skipped.
    """
    seeds = check_seeds(seeds)
    out = {}
    for run in validate_runs(runs, specs, param):
        # the notebook's defaults must be valid run settings too (e.g. epochs >= 1), not only the run's own keys
        settings = {k: specs[k].check(k, v) if k in specs else v for k, v in defaults.items()}
        settings.update({k: v for k, v in run.items() if k != "name"})
        if keys_for is not None:
            settings = {k: settings[k] for k in keys_for(run["name"])}
        if check is not None:
            settings = check(run["name"], settings)
        out[run["name"]] = [Run(run["name"], settings, seed) for seed in seeds]
    return out


def with_precision(run: Run, device: torch.device, model: str, image_size: int) -> Run:
    """The run with its ``precision`` resolved on ``device`` ("auto" becomes "fp32" or "bf16"): what it trains
    in, what its checkpoint key holds and what metrics.json records. A run made without one (by hand) is "auto"."""
    resolved = resolve_precision(run.settings.get("precision", "auto"), device, model, image_size, run["batch_size"])
    return Run(run.name, {**run.settings, "precision": resolved}, run.seed)


def check_seeds(seeds) -> list[int]:
    if not isinstance(seeds, (list, tuple)) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ParameterError(f"parameter 'seeds' = {seeds!r} is not allowed; allowed: a non-empty list of "
                             f"integers >= 0 (training seeds, e.g. [0] or [0, 1, 2])")
    if len(set(seeds)) != len(seeds):
        raise ParameterError(f"parameter 'seeds' = {seeds!r} repeats a seed; allowed: distinct integers")
    return list(seeds)


def data_identity(*parts) -> str:
    """A short hash of what a run trains and is tested on: a dataset by its cache key (``ImageSet.key``:
    its files, the loader's settings and code) or, without one, by its pixels and labels; tensors by their
    bytes; anything else by its JSON text (split seeds, index lists)."""
    digest = hashlib.sha256()
    for part in parts:
        if hasattr(part, "images") and hasattr(part, "labels"):  # an ImageSet
            part = part.key or data_identity(part.images, part.labels)
        if isinstance(part, torch.Tensor):
            digest.update(str((part.dtype, tuple(part.shape))).encode())
            digest.update(part.contiguous().numpy().tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def run_key(question: str, settings: dict, seed: int, data: str = "") -> str:
    """A short hash of a run's settings, seed, data identity and labkit's code fingerprint."""
    canonical = json.dumps([question, settings, seed, data, code_fingerprint()], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def checkpoint_path(question: str, run: Run, data: str) -> Path:
    """``data/cache/checkpoints/<question>-<run name>-<run key>.pt``."""
    return cache_dir("checkpoints") / f"{question}-{run.name}-{run_key(question, run.settings, run.seed, data)}.pt"
