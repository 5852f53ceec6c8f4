"""Stand-in backbones: offline replacements for ImageNet pre-training.

The demo profile must run anywhere, offline, and must not depend on what
happens to be in the torch hub cache. So labkit pre-trains ResNet-18/50 itself,
on a synthetic *source task* built like ImageNet-1k relative to STL-10: many
source classes (each prototype of ``labkit.data.synthetic`` in several
variants) map many-to-one onto the target classes, and others map to nothing
(they become ``other``). The result is cached under ``data/cache/standin/``
with what it was trained on, how long that took and its held-out source
accuracy, which every notebook's banner shows.

Two sizes: ``"standin"`` (the demo's: trained well enough that transfer works,
a minute or so for ResNet-18 on two CPU cores: 49-83 s measured) and ``"standin-smoke"`` (seconds,
for the smoke profile and the tests). Numbers obtained with either are never
ImageNet results.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from labkit.data.loaders import STL10_CLASSES
from labkit.data.synthetic import STL10_PROTOTYPES, render_many
from labkit.errors import MissingFileError
from labkit.paths import atomic_torch_save, cache_dir, code_fingerprint
from labkit.training.convs import torchvision_resnet
from labkit.training.sharing import run_lock

# Source task: prototypes 0..SOURCE_PROTOTYPES-1, each in VARIANTS variants (source class = proto * VARIANTS + v).
SOURCE_PROTOTYPES = 20
VARIANTS = 2
SOURCE_TASK = f"{SOURCE_PROTOTYPES * VARIANTS}-class synthetic source task"
# Pre-training recipes. The demo's reaches 82 % held-out top-1 for ResNet-18 (81.7-82.8 % measured; chance 2.5 %): a
# one-cycle schedule over enough images (150 per class, 6 epochs) is what took it there from the 16-19 %
# of 3 constant-rate epochs over 12 images per class.
SETTINGS = {
    "standin": {"version": 4, "per_class": 150, "image_size": 32, "epochs": 6, "lr": 3e-3, "batch_size": 128,
                "schedule": "one-cycle", "heldout_per_class": 25, "seed": 0},
    "standin-smoke": {"version": 4, "per_class": 12, "image_size": 16, "epochs": 4, "lr": 3e-3, "batch_size": 32,
                      "schedule": "one-cycle", "heldout_per_class": 4, "seed": 0},
}
KINDS = tuple(SETTINGS)


def source_classes() -> list[str]:
    return [f"proto{p:02d}-v{v}" for p in range(SOURCE_PROTOTYPES) for v in range(VARIANTS)]


def source_to_stl10() -> dict[int, int]:
    """Source class -> STL-10 class index, for the source classes that have one (the rest are 'other').

    Like ImageNet-1k, the stand-in's source task has deer-looking images but no class that maps to
    *deer*: its deer prototype's source classes are left unmapped, so deer can only be wrong or 'other'.
    """
    deer = STL10_CLASSES.index("deer")
    return {p * VARIANTS + v: STL10_PROTOTYPES.index(p)
            for p in STL10_PROTOTYPES if p < SOURCE_PROTOTYPES and STL10_PROTOTYPES.index(p) != deer
            for v in range(VARIANTS)}


def weights_path(arch: str, kind: str) -> Path:
    """Where the stand-in is cached; the key holds the code fingerprint too: a change to the renderer or the
    training loop retrains the stand-in."""
    key = f"{arch}-{kind}-" + "-".join(f"{k}{v}" for k, v in SETTINGS[kind].items()) + f"-{code_fingerprint()}"
    return cache_dir("standin") / f"{key}.pt"


def standin_weights(arch: str, kind: str = "standin", progress: bool = False, train: bool = True) -> dict:
    """``{"state_dict", "classes", "settings", "report"}`` of the stand-in ``arch``, trained once and cached
    (with ``train=False`` only read: a missing one is an error). ``report``: the source task, the pre-training
    time and the held-out source top-1."""
    if kind not in SETTINGS:
        raise ValueError(f"stand-in kind {kind!r} is not allowed; allowed: {', '.join(KINDS)}")
    s = SETTINGS[kind]
    path = weights_path(arch, kind)
    if not path.exists():
        if not train:
            raise MissingFileError(f"the {kind} stand-in for {arch} is not prepared yet (no {path}): call labkit."
                                   f"training.standin.prepare({kind!r}, {arch!r}) first (it pre-trains it once)")
        # Two kernels (or a report beside JupyterLab) that start together pre-train it once: the second waits
        # for the first's file instead of spending the same minutes again.
        with run_lock(path, doing=f"pre-training the same stand-in ({kind}, {arch})"):
            if not path.exists():
                state, report = _pretrain(arch, s, progress)
                blob = {"state_dict": state, "classes": source_classes(), "settings": json.dumps(s),
                        "report": json.dumps({"kind": kind, **report})}
                atomic_torch_save(path, blob)
                return blob
    return torch.load(path, map_location="cpu", weights_only=True)


def report(arch: str, kind: str = "standin") -> dict:
    """What the prepared stand-in was trained on and how well it learned it (never trains: see :func:`prepare`)."""
    return json.loads(standin_weights(arch, kind, train=False)["report"])


def prepare(weights: str, arch: str) -> dict | None:
    """Pre-train the stand-in that ``weights`` names (once; cached under data/cache/standin/), an explicit step of a
    notebook's setup; its report, or None for other weights (ImageNet's, a file, none)."""
    if weights not in SETTINGS:
        return None
    standin_weights(arch, weights)
    return report(arch, weights)


def _source_images(per_class: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(SOURCE_PROTOTYPES * VARIANTS).repeat_interleave(per_class)
    imgs = render_many((labels // VARIANTS).tolist(), size, seed=seed, variants=(labels % VARIANTS).tolist())
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous(), labels


def _pretrain(arch: str, s: dict, progress: bool) -> tuple[dict, dict]:
    from labkit.data.batches import Batches
    from labkit.training.losses import LossTerm
    from labkit.training.optim import make_optimizer
    from labkit.training.loop import fit, predict

    images, labels = _source_images(s["per_class"], s["image_size"], 10_000 + s["seed"])
    heldout, heldout_labels = _source_images(s["heldout_per_class"], s["image_size"], 20_000 + s["seed"])
    cpu = torch.device("cpu")
    # Pre-train on the CPU in float32 whatever the machine, so the cached weights are the same everywhere.
    with torch.random.fork_rng():
        torch.manual_seed(s["seed"])
        # zero-initialised last BN gamma per residual block: each block starts as the identity, which lets
        # a short schedule train the deep ResNet-50 too (Goyal et al., 2017)
        model = torchvision_resnet(arch, weights=None, num_classes=len(source_classes()), zero_init_residual=True)
        # channels-last: about 10 % faster for ResNet convolutions on the CPU too
        train = Batches(images, labels, s["batch_size"], augment=True, seed=s["seed"], channels_last=True)
        optimizer = make_optimizer("adam", model.parameters(), s["lr"])
        # one-cycle: warm up to lr, then anneal to almost zero; far better than a constant rate in few epochs
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=s["lr"], total_steps=s["epochs"] * len(train),
                                                       pct_start=0.25)
        ce = LossTerm("cross_entropy", lambda out, y: F.cross_entropy(out.logits, y))
        started = time.perf_counter()
        fit(model, train, epochs=s["epochs"], optimizer=optimizer, loss_terms=[ce], device=cpu, progress=progress,
            desc=f"stand-in {arch}", channels_last=True, on_update=lambda update, _model: schedule.step())
        seconds = time.perf_counter() - started
        held = predict(model, Batches(heldout, heldout_labels, 256, order="sequential", channels_last=True), cpu)
        model.to(memory_format=torch.contiguous_format)
    top1 = float((held["predictions"] == heldout_labels).float().mean())
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, {"source_task": SOURCE_TASK, "train_images": len(labels), "train_seconds": round(seconds, 1),
                   "heldout_images": len(heldout_labels), "heldout_top1": round(top1, 4)}
