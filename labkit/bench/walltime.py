"""The full profile's wall time on this machine, predicted from measured rates.

Each notebook's full-profile plan (``notebooks/params/full/<nb>.yaml`` over the notebook's defaults) is
turned into passes over the full datasets' sizes: training epochs, validation after each epoch, the test
set once, Q1's feature pass once. Each distinct setting (model, stored and input size, batch size, what
trains) is timed here through labkit's own ``fit`` and ``predict`` on generated uint8 images of the
stored size; a pass takes its images divided by its setting's rate. Not counted: first-time downloads
and decoding, the SVM (CPU), checkpoint writes, gradient-flow records and the triplet and center terms'
own cost (small next to a ResNet forward and backward pass).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, replace

import torch

from labkit.questions import q1_transfer as q1
from labkit.questions import q2_losses as q2
from labkit.questions import q3_optimizers as q3
from labkit.data import Batches
from labkit.models import SmallCNN, classifier, resnet
from labkit.questions.registry import default_parameters
from labkit.training.optim import make_optimizer
from labkit.runs import Run, run_key
from labkit.training.loop import fit, predict

# The real datasets' sizes (what `make data` fetches).
STL10 = {"train": 5_000, "test": 8_000, "stored_size": 96}
TINY_IMAGENET = {"train_per_class": 500, "val_per_class": 50, "stored_size": 64}  # val: the test set here
DOGS_VS_CATS = {"images": 25_000}  # Q3 decodes at its input size: stored = image_size


@dataclass(frozen=True)
class Setting:
    """What decides the speed of a pass: the model, the decoded (stored) and network input sizes, the
    batch size, and for training what trains and how."""

    arch: str  # "resnet50", "resnet18" or "smallcnn"
    stored_size: int
    image_size: int
    batch_size: int
    num_classes: int
    train: bool
    augment: bool = False
    freeze_until: str = "none"
    optimizer: str = "adam"
    fp32: bool = False  # an inference pass kept in full precision (Q1's feature pass; training uses bf16 on CUDA)


@dataclass(frozen=True)
class Pass:
    notebook: str
    what: str
    setting: Setting
    images: int  # over all its epochs


def _held(n: int, fraction: float) -> int:
    """How many of ``n`` images a split of ``fraction`` holds out (``labkit.data.stratified_split``)."""
    return int(math.ceil(fraction * n))


def _distinct(runs) -> list[Run]:
    """Each (settings, seed) once, as ``experiments.Runner`` trains them."""
    seen = {}
    for run in runs:
        seen.setdefault(run_key("", run.settings, run.seed), run)
    return list(seen.values())


def _eval(setting: Setting, batch_size: int) -> Setting:
    return replace(setting, batch_size=batch_size, train=False, augment=False, freeze_until="none",
                   optimizer="adam")


def q1_passes(P: dict) -> list[Pass]:
    runs = q1.plan(P)
    n_train, n_test, stored = STL10["train"], STL10["test"], STL10["stored_size"]
    passes = []
    if set(runs) - {"finetune"}:  # the SVM and both zero-shot rules share one cached feature pass
        features = Setting(P["arch"], stored, P["image_size"], 128, 1000, train=False, fp32=True)
        passes.append(Pass("q1", "feature pass (train + test)", features, n_train + n_test))
    for run in _distinct(runs.get("finetune", [])):
        val = _held(n_train, run["val_fraction"])
        s = Setting(run["arch"], stored, run["image_size"], run["batch_size"], q1.OTHER_INDEX, True,
                    run["augment"], run["freeze_until"], run["optimizer"])
        passes += [Pass("q1", f"finetune seed {run.seed}: training", s, (n_train - val) * run["epochs"]),
                   Pass("q1", f"finetune seed {run.seed}: validation", _eval(s, 128), val * run["epochs"]),
                   Pass("q1", f"finetune seed {run.seed}: test", _eval(s, 128), n_test)]
    return passes


def q2_passes(P: dict) -> list[Pass]:
    n = P["num_classes"] * TINY_IMAGENET["train_per_class"]
    val, test = _held(n, P["val_fraction"]), P["num_classes"] * TINY_IMAGENET["val_per_class"]
    passes = []
    for run in _distinct(r for per_seed in q2.plan(P).values() for r in per_seed):
        s = Setting("resnet18", TINY_IMAGENET["stored_size"], run["image_size"], run["batch_size"], P["num_classes"],
                    True, run["augment"])
        train = n - val
        if run["loss"] == "ce_triplet":  # P x K batches, the last partial one dropped
            train = train // run["batch_size"] * run["batch_size"]
        label = f"{run.name} seed {run.seed}"
        passes += [Pass("q2", f"{label}: training", s, train * run["epochs"]),
                   Pass("q2", f"{label}: validation", _eval(s, 256), val * run["epochs"]),
                   Pass("q2", f"{label}: test", _eval(s, 256), test)]
    return passes


def q3_passes(P: dict) -> list[Pass]:
    n = DOGS_VS_CATS["images"]
    test = _held(n, P["test_fraction"])
    val = _held(n - test, P["val_fraction"])
    train = n - test - val
    passes = []
    for run in _distinct(r for part in q3.plan(P).values() for per_seed in part.values() for r in per_seed):
        size = P["image_size"]
        s = Setting("smallcnn", size, size, run["batch_size"], 2, True, optimizer=run["optimizer"])
        label = f"{run.name} seed {run.seed}"
        passes += [Pass("q3", f"{label}: training", s, train * run["epochs"]),
                   Pass("q3", f"{label}: validation", _eval(s, 256), val * run["epochs"]),
                   Pass("q3", f"{label}: test", _eval(s, 256), test)]
    return passes


def full_profile_passes(profile: str = "full") -> list[Pass]:
    """Every notebook's passes under ``profile`` (its parameter files over the notebooks' defaults)."""
    return (q1_passes(q1.parameters(default_parameters("q1", profile)))
            + q2_passes(q2.parameters(default_parameters("q2", profile)))
            + q3_passes(q3.parameters(default_parameters("q3", profile))))


def shrink(setting: Setting) -> Setting:
    """A tiny stand-in of a setting, for the tests on the CPU: same model and code path (an upsampled
    stored size stays upsampled), 16 px, batch <= 4."""
    stored = 16 if setting.stored_size == setting.image_size else 12
    return replace(setting, stored_size=stored, image_size=16, batch_size=min(setting.batch_size, 4))


def _model(s: Setting) -> torch.nn.Module:
    if s.arch == "smallcnn":
        return SmallCNN(num_classes=s.num_classes)
    return classifier(resnet(s.arch, "none"), s.num_classes, freeze_until=s.freeze_until)


def _synced(fn, device: torch.device) -> float:
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t


def measure_rate(s: Setting, device: torch.device, steps: int = 20, min_images: int = 256,
                 repeats: int = 3) -> float:
    """Images per second of one setting through ``fit`` (one epoch) or ``predict``: median of ``repeats``
    timed passes after a warm-up pass (cuDNN autotuning, first allocations)."""
    n = max(s.batch_size * steps, min_images)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, s.stored_size, s.stored_size), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % s.num_classes
    torch.manual_seed(0)
    model = _model(s).to(device)
    batches = Batches(images, labels, s.batch_size, order="shuffle" if s.train else "sequential", augment=s.augment,
                      image_size=s.image_size if s.image_size != s.stored_size else None, device=device,
                      channels_last=True)
    if s.train:
        opt = make_optimizer(s.optimizer, model.parameters(), 1e-4, momentum=0.9 if s.optimizer == "sgd" else 0.0)

        def run():
            fit(model, batches, epochs=1, optimizer=opt, device=device, progress=False, channels_last=True)
    else:
        model.to(memory_format=torch.channels_last)

        def run():
            predict(model, batches, device, mixed_precision=not s.fp32)
    run()
    return n / statistics.median(_synced(run, device) for _ in range(repeats))


def measure_rates(passes: list[Pass], device: torch.device, tiny: bool = False, **kwargs) -> dict[Setting, float]:
    """Each distinct setting's rate (images per second); ``tiny`` measures :func:`shrink`'s stand-ins."""
    measured: dict[Setting, float] = {}
    rates = {}
    for s in dict.fromkeys(p.setting for p in passes):
        m = shrink(s) if tiny else s
        if m not in measured:  # several settings can shrink to one
            measured[m] = measure_rate(m, device, **kwargs)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rates[s] = measured[m]
    return rates


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
        lines.append(f"  {nb}: {_minutes(total)} ({runs} training run(s): {trained:,} training images in all at "
                     f"{_rate_range(rates, [p for p in mine if p.setting.train])}; {evaluated:,} images evaluated)")
    lines.append(f"  in all: {_minutes(sum(seconds.values()))} (not counted: first-time downloads and decoding, the "
                 f"SVM on the CPU, checkpoint writes, gradient-flow records)")
    return lines


def _rate_range(rates: dict[Setting, float], passes: list[Pass]) -> str:
    values = sorted({rates[p.setting] for p in passes})
    if not values:
        return "-"
    return f"{values[0]:,.0f} img/s" if len(values) == 1 else f"{values[0]:,.0f}-{values[-1]:,.0f} img/s"


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
