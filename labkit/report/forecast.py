"""How long a profile takes on this machine, predicted before anything runs (``python -m labkit plan``, the
first lines of ``make report``), and the full profile's wall time for the benchmarks.

Each notebook's plan under a profile (``notebooks/params/<profile>/<nb>.yaml`` over the notebook's defaults) is
turned into passes over its data's sizes (:meth:`labkit.questions.contract.Question.passes`): training epochs,
validation after each epoch, the test set once, Q1's feature pass once. A pass takes its images divided by its
setting's rate (:mod:`labkit.report.rates`). Added: decoding a real dataset on a cold cache, Q1's SVM, the
stand-in's pre-training when not cached, kernel start and rendering. Not counted: downloads, checkpoint writes,
gradient-flow records and the triplet and center terms' own cost (small next to a ResNet's forward and
backward pass).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from labkit.models import SmallCNN, resnet
from labkit.questions import registry
from labkit.questions.contract import Pass, Setting
from labkit.report.rates import (QUICK_STEPS, cached_rates, decode_seconds_per_file, measure_rate, measure_rates,
                                 measurement_batch, quick_rate, shrink)

__all__ = ["Forecast", "NotebookPlan", "Pass", "QUICK_STEPS", "Setting", "describe", "forecast",
           "full_profile_passes", "measure_rate", "measure_rates", "measurement_batch", "plan_notebook",
           "predict_seconds", "quick_rate", "shrink"]


def full_profile_passes(profile: str = "full") -> list[Pass]:
    """Every notebook's passes under ``profile`` (its parameter files over the notebooks' defaults), each asked
    of its question (:meth:`labkit.questions.contract.Question.passes`) at the real datasets' sizes."""
    return [p for key in registry.QUESTIONS
            for p in registry.question(key).passes(registry.resolved_parameters(key, profile))]


def predict_seconds(passes: list[Pass], rates: dict[Setting, float]) -> dict[str, float]:
    """Seconds per notebook: each pass's images at its setting's rate."""
    out: dict[str, float] = {}
    for p in passes:
        out[p.notebook] = out.get(p.notebook, 0.0) + p.images / rates[p.setting]
    return out


def describe(passes: list[Pass], rates: dict[Setting, float]) -> list[str]:
    """One line per notebook and one in all, for the benchmark's printout."""
    seconds = predict_seconds(passes, rates)
    lines = []
    for nb, total in seconds.items():
        mine = [p for p in passes if p.notebook == nb]
        trained = sum(p.images for p in mine if p.setting.train)
        evaluated = sum(p.images for p in mine if not p.setting.train)
        runs = len({p.what.split(":")[0] for p in mine if p.setting.train})
        lines.append(f"  {nb}: {_clock(total)} ({runs} training run(s): {trained:,} training images in all at "
                     f"{_rate_range(rates, [p for p in mine if p.setting.train])}; {evaluated:,} images evaluated)")
    lines.append(f"  in all: {_clock(sum(seconds.values()))} (not counted: first-time downloads and decoding, the "
                 f"SVM on the CPU, checkpoint writes, gradient-flow records)")
    return lines


def _rate_range(rates: dict[Setting, float], passes: list[Pass]) -> str:
    values = sorted({rates[p.setting] for p in passes})
    if not values:
        return "-"
    return f"{values[0]:,.0f} img/s" if len(values) == 1 else f"{values[0]:,.0f}-{values[-1]:,.0f} img/s"


# --------------------------------------------------------------------------- the plan (python -m labkit plan)
#
# A forecast must come before the run it forecasts, so it cannot time the run's own epochs: each distinct
# setting takes a few steps on generated tensors (no dataset read, no notebook run), cached per machine,
# device, torch, thread count and code. The range (low-high) is the spread of those steps, widened for what
# is estimated rather than timed (decoding, the SVM, kernel start and rendering).

