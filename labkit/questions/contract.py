"""The one contract every question satisfies, and the data it passes around.

A question module (``labkit.questions.q1_transfer``, ``q2_losses``, ``q3_optimizers``) is a :class:`Question`:
the report's pre-flight, the sweeps, the wall-time forecast and the device check ask it, never re-code it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from labkit.data import ImageSet
from labkit.runs import Run


@dataclass
class Data:
    """What a question trains and tests on: three ImageSets, where they came from, and their identity (part of
    every run's checkpoint key). ``split_seed``: the seed of any split a run carves itself (Q1's fine-tuning
    carves its validation share, a run setting, from ``train``)."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    source: str
    key: str
    split_seed: int = 0

    @property
    def skipped(self) -> list[str]:
        """The dataset's unreadable files (empty, truncated, not an image), skipped when it was decoded."""
        return list(dict.fromkeys(self.train.skipped + self.val.skipped + self.test.skipped))

    def counts(self):
        """Images per class (rows) and split (train, validation, test), as ints: an empty split (``val_fraction:
        0``) shows 0s, not NaN."""
        import numpy as np
        import pandas as pd
        classes = self.train.classes
        return pd.DataFrame({name: np.bincount(part.labels.numpy(), minlength=len(classes)).astype(int)
                             for name, part in (("train", self.train), ("validation", self.val),
                                                ("test", self.test))}, index=pd.Index(classes, name="class"))


@dataclass(frozen=True)
class Setting:
    """What decides the speed of a pass: the model, the decoded (stored) and network input sizes, the batch size,
    and for training what trains and how."""

    arch: str  # "resnet50", "resnet18" or "smallcnn"
    stored_size: int
    image_size: int
    batch_size: int
    num_classes: int
    train: bool
    augment: bool = False
    freeze_until: str = "none"
    optimizer: str = "adam"
    precision: str = "auto"  # as asked ("auto", "fp32", "bf16"); resolved per device when timed (Q1's features: fp32)


@dataclass(frozen=True)
class Pass:
    """One pass over images at one setting: a run's training epochs, its validation, its test, a feature pass."""

    notebook: str
    what: str
    setting: Setting
    images: int  # over all its epochs


@runtime_checkable
class Question(Protocol):
    """What the report, sweeps, forecast and device check need of a question."""

    TITLE: str

    def parameters(self, namespace: dict) -> dict:
        """The notebook's parameters from its namespace, validated (unknown names refused)."""

    def architecture(self, P: dict) -> str:
        """The network the runs train, in words ("ResNet-18"): the index's title says it."""

    def load_data(self, P: dict) -> Data:
        """Decode (or load from the cache) the question's data: train, validation and test ImageSets."""

    def plan(self, P: dict) -> dict[str, dict[str, list[Run]]]:
        """Every part's runs, resolved: part -> run name -> one Run per training seed."""

    def train_and_test(self, run: Run, data: Data, device: torch.device):
        """Train one run (or fit its method) and test it once: an :class:`labkit.questions.experiments.Outcome`."""

    def findings(self, summary, parts: dict, P: dict) -> str:
        """This run's figures as sentences for the notebook's conclusion."""

    def passes(self, P: dict, sizes: dict | None = None) -> list[Pass]:
        """The passes over images the plan makes, at the sizes of the data it names (the real datasets' or the
        generated ones'), or ``sizes``: the forecast's input."""


def held_out(n: int, fraction: float) -> int:
    """How many of ``n`` images a split of ``fraction`` holds out (``labkit.data.stratified_split``)."""
    return int(math.ceil(fraction * n))


def distinct(runs) -> list[Run]:
    """Each (settings, seed) once, as ``experiments.Runner`` trains them."""
    from labkit.runs import run_key
    seen = {}
    for run in runs:
        seen.setdefault(run_key("", run.settings, run.seed), run)
    return list(seen.values())


def evaluation(setting: Setting, batch_size: int) -> Setting:
    """The inference setting that goes with a training setting (validation, test)."""
    from dataclasses import replace
    return replace(setting, batch_size=batch_size, train=False, augment=False, freeze_until="none", optimizer="adam")


def all_runs(plan: dict[str, dict[str, list[Run]]]) -> list[Run]:
    return [run for part in plan.values() for per_seed in part.values() for run in per_seed]
