"""``make bench-gpu`` (``python -m labkit bench --gpu``): the CUDA path against plain baselines, measured in
the same run (interleaved repeats, medians), printed as ratios; then the full profile's wall time on this
GPU, predicted from measured rates (``labkit.report.forecast``). A benchmark, not a test: without CUDA it says so
in one line. The tests run the same functions on the CPU at tiny sizes (``run(..., tiny=True)``).

Training: labkit's pipeline (the JPEGs decoded once into uint8 tensors kept on the GPU, ``Batches`` +
``fit``) against the script most users write (torchvision's ``ImageFolder`` opening every JPEG with PIL
every epoch in a ``DataLoader`` with 8 workers and pinned memory, and a minimal hand-written loop), on the
same generated photo-size JPEGs, with the same model, augmentation (random crop with reflection padding and
horizontal flip), bf16 autocast, channels-last and SGD with momentum. Only the pipeline and the loop differ.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
import torchvision

from labkit.report import forecast as walltime
from labkit.bench.fixtures import interleaved, photo_jpegs
from labkit.data import Batches, load_dogs_vs_cats
from labkit.data.batches import IMAGENET_MEAN, IMAGENET_STD
from labkit.device import choose_device
from labkit.models import SmallCNN
from labkit.training.optim import make_optimizer
from labkit.paths import cache_dir, project_root
from labkit.training.loop import fit

ANCHOR = ("NVIDIA DeepLearningExamples ResNet-50 v1.5 PyTorch: about 2,470 images/s training with AMP on one "
          "A100 80GB")
NO_CUDA = "no CUDA GPU is visible here (torch {torch}, built for CUDA {cuda}); nothing {what}."


@dataclass(frozen=True)
class Case:
    """One training comparison: a model at an input size and batch size."""

    name: str
    arch: str  # "resnet50", "resnet18" or "smallcnn"
    image_size: int
    batch_size: int
    num_classes: int


CASES = (Case("ResNet-50 (the anchor's setting)", "resnet50", 224, 256, 1000),
         Case("ResNet-18 (Q2's full setting)", "resnet18", 224, 64, 50),
         Case("SmallCNN (Q3's full setting)", "smallcnn", 128, 64, 2))


def tiny(case: Case) -> Case:
    """The same case at CPU-test size: the same model and code path, 16 px, batch <= 4."""
    return replace(case, image_size=16, batch_size=min(case.batch_size, 4))


@contextlib.contextmanager
def throwaway_root(prefix: str = "labkit-gpu-"):
    """A temporary project root for the data, caches and checkpoints a benchmark or the device check
    writes (and deletes between repeats), so a user's own ``data/`` is never touched. The checkout's
    ``notebooks/`` is linked in (its parameter files are read, never written); progress bars are off, so
    nothing comes between the printed figures."""
    notebooks = (project_root() / "notebooks").resolve()
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        if notebooks.is_dir():
            (tmp / "notebooks").symlink_to(notebooks, target_is_directory=True)
        with mock.patch.dict(os.environ, {"LABKIT_ROOT": str(tmp), "LABKIT_PLAIN_PROGRESS": "1"}):
            yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_model(arch: str, num_classes: int) -> torch.nn.Module:
    # torchvision's own ResNet on both sides of every comparison: only the pipeline and the loop differ (labkit's
    # window convolutions act on CPU 1x1 maps only, never at these sizes on a GPU)
    if arch == "smallcnn":
        return SmallCNN(num_classes=num_classes)
    return getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)


def synced(fn, device: torch.device):
    """``fn`` followed by a device synchronisation, so a timer around it sees the GPU's work finished."""
    def run():
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out
    return run