# Kernel start with labkit's imports, and rendering one notebook to two HTML pages and a PDF page: an estimate,
# not timed per machine (with it the demo's and the cpu profile's forecasts came within 13 % and 3 % of their
# cold runs on the 2-core machine; README).
NOTEBOOK_OVERHEAD_SECONDS = 12.0
REPORT_OVERHEAD_SECONDS = 6.0  # the index, the merged PDF
ESTIMATE_SPREAD = (0.8, 1.5)  # what is estimated, not timed: low and high factors
DATASETS = {"q1": "stl10", "q2": "tiny-imagenet-200", "q3": "dogs-vs-cats"}
# The published archives (what `make data` downloads) and their unpacked size, in bytes: approximate, for the
# disk estimate only.
DOWNLOAD_BYTES = {"stl10": 2_640_397_119, "tiny-imagenet-200": 248_100_043, "dogs-vs-cats": 824_887_076}
UNPACKED_BYTES = {"stl10": 3_120_000_000, "tiny-imagenet-200": 480_000_000, "dogs-vs-cats": 850_000_000}
IMAGENET_WEIGHTS_BYTES = {"resnet50": 102_540_417, "resnet18": 46_830_571}
# Beside decoding, each file is listed, opened and stat-ed for the cache key, and its pixels written to the decoded
# cache: about 1 ms per file and core (a cold load of Tiny ImageNet's 27,500 files took 27 s on 2 cores).
FILE_OVERHEAD_SECONDS = 0.001
# Each question's files: (format, stored pixel size) of what its loader decodes on a cold cache.
DECODED_FILES = {"q1": None, "q2": ("JPEG", (64, 64)), "q3": ("JPEG", (500, 375))}


def svm_seconds(n_train: int, dim: int) -> tuple[float, float]:
    """(low, high) seconds of Q1's SVM on ``n_train`` features of ``dim`` dimensions: timed on 200 random
    ones, scaled linearly (low) and quadratically (high) in the images, as libsvm's solver goes."""
    import numpy as np

    from labkit.questions.q1_transfer import train_svm
    n0 = min(200, n_train)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(n0, dim)).astype(np.float32), np.arange(n0) % 10
    t = time.perf_counter()
    train_svm(x, y, "linear", 0.01, 0)
    t0 = time.perf_counter() - t
    return t0 * n_train / n0, t0 * (n_train / n0) ** 2


@dataclass
class NotebookPlan:
    """One notebook's forecast: seconds (low, expected, high), its runs and seeds, what it needs."""

    key: str
    seconds: float
    low_seconds: float
    high_seconds: float
    runs: int
    seeds: int
    data_missing: list[str]
    disk_bytes: int
    lines: list[str]


def _data_needs(key: str, P: dict) -> tuple[list[str], int, list[str]]:
    """(what is missing and how to get it, bytes to download and unpack, lines)."""
    from labkit.models import imagenet_weights_enum
    from labkit.paths import real_data_dir
    missing, disk, lines = [], 0, []
    dataset = DATASETS[key]
    if P["data_source"] == "real":
        root = Path(P["data_dir"]) if P["data_dir"] else real_data_dir(dataset)
        if root.is_dir() and any(root.iterdir()):
            marker = "; GENERATED with the real sizes (timing only)" if (root / "GENERATED.json").exists() else ""
            lines.append(f"data: {root} (present{marker})")
        else:
            missing.append(f"{dataset}: `make data` downloads about {DOWNLOAD_BYTES[dataset] / 1e9:.2f} GB into "
                           f"{root}")
            disk += DOWNLOAD_BYTES[dataset] + UNPACKED_BYTES[dataset]
    else:
        lines.append("data: generated on first use (small, offline)")
    if P.get("weights") == "imagenet":
        arch = P.get("arch", "resnet18")
        url = imagenet_weights_enum(arch).url
        if not (Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]).exists():
            missing.append(f"ImageNet weights for {arch}: `make data` downloads "
                           f"{IMAGENET_WEIGHTS_BYTES[arch] / 1e6:.0f} MB")
            disk += IMAGENET_WEIGHTS_BYTES[arch]
    return missing, disk, lines


