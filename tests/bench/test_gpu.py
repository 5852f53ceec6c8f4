"""The GPU benchmark's functions on the CPU at tiny sizes (the same code path, shrunk), its JPEG layouts,
its throwaway root, and the one line it prints without CUDA."""
import os
import subprocess
import sys

import pytest
import torch
import torchvision

from conftest import ROOT
from labkit.bench import gpu as bench_gpu
from labkit.data import load_dogs_vs_cats

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine it costs a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def env_without_cuda(root) -> dict:
    """The environment of a ``python -m labkit`` subprocess that sees no GPU, run from this checkout."""
    env = {**os.environ, "LABKIT_ROOT": str(root), "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


def test_every_measurement_runs_at_tiny_size(isolated_root, capsys):
    with bench_gpu.throwaway_root():
        results = bench_gpu.run(CPU, n_images=8, repeats=1, workers=1, tiny_sizes=True, steps=1, rate_repeats=1)
    out = capsys.readouterr().out
    assert [r["case"] for r in results["training"]] == [c.name for c in bench_gpu.CASES]
    for r in results["training"] + [results["feature_pass"]]:
        assert r["images"] == 8 and r["labkit_img_per_s"] > 0 and r["plain_img_per_s"] > 0 and r["ratio"] > 0
    assert set(results["walltime"]) == {"q1", "q2", "q3"} and all(s > 0 for s in results["walltime"].values())
    assert bench_gpu.ANCHOR in out and "DataLoader(1 workers)" in out and "Q1 feature pass" in out
    assert "  in all: " in out and out.startswith("device: cpu")


def test_jpeg_folders_hold_the_same_files_in_both_layouts(isolated_root):
    kaggle, by_class = bench_gpu.jpeg_folders(isolated_root / "bench", 6)
    folder = torchvision.datasets.ImageFolder(str(by_class))
    ours = load_dogs_vs_cats(kaggle, image_size=16)
    assert folder.classes == ours.classes == ["cat", "dog"]
    assert len(folder) == len(ours) == 6 and sorted(y for _, y in folder.samples) == sorted(ours.labels.tolist())
    assert bench_gpu.jpeg_folders(isolated_root / "bench", 6) == (kaggle, by_class)  # reused, not written again


def test_cases_are_the_issue_settings():
    r50, r18, cnn = bench_gpu.CASES
    assert (r50.arch, r50.image_size, r50.batch_size) == ("resnet50", 224, 256)
    assert (r18.arch, r18.image_size) == ("resnet18", 224) and (cnn.arch, cnn.image_size) == ("smallcnn", 128)
    assert bench_gpu.tiny(r50).arch == "resnet50" and bench_gpu.tiny(r50).batch_size <= 4


def test_throwaway_root_is_removed_even_after_an_error(isolated_root):
    with pytest.raises(RuntimeError), bench_gpu.throwaway_root() as tmp:
        assert os.environ["LABKIT_ROOT"] == str(tmp) and os.environ["LABKIT_PLAIN_PROGRESS"] == "1"
        raise RuntimeError("boom")
    assert not tmp.exists() and os.environ["LABKIT_ROOT"] == str(isolated_root)


def test_without_cuda_it_says_so_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "labkit", "bench", "--gpu"], env=env_without_cuda(tmp_path),
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    assert done.stdout.startswith("bench --gpu: no CUDA GPU is visible here") and done.stdout.count("\n") == 1
