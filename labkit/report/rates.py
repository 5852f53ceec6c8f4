"""Images per second of each setting on this machine, measured on generated tensors through labkit's own
``fit`` and ``predict`` (no dataset read, no notebook run): the forecast's few quick steps per setting, cached
per machine, device, torch, thread count and code (``data/cache/rates/``); the GPU benchmark's longer passes;
and decoding a file of a dataset's format."""
from __future__ import annotations

import hashlib
import json
import platform
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from labkit.data import Batches
from labkit.device import resolve_precision
from labkit.models import SmallCNN, classifier, resnet
from labkit.questions.contract import Pass, Setting
from labkit.training.loop import fit, predict
from labkit.training.optim import make_optimizer

QUICK_STEPS = 5  # timed steps per setting, after one warm-up step


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
    precision = resolve_precision(s.precision, device, s.arch, s.image_size, s.batch_size)
    batches = Batches(images, labels, s.batch_size, order="shuffle" if s.train else "sequential", augment=s.augment,
                      image_size=s.image_size if s.image_size != s.stored_size else None, device=device,
                      channels_last=True)
    if s.train:
        opt = make_optimizer(s.optimizer, model.parameters(), 1e-4)  # the optimizer's own defaults

        def run():
            fit(model, batches, epochs=1, optimizer=opt, device=device, progress=False, channels_last=True,
                precision=precision)
    else:
        model.to(memory_format=torch.channels_last)

        def run():
            predict(model, batches, device, precision)
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


def measurement_batch(s: Setting) -> int:
    """A small batch for the forecast's steps: the setting's own up to 64 images, 8 at ImageNet's 224 px
    (a ResNet-50 training step of 64 such images takes seconds on a laptop CPU)."""
    return max(1, min(s.batch_size, 8 if s.image_size >= 160 else 64))


def _channels_last(s: Setting, device: torch.device, precision: str) -> bool:
    """As the questions train: channels-last except Q2's ResNet-18 in fp32 on a CPU (slower there)."""
    return not (s.arch == "resnet18" and s.train and device.type == "cpu" and precision == "fp32")


def quick_rate(s: Setting, device: torch.device, steps: int = QUICK_STEPS) -> dict:
    """Images per second of one setting over ``steps`` timed steps of :func:`measurement_batch` images
    (after a warm-up step), through labkit's ``fit`` (one update per step) or ``predict``: the median step's
    rate, and the fastest and slowest step's."""
    batch = measurement_batch(s)
    precision = resolve_precision(s.precision, device, s.arch, s.image_size, s.batch_size)
    cl = _channels_last(s, device, precision)
    g = torch.Generator().manual_seed(0)
    n = batch * (steps + 1)
    images = torch.randint(0, 256, (n, 3, s.stored_size, s.stored_size), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % s.num_classes
    torch.manual_seed(0)
    model = _model(s).to(device)
    upsample = s.image_size if s.image_size != s.stored_size else None
    if s.train:
        stamps = [time.perf_counter()]

        def stamp(update, model):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stamps.append(time.perf_counter())
        opt = make_optimizer(s.optimizer, model.parameters(), 1e-4)
        fit(model, Batches(images, labels, batch, order="sequential", augment=s.augment, image_size=upsample,
                           device=device, channels_last=cl),
            epochs=1, optimizer=opt, device=device, progress=False, channels_last=cl, precision=precision,
            on_update=stamp)
        seconds = [b - a for a, b in zip(stamps[1:], stamps[2:])]  # the first step warms up
    else:
        model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        seconds = []
        for i in range(steps + 1):
            one = Batches(images[i * batch:(i + 1) * batch], labels[i * batch:(i + 1) * batch], batch,
                          order="sequential", image_size=upsample, device=device, channels_last=cl)
            seconds.append(_synced(lambda: predict(model, one, device, precision), device))
        seconds = seconds[1:]
    return {"rate": batch / statistics.median(seconds), "fast": batch / min(seconds), "slow": batch / max(seconds),
            "precision": precision, "batch": batch}


def _rate_cache_path(device: torch.device) -> Path:
    """``data/cache/rates/<machine>.json``: one file per machine, device, torch, thread count and code."""
    from labkit.device import device_name
    from labkit.paths import cache_dir, code_fingerprint
    who = json.dumps([platform.node(), device_name(device), torch.__version__, torch.get_num_threads(),
                      code_fingerprint(), QUICK_STEPS])
    return cache_dir("rates") / f"{hashlib.sha256(who.encode()).hexdigest()[:16]}.json"


def cached_rates(settings, device: torch.device, log=None) -> dict[Setting, dict]:
    """:func:`quick_rate` of each setting, from the rate cache when measured before on this machine."""
    from labkit.paths import atomic_write_text
    path = _rate_cache_path(device)
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    out = {}
    for s in dict.fromkeys(settings):
        key = json.dumps(asdict(s), sort_keys=True)
        if key not in known:
            if log:
                log(f"measuring {s.arch} at {s.image_size} px, batch {measurement_batch(s)}, "
                    f"{'training' if s.train else 'inference'}")
            known[key] = quick_rate(s, device)
            atomic_write_text(path, json.dumps(known, indent=1))
        out[s] = known[key]
    return out


def decode_seconds_per_file(kind: tuple[str, tuple[int, int]], image_size: int) -> float:
    """One generated file of the dataset's format and pixel size, decoded as the loaders do (median of 5)."""
    import io
    import tempfile

    import numpy as np
    from PIL import Image

    from labkit.data.core import decode_image
    rng = np.random.default_rng(0)
    w, h = kind[1]
    smooth = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    pixels = np.asarray(Image.fromarray(smooth).resize((w, h), Image.BILINEAR), dtype=np.int16)
    pixels = np.clip(pixels + rng.integers(-12, 13, pixels.shape), 0, 255).astype(np.uint8)  # a photo's grain
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, kind[0], quality=90)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "image.jpg"
        path.write_bytes(buffer.getvalue())
        times = []
        for _ in range(6):
            t = time.perf_counter()
            decode_image(path, image_size if image_size < max(w, h) else None)
            times.append(time.perf_counter() - t)
    return statistics.median(times[1:])