def _parameters(key: str, profile: str, overrides: dict | None) -> dict:
    """The notebook's parameters under ``profile``, with the overrides it declares (as ``make report`` passes
    them)."""
    declared = registry.default_parameters(key)
    return registry.resolved_parameters(key, profile, **{k: v for k, v in (overrides or {}).items() if k in declared})


def plan_notebook(key: str, P: dict, device: torch.device, log=None, pretrained: set | None = None) -> NotebookPlan:
    """Every pass of the notebook's plan at its rate, decoding on a cold cache, Q1's SVM, the stand-in's
    pre-training when not cached (once per report: ``pretrained`` holds those an earlier notebook counted),
    kernel start and rendering; and the disk it needs."""
    question = registry.question(key)
    passes = list(question.passes(P))
    weights = P.get("weights")
    if weights in ("standin", "standin-smoke"):
        from labkit.training import standin
        arch = P.get("arch", "resnet18")
        if not standin.weights_path(arch, weights).exists() and (arch, weights) not in (pretrained or set()):
            if pretrained is not None:
                pretrained.add((arch, weights))
            s = standin.SETTINGS[weights]
            classes = len(standin.source_classes())
            passes.append(Pass(key, "stand-in pre-training (once)", Setting(
                arch, s["image_size"], s["image_size"], s["batch_size"], classes, True, True, precision="fp32"),
                classes * s["per_class"] * s["epochs"]))
    rates = cached_rates([p.setting for p in passes], device, log)
    expected = sum(p.images / rates[p.setting]["rate"] for p in passes)
    low = sum(p.images / rates[p.setting]["fast"] for p in passes)
    high = sum(p.images / rates[p.setting]["slow"] for p in passes)
    lines = []
    estimated = NOTEBOOK_OVERHEAD_SECONDS
    est_low, est_high = estimated * ESTIMATE_SPREAD[0], estimated * ESTIMATE_SPREAD[1]
    if DECODED_FILES[key] and P["data_source"] == "real":
        n_files = P["num_classes"] * 550 if key == "q2" else 25_000  # Tiny ImageNet: train + val per class
        per_file = decode_seconds_per_file(DECODED_FILES[key], P["image_size"])
        decode = n_files * (per_file + FILE_OVERHEAD_SECONDS) / max(1, min(8, os.cpu_count() or 1))
        lines.append(f"decoding {n_files:,} files on a cold cache: about {_clock(decode)}")
        estimated += decode
        est_low, est_high = est_low + decode * ESTIMATE_SPREAD[0], est_high + decode * ESTIMATE_SPREAD[1]
    if key == "q1" and any(r["method"] == "svm" for part in question.plan(P).values()
                           for runs in part.values() for r in runs):
        n_train = next(p.images for p in passes if p.what.startswith("feature pass")) - \
            (8_000 if P["data_source"] == "real" else 10 * P["synthetic_test_per_class"])
        dim = 1000 if P["feature_layer"] == "fc" else (2048 if P["arch"] == "resnet50" else 512)
        svm_low, svm_high = svm_seconds(max(n_train, 1), dim)
        lines.append(f"SVM on {n_train:,} features: {_clock(svm_low)}-{_clock(svm_high)}")
        estimated += (svm_low + svm_high) / 2
        est_low, est_high = est_low + svm_low, est_high + svm_high
    plan_ = question.plan(P)
    names = {r.name for part in plan_.values() for runs in part.values() for r in runs}
    missing, disk, data_lines = _data_needs(key, P)
    disk += _cache_bytes(key, P, passes, plan_)
    by_setting: dict[str, float] = {}
    for p in passes:
        kind = p.what.split(": ")[-1] if ": " in p.what else p.what
        by_setting[kind] = by_setting.get(kind, 0.0) + p.images / rates[p.setting]["rate"]
    lines = data_lines + [f"{what}: {_clock(sec)}" for what, sec in by_setting.items()] + lines
    precisions = sorted({rates[p.setting]["precision"] for p in passes if p.setting.train})
    if precisions:
        lines.append(f"training precision on this device: {', '.join(precisions)}")
    return NotebookPlan(key, expected + estimated, low + est_low, high + est_high, len(names), len(P["seeds"]),
                        missing, disk, lines)


