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

import statistics
import time
from dataclasses import replace

import torch

from labkit.data import Batches
from labkit.models import SmallCNN, classifier, resnet
from labkit.questions import registry
from labkit.questions.contract import Pass, Setting
from labkit.training.loop import fit, predict
from labkit.training.optim import make_optimizer

def full_profile_passes(profile: str = "full") -> list[Pass]:
    """Every notebook's passes under ``profile`` (its parameter files over the notebooks' defaults), each asked
    of its question (:meth:`labkit.questions.contract.Question.passes`) at the real datasets' sizes."""
    return [p for key in registry.QUESTIONS
            for p in registry.question(key).passes(registry.resolved_parameters(key, profile))]


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
        opt = make_optimizer(s.optimizer, model.parameters(), 1e-4)  # the optimizer's own defaults

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