def jpeg_folders(root: Path, n_images: int) -> tuple[Path, Path]:
    """``n_images`` photo-size JPEGs of cats and dogs (``labkit.bench.fixtures``' generator) in the Kaggle layout
    labkit's loader reads, and the same files linked into torchvision's ``ImageFolder`` layout."""
    kaggle = root / "photos"
    if not (kaggle / "train").is_dir():
        photo_jpegs(kaggle, max(1, n_images // 2))
    by_class = root / "imagefolder"
    for f in sorted((kaggle / "train").glob("*.jpg")):
        link = by_class / f.name.split(".")[0] / f.name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f)
    return kaggle, by_class


def labkit_epoch(case: Case, images: torch.Tensor, labels: torch.Tensor, device: torch.device):
    """One training epoch through labkit: ``Batches`` (on CUDA the uint8 set is moved to the GPU here,
    once) and ``fit``."""
    torch.manual_seed(0)
    model = make_model(case.arch, case.num_classes).to(device)
    opt = make_optimizer("sgd", model.parameters(), 0.01, momentum=0.9)
    batches = Batches(images, labels, case.batch_size, augment=True, device=device, channels_last=True)

    def epoch():
        # bf16 on CUDA, as the notebooks' precision "auto" and the plain loop here train
        history = fit(model, batches, epochs=1, optimizer=opt, device=device, progress=False, channels_last=True,
                      precision="bf16" if device.type == "cuda" else "fp32")
        if history.status != "ok":
            raise RuntimeError(f"labkit's {case.arch} run diverged in the benchmark: {history.message}")
    return synced(epoch, device)


def plain_epoch(case: Case, folder: Path, device: torch.device, workers: int):
    """One training epoch of the usual script: ``ImageFolder`` + PIL transforms + ``DataLoader`` and a
    minimal hand-written loop. Returns the epoch function and the loader (to stop its workers)."""
    from torchvision import transforms as T
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    model = make_model(case.arch, case.num_classes).to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    s = case.image_size
    transform = T.Compose([T.Resize((s, s)), T.RandomCrop(s, padding=max(1, round(s * 0.125)), padding_mode="reflect"),
                           T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    loader = torch.utils.data.DataLoader(torchvision.datasets.ImageFolder(str(folder), transform=transform),
                                         batch_size=case.batch_size, shuffle=True, num_workers=workers,
                                         pin_memory=cuda, persistent_workers=workers > 0)

    def epoch():
        model.train()
        for x, y in loader:
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return synced(epoch, device), loader


def compare_training(case: Case, folders: tuple[Path, Path], device: torch.device, repeats: int,
                     workers: int = 8) -> dict:
    """Images per second of one training epoch, labkit against the usual script, interleaved, medians.
    labkit's one-time decode of the JPEGs is timed separately (a real decode, never a cache hit: two cases at
    the same size would otherwise share the decoded set)."""
    kaggle, by_class = folders
    t = time.perf_counter()
    data = load_dogs_vs_cats(kaggle, image_size=case.image_size, use_cache=False)
    decode_s = time.perf_counter() - t
    ours = labkit_epoch(case, data.images, data.labels, device)
    plain, loader = plain_epoch(case, by_class, device, workers)
    try:
        ours(), plain()  # warm-up: cuDNN autotuning, first allocations, worker start-up
        t = interleaved({"labkit": ours, "plain": plain}, repeats)
    finally:
        if loader._iterator is not None:  # stop the persistent workers before the next comparison
            loader._iterator._shutdown_workers()
    n = len(data)
    return {"case": case.name, "images": n, "labkit_img_per_s": n / t["labkit"], "plain_img_per_s": n / t["plain"],
            "ratio": t["plain"] / t["labkit"], "decode_s": decode_s}


def compare_feature_pass(images: torch.Tensor, device: torch.device, repeats: int, arch: str = "resnet50",
                         image_size: int = 224, batch_size: int = 128) -> dict:
    """Q1's feature pass (``q1_transfer.extract``: stored-size uint8 images upsampled on the device, pooled
    features and logits in one fp32 pass, written to its cache) against a minimal hand-written fp32 inference
    loop over the same tensors. Its cache is emptied before every repeat, so the pass itself is timed."""
    from labkit.questions import q1_transfer as q1
    torch.manual_seed(0)
    model = make_model(arch, 1000)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def ours():
        for f in cache_dir("features").glob("*.pt"):
            f.unlink()
        q1.extract(model, images, image_size=image_size, device=device, weights="none", arch=arch,
                   batch_size=batch_size)

    def plain():
        pooled, logits = [], []
        hook = model.avgpool.register_forward_hook(lambda m, i, o: pooled.append(o.flatten(1).float().cpu()))
        model.to(device, memory_format=torch.channels_last).eval()
        try:
            with torch.no_grad():  # fp32, as q1.extract: the zero-shot rule hinges on near-ties among logits
                for x in images.split(batch_size):
                    x = F.interpolate(x.to(device).float() / 255, size=(image_size, image_size), mode="bilinear",
                                      antialias=True, align_corners=False)
                    x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
                    logits.append(model(x).float().cpu())
        finally:
            hook.remove()

    ours, plain = synced(ours, device), synced(plain, device)
    ours(), plain()
    t = interleaved({"labkit": ours, "plain": plain}, repeats)
    n = len(images)
    return {"images": n, "labkit_img_per_s": n / t["labkit"], "plain_img_per_s": n / t["plain"],
            "ratio": t["plain"] / t["labkit"]}


def device_line(device: torch.device) -> str:
    if device.type != "cuda":
        return f"device: {device} (torch {torch.__version__}): a CPU run, sizes shrunk; no GPU figures"
    p = torch.cuda.get_device_properties(device)
    return (f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}; torch "
            f"{torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")


def run(device: torch.device, n_images: int = 2560, repeats: int = 5, workers: int = 8, tiny_sizes: bool = False,
        steps: int = 20, rate_repeats: int = 3) -> dict:
    """Every measurement, printed as it comes; returns the figures. Call it under :func:`throwaway_root`.
    ``tiny_sizes`` shrinks every model's input and batch (the tests, on the CPU)."""
    results = {"device": device_line(device), "training": []}
    print(results["device"], flush=True)
    folders = jpeg_folders(project_root() / "bench-gpu", n_images)
    for case in CASES:
        c = tiny(case) if tiny_sizes else case
        r = compare_training(c, folders, device, repeats, workers)
        results["training"].append(r)
        print(f"{c.name} training at {c.image_size} px, batch {c.batch_size}, bf16 autocast + channels-last, "
              f"{r['images']} JPEGs: labkit Batches + fit {r['labkit_img_per_s']:,.0f} img/s, ImageFolder + PIL + "
              f"DataLoader({workers} workers) + hand-written loop {r['plain_img_per_s']:,.0f} img/s -> "
              f"{r['ratio']:.2f}x (labkit decodes the JPEGs once, first time: {r['decode_s']:.1f} s)", flush=True)
        if case.arch == "resnet50":
            print(f"  anchor: {ANCHOR}; here {r['labkit_img_per_s']:,.0f} img/s (labkit), "
                  f"{r['plain_img_per_s']:,.0f} img/s (plain)", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    size = 16 if tiny_sizes else 224
    stl = load_dogs_vs_cats(folders[0], image_size=12 if tiny_sizes else 96).images  # STL-10's stored 96 px
    r = results["feature_pass"] = compare_feature_pass(stl, device, repeats, image_size=size)
    print(f"Q1 feature pass (ResNet-50, {stl.shape[-1]} -> {size} px, batch 128, fp32), {r['images']} images: "
          f"labkit q1_transfer.extract {r['labkit_img_per_s']:,.0f} img/s, hand-written inference loop "
          f"{r['plain_img_per_s']:,.0f} img/s -> {r['ratio']:.2f}x", flush=True)
    passes = walltime.full_profile_passes()
    rates = walltime.measure_rates(passes, device, tiny=tiny_sizes, steps=steps, repeats=rate_repeats,
                                   min_images=4 if tiny_sizes else 256)
    results["walltime"] = walltime.predict_seconds(passes, rates)
    print("full profile, predicted wall time per notebook on this device (the full datasets' sizes, the rates "
          "measured here through fit and predict):", flush=True)
    for line in walltime.describe(passes, rates):
        print(line, flush=True)
    return results


def main(repeats: int = 5, n_images: int = 2560, workers: int = 8) -> dict | None:
    """``bench --gpu``: on CUDA, every measurement under a throwaway project root; else one line."""
    if not torch.cuda.is_available():
        print("bench --gpu: " + NO_CUDA.format(torch=torch.__version__, cuda=torch.version.cuda, what="measured"))
        return None
    device = choose_device("cuda")  # cuDNN autotuning on, as in the notebooks
    with throwaway_root("labkit-bench-gpu-"):
        return run(device, n_images, repeats, workers)