def _cache_bytes(key: str, P: dict, passes: list[Pass], plan_: dict) -> int:
    """Decoded images, Q1's features and each trained run's final checkpoint (weights only)."""
    decoded = {"q1": lambda: (5_000 + 8_000) * 3 * 96 * 96 if P["data_source"] == "real" else 0,
               "q2": lambda: P["num_classes"] * 550 * 3 * min(P["image_size"], 64) ** 2,
               "q3": lambda: 25_000 * 3 * P["image_size"] ** 2 if P["data_source"] == "real" else 0}[key]()
    features = sum(p.images for p in passes if p.what.startswith("feature pass")) * (2048 + 1000) * 4
    trained = {p.what.split(": ")[0] for p in passes if p.setting.train and "stand-in" not in p.what}
    arch = {"q1": P.get("arch", "resnet50"), "q2": "resnet18", "q3": "smallcnn"}[key]
    per_checkpoint = _parameter_count(arch) * 4 if P.get("keep_checkpoints", "final") != "none" else 0
    return decoded + features + per_checkpoint * len(trained)


def _parameter_count(arch: str) -> int:
    model = SmallCNN(num_classes=2) if arch == "smallcnn" else resnet(arch, "none")
    return sum(p.numel() for p in model.parameters())


@dataclass
class Forecast:
    profile: str
    device: str
    notebooks: dict[str, NotebookPlan] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return sum(n.seconds for n in self.notebooks.values()) + REPORT_OVERHEAD_SECONDS

    def to_json(self) -> dict:
        return {"profile": self.profile, "device": self.device, "total_seconds": round(self.total_seconds, 1),
                "low_seconds": round(sum(n.low_seconds for n in self.notebooks.values()) + REPORT_OVERHEAD_SECONDS, 1),
                "high_seconds": round(sum(n.high_seconds for n in self.notebooks.values())
                                      + REPORT_OVERHEAD_SECONDS, 1),
                "notebooks": {k: {"seconds": round(n.seconds, 1), "low_seconds": round(n.low_seconds, 1),
                                  "high_seconds": round(n.high_seconds, 1), "runs": n.runs, "seeds": n.seeds,
                                  "data_missing": n.data_missing, "disk_bytes": n.disk_bytes}
                              for k, n in self.notebooks.items()}}

    def describe(self) -> list[str]:
        j = self.to_json()
        out = [f"forecast for profile {self.profile} on {self.device}: {_clock(j['total_seconds'])} "
               f"(range {_clock(j['low_seconds'])}-{_clock(j['high_seconds'])})"]
        for k, n in self.notebooks.items():
            out.append(f"  {k} {registry.NOTEBOOKS[k]}: {_clock(n.seconds)} ({_clock(n.low_seconds)}-"
                       f"{_clock(n.high_seconds)}); {n.runs} run(s) x {n.seeds} seed(s); disk about "
                       f"{n.disk_bytes / 1e9:.2f} GB")
            out += [f"    {line}" for line in n.lines]
            out += [f"    MISSING: {m}" for m in n.data_missing]
        return out


def forecast(profile: str, only: list[str] | None = None, device: str | None = None, overrides: dict | None = None,
             log=None) -> Forecast:
    """The forecast of ``profile`` (its parameter files over the notebooks' defaults, ``overrides`` on top)
    for the device the notebooks would choose."""
    from labkit.device import choose_device, device_name
    keys = [k for k in (only or registry.QUESTIONS) if registry.QUESTIONS[k].module is not None]
    params = {key: _parameters(key, profile, overrides) for key in keys}
    dev = choose_device(device or (params[keys[0]].get("device", "auto") if keys else "auto"))
    out = Forecast(profile, device_name(dev))
    pretrained: set = set()
    with torch.random.fork_rng(devices=[]):
        for key in keys:
            out.notebooks[key] = plan_notebook(key, params[key], dev, log, pretrained)
    return out


def _clock(seconds: float) -> str:
    """"45 s", "12.5 min", "3.2 h"."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
