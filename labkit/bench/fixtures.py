"""What the benchmarks share: timing by interleaved rounds (medians), and generated photo-size JPEGs of the
synthetic cats and dogs. Kept apart so that the GPU benchmark does not import the CPU one."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from labkit.data.synthetic import DOGS_VS_CATS_PROTOTYPES, render_many


def interleaved(fns: dict, repeats: int) -> dict:
    """Run each function once per round, round after round; return each one's median seconds."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def photo_jpegs(folder: Path, per_class: int, seed: int = 0) -> Path:
    """Photo-size JPEGs (300-500 px wide) of the synthetic cats and dogs, in the Kaggle layout."""
    from PIL import Image
    train = folder / "train"
    train.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for label, name in enumerate(("cat", "dog")):
        imgs = render_many([DOGS_VS_CATS_PROTOTYPES[label]] * per_class, 160, seed + label, random_hue=True,
                           distractor=True, noise=28.0, rotation=0.4)
        for i, arr in enumerate(imgs):
            w, h = int(rng.integers(300, 500)), int(rng.integers(240, 400))
            Image.fromarray(arr).resize((w, h), Image.BICUBIC).save(train / f"{name}.{i}.jpg", quality=90)
    return folder
