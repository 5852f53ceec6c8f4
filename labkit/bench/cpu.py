"""``make bench``: labkit's data pipeline, training loop and sweep engine against plain baselines,
measured in the same run (interleaved repeats, medians), printed as ratios. A benchmark, not a test."""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from labkit.bench.fixtures import interleaved, photo_jpegs
from labkit.bench.share import bench_shared_cores, child_env, describe as describe_shared_cores
from labkit.data import Batches, load_dogs_vs_cats, load_stl10
from labkit.data.batches import IMAGENET_MEAN, IMAGENET_STD
from labkit.data.synthetic import render_many, write_stl10
from labkit.models import SmallCNN
from labkit.training.optim import make_optimizer
from labkit.training.loop import fit


def bench_stl10_pipeline(root: Path, repeats: int, batch_size: int = 64) -> dict:
    """One augmented, normalised epoch of STL-10 train batches: labkit vs torchvision's STL10 + DataLoader."""
    import torchvision
    from torchvision import transforms as T

    class STL10NoCheck(torchvision.datasets.STL10):
        def _check_integrity(self):  # the synthetic files have their own md5; the format is the real one
            return True

    transform = T.Compose([T.RandomCrop(96, padding=12, padding_mode="reflect"), T.RandomHorizontalFlip(),
                           T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    baseline_set = STL10NoCheck(str(root), split="train", transform=transform)
    loader = torch.utils.data.DataLoader(baseline_set, batch_size=batch_size, shuffle=True, num_workers=2,
                                         persistent_workers=True)
    data = load_stl10(root, "train")
    ours = Batches(data.images, data.labels, batch_size, augment=True)

    def run_ours():
        ours.epoch += 1
        for x, y in ours:
            pass

    def run_baseline():
        for x, y in loader:
            pass

    run_ours(), run_baseline()  # warm-up: worker start-up and first-touch costs
    t = interleaved({"labkit": run_ours, "torchvision": run_baseline}, repeats)
    if loader._iterator is not None:  # stop the persistent workers: they must not disturb the next benchmark
        loader._iterator._shutdown_workers()
    n = len(data)
    return {"images": n, "labkit_img_per_s": n / t["labkit"], "baseline_img_per_s": n / t["torchvision"],
            "ratio": t["torchvision"] / t["labkit"]}


def bench_fit_overhead(repeats: int, n: int = 4096, size: int = 32, batch_size: int = 64) -> dict:
    """Seconds per epoch: labkit's ``fit`` against a minimal hand-written loop, same model and data."""
    labels = torch.arange(n) % 2
    images = torch.from_numpy(render_many((labels * 4 + 1).tolist(), size, seed=3)).permute(0, 3, 1, 2).contiguous()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255

    def run_ours():
        torch.manual_seed(0)
        model = SmallCNN()
        fit(model, Batches(images, labels, batch_size), epochs=1, optimizer=make_optimizer("adam", model.parameters(), 1e-3),
            device=torch.device("cpu"), progress=False)

    def run_plain():
        torch.manual_seed(0)
        model = SmallCNN()
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        model.train()
        for idx in torch.randperm(n).split(batch_size):
            x = (images[idx].float() - mean) / std
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    run_ours(), run_plain()
    t = interleaved({"labkit": run_ours, "plain": run_plain}, repeats)
    return {"labkit_s_per_epoch": t["labkit"], "plain_s_per_epoch": t["plain"], "ratio": t["labkit"] / t["plain"]}


def bench_cache(root: Path, repeats: int, n_photos: int = 400) -> dict:
    """Dogs vs Cats from photo-size JPEGs: first (cold) load against a cached load."""
    from PIL import Image
    folder = root / "photos" / "train"
    folder.mkdir(parents=True, exist_ok=True)
    base = render_many([5, 1] * 4, 128, seed=5)
    rng = np.random.default_rng(0)
    for i in range(n_photos):
        w, h = int(rng.integers(300, 500)), int(rng.integers(250, 400))
        Image.fromarray(base[i % 8]).resize((w, h)).save(folder / f"{('cat', 'dog')[i % 2]}.{i}.jpg", quality=90)

    def cold():
        from labkit.paths import cache_dir
        for f in cache_dir("datasets").glob("dogs_vs_cats-*.pt"):
            f.unlink()
        load_dogs_vs_cats(folder.parent, image_size=64)

    def cached():
        load_dogs_vs_cats(folder.parent, image_size=64)

    cold()
    t = interleaved({"cold": cold, "cached": cached}, repeats)
    return {"files": n_photos, "cold_s": t["cold"], "cached_s": t["cached"], "ratio": t["cold"] / t["cached"]}


class _PlainPhotos(torch.utils.data.Dataset):
    """The plain script's Dataset: opens, decodes and resizes each JPEG with PIL every time it is read."""

    def __init__(self, files, labels, indices, image_size: int):
        import torchvision.transforms as T
        self.files, self.labels, self.indices = files, labels, indices
        self.transform = T.Compose([T.Resize((image_size, image_size)), T.ToTensor(),
                                    T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        from PIL import Image
        j = self.indices[i]
        return self.transform(Image.open(self.files[j]).convert("RGB")), self.labels[j]


def q3_side(side: str, folder: str, image_size: int, epochs: int, batch_size: int) -> dict:
    """One timed side of :func:`bench_q3_training`, run in a fresh process: "labkit" (the notebook's
    ``load_data`` and ``train_and_test``, cold: no dataset cache, no checkpoint) or "plain" (the script)."""
    from labkit.data.loaders import dogs_vs_cats_files
    from labkit.questions import q3_optimizers as q3
    from labkit.questions.registry import resolved_parameters
    from labkit.paths import cache_dir
    from labkit.runs import Run

    P = resolved_parameters("q3", data_source="real", data_dir=folder, image_size=image_size, test_fraction=0.3,
                            val_fraction=0.15, seed=0)

    def splits():
        return q3.load_data(P)

    # Untimed warm-up of what both sides pay alike: the first optimizer imports torch._dynamo (seconds).
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    if side == "labkit":
        for f in cache_dir("datasets").glob("dogs_vs_cats-*.pt"):
            f.unlink()  # cold: decoding the JPEGs is part of labkit's time
        for f in cache_dir("checkpoints").glob("q3-bench_adam-*.pt"):
            f.unlink()  # never resume: every repeat trains from scratch
        run = Run("bench_adam", {**q3.RUN_DEFAULTS, "batch_size": batch_size, "lr": 1e-3, "epochs": epochs,
                                 "gradient_flow_every": 5}, 0)
        t = time.perf_counter()
        accuracy = q3.train_and_test(run, splits(), torch.device("cpu")).accuracy
        return {"seconds": time.perf_counter() - t, "accuracy": accuracy}
    s = splits()  # the same split (the plain script gets it for free, untimed), by file
    files, labels = dogs_vs_cats_files(folder)
    position = {Path(f).relative_to(folder).as_posix(): i for i, f in enumerate(files)}
    train_files, test_files = ([position[i] for i in part.ids] for part in (s.train, s.test))
    t = time.perf_counter()
    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loader = torch.utils.data.DataLoader(_PlainPhotos(files, labels, train_files, image_size), batch_size=batch_size,
                                         shuffle=True, num_workers=2)
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    test = torch.utils.data.DataLoader(_PlainPhotos(files, labels, test_files, image_size), batch_size=256,
                                       num_workers=2)
    with torch.no_grad():
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in test)
    return {"seconds": time.perf_counter() - t, "accuracy": correct / len(s.test)}


def _in_fresh_process(function: str, *args) -> dict:
    """``labkit.bench.cpu.<function>(*args)`` in a new Python process (same interpreter, environment and
    LABKIT_ROOT); its JSON result. What one side sets for its whole process (labkit's fit tunes the C
    allocator, thread pools warm up) cannot then help or hinder the other, as for two separate programs."""
    import json
    import subprocess
    import sys
    code = (f"import json, sys; from labkit.bench import cpu; "
            f"print(json.dumps(cpu.{function}(*json.loads(sys.argv[1]))))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True,
                          env=child_env(), timeout=1800)
    if done.returncode:
        raise RuntimeError(f"bench.{function}{args} failed in its process:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_q3_training(root: Path, per_class: int = 300, image_size: int = 64, epochs: int = 8,
                      batch_size: int = 64, rounds: int = 2) -> dict:
    """The Q3 Adam run on photo-size JPEGs: the notebook's own pipeline (``q3_optimizers.load_data`` then
    ``train_and_test``: decode once, in-memory batches, ``fit`` with validation, gradient flow and
    checkpoints) against the plain script most users write (a Dataset that opens and resizes each JPEG
    with PIL every epoch, in a 2-worker DataLoader, and a hand-written loop). Same files, splits, model
    and epochs; both timed end to end from the JPEG files (labkit's cold decode included), each in a
    fresh process (imports untimed), then both tested on the same held-out images."""
    from labkit.data.loaders import dogs_vs_cats_files
    folder = root / "q3photos"
    if not folder.exists():
        photo_jpegs(folder, per_class)
    times, accs = {"labkit": [], "plain": []}, {}
    for _ in range(rounds):  # interleaved; each is a whole training run, so two rounds are enough for a median
        for side in ("labkit", "plain"):
            r = _in_fresh_process("q3_side", side, str(folder), image_size, epochs, batch_size)
            times[side].append(r["seconds"])
            accs[side] = r["accuracy"]
    t = {k: statistics.median(v) for k, v in times.items()}
    return {"photos": len(dogs_vs_cats_files(folder)[0]), "epochs": epochs, "labkit_s": t["labkit"],
            "plain_s": t["plain"], "ratio": t["plain"] / t["labkit"], "labkit_accuracy": accs["labkit"],
            "plain_accuracy": accs["plain"]}


def bench_sweep(root: Path, notebooks: Path, pairs: int = 4) -> dict:
    """Eight Q3 smoke points (2 learning rates x 4 training seeds): papermill called directly, one point
    after another, against ``sweep --jobs 2`` on a local Dask cluster (its start-up included); and the
    per-point cost of the Dask path (submit, papermill on a worker, files back and written by the client)
    against papermill called directly, interleaved on the same points with a one-worker cluster."""
    import contextlib
    import io

    from labkit.questions import registry
    from labkit.sweep import engine as sw
    from labkit.sweep.cluster import client_for
    from labkit.report.execute import run_notebook
    from labkit.sweep.point import run_point

    shutil.copytree(notebooks, root / "notebooks", dirs_exist_ok=True)  # root is this run's LABKIT_ROOT
    grid, seeds = {"lr": [1e-3, 3e-3]}, 4
    points, source = sw.plan("q3", grid, "smoke", seeds)
    nb = registry.notebooks_dir() / registry.NOTEBOOKS["q3"]

    def direct(p, out: Path) -> float:
        out.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        # the same kernels as a sweep point's, so only the engine differs
        run_notebook(nb, out / nb.name, {**p.params, "output_dir": str(out)}, nb.parent)
        return time.perf_counter() - t

    direct(points[0], root / "sweep-warm-up")  # the synthetic data and its cache are made once, untimed
    sequential, dask_point = [], []
    with contextlib.redirect_stdout(io.StringIO()):  # the sweep's own lines would bury the figures
        t = time.perf_counter()
        with client_for(None, 1, []) as client:
            start = time.perf_counter() - t
            for i, p in enumerate(points):
                sequential.append(direct(p, root / "sweep-direct" / p.name))
                if i < pairs:
                    t = time.perf_counter()
                    outcome = client.submit(run_point, nb.name, source, p.params, pure=False).result()
                    sw.save_point(root / "sweep-dask" / p.name, p, outcome, "q3", source)
                    dask_point.append(time.perf_counter() - t)
                    if outcome["error"]:
                        raise RuntimeError(f"the Dask point {p.name} failed: {outcome['error']}")
        t = time.perf_counter()
        sw.sweep("q3", grid, "smoke", seeds, jobs=2, out_root=root / "sweep-jobs2")
        parallel = time.perf_counter() - t
    direct_s, dask_s = statistics.median(sequential[:pairs]), statistics.median(dask_point)
    return {"points": len(points), "sequential_s": sum(sequential), "jobs2_s": parallel,
            "ratio": sum(sequential) / parallel, "direct_point_s": direct_s, "dask_point_s": dask_s,
            "overhead": dask_s / direct_s - 1, "cluster_start_s": start}


def bench_standin(archs=("resnet18", "resnet50"), kind: str = "standin") -> dict:
    """The demo's stand-in pre-training, cold (the throwaway root has no cache): time and held-out top-1."""
    from labkit.training.standin import prepare
    return {arch: prepare(kind, arch) for arch in archs}


def main(repeats: int = 7) -> dict:
    os.environ["LABKIT_PLAIN_PROGRESS"] = "1"  # no progress bars between the figures
    from labkit.paths import project_root
    notebooks = project_root() / "notebooks"  # the checkout's, copied into the throwaway root below
    tmp = Path(tempfile.mkdtemp(prefix="labkit-bench-"))
    # The cold-load measurements delete dataset caches and checkpoints: give them a throwaway
    # project root, so the user's own data/cache is never touched.
    if notebooks.is_dir():  # the questions read their notebooks' defaults there
        shutil.copytree(notebooks, tmp / "notebooks")
    previous_root = os.environ.get("LABKIT_ROOT")
    os.environ["LABKIT_ROOT"] = str(tmp)
    try:
        results = {}
        r = results["fit_overhead"] = bench_fit_overhead(repeats)
        print(f"fit vs hand-written loop (SmallCNN, 4096 images 32x32, batch 64): labkit "
              f"{r['labkit_s_per_epoch']:.3f} s/epoch, plain {r['plain_s_per_epoch']:.3f} s/epoch -> "
              f"{r['ratio']:.3f}x the time (target <= 1.03x)", flush=True)
        stl_root = write_stl10(tmp / "stl10", train_per_class=200, test_per_class=1)
        r = results["stl10_pipeline"] = bench_stl10_pipeline(stl_root, repeats)
        print(f"STL-10 batches (augmented, normalised, batch 64, {r['images']} images): "
              f"labkit {r['labkit_img_per_s']:.0f} img/s, torchvision STL10+PIL+DataLoader(2 workers) "
              f"{r['baseline_img_per_s']:.0f} img/s -> {r['ratio']:.1f}x (target >= 5x)", flush=True)
        r = results["cache"] = bench_cache(tmp, repeats)
        print(f"dataset load ({r['files']} photo-size JPEGs -> 64x64): cold {r['cold_s']:.2f} s, cached "
              f"{r['cached_s']:.3f} s -> {r['ratio']:.0f}x faster (target >= 5x)", flush=True)
        for size in (32, 64):  # the demo profile's input size, and a larger one where the CNN's compute weighs more
            r = results[f"q3_training_{size}px"] = bench_q3_training(tmp, image_size=size)
            print(f"Q3 Adam run from {r['photos']} photo-size JPEGs ({r['epochs']} epochs, {size}x{size}, SmallCNN): "
                  f"labkit {r['labkit_s']:.1f} s (test accuracy {100 * r['labkit_accuracy']:.1f} %), plain PIL "
                  f"Dataset + DataLoader(2 workers) {r['plain_s']:.1f} s ({100 * r['plain_accuracy']:.1f} %) -> "
                  f"{r['ratio']:.1f}x faster (target >= 3x)", flush=True)
        for arch, r in bench_standin().items():
            results[f"standin_{arch}"] = r
            print(f"stand-in {arch} pre-training ({r['source_task']}, {r['train_images']:,} images): "
                  f"{r['train_seconds']:.0f} s, held-out top-1 {100 * r['heldout_top1']:.1f} % (goal >= 80 %)",
                  flush=True)
        r = results["sweep"] = bench_sweep(tmp, notebooks)
        print(f"sweep of {r['points']} Q3 smoke points: papermill one after another {r['sequential_s']:.0f} s, "
              f"sweep --jobs 2 on Dask {r['jobs2_s']:.0f} s -> {r['ratio']:.2f}x faster; per point, Dask "
              f"{r['dask_point_s']:.1f} s vs papermill directly {r['direct_point_s']:.1f} s -> "
              f"{100 * r['overhead']:+.1f} % (goal <= +10 %), plus {r['cluster_start_s']:.1f} s to start the "
              f"cluster once per sweep", flush=True)
        r = results["shared_cores"] = bench_shared_cores(tmp, min(repeats, 3))  # whole runs: 3 rounds are enough
        print(describe_shared_cores(r), flush=True)
        return results
    finally:
        if previous_root is None:
            os.environ.pop("LABKIT_ROOT", None)
        else:
            os.environ["LABKIT_ROOT"] = previous_root
        shutil.rmtree(tmp, ignore_errors=True)
