"""The benchmarks: each comparison at a tiny size (the timings mean nothing here, the structure does),
the interleaved medians exactly, and what ``make bench`` prints."""
import multiprocessing
import os
from pathlib import Path

import pytest

from labkit import cli
from labkit.bench import cpu as bench
from labkit.data.synthetic import write_stl10


def test_fit_overhead(isolated_root):
    r = bench.bench_fit_overhead(1, n=64, size=16, batch_size=32)
    assert set(r) == {"labkit_s_per_epoch", "plain_s_per_epoch", "ratio"}
    assert r["labkit_s_per_epoch"] > 0 and r["plain_s_per_epoch"] > 0
    assert r["ratio"] == r["labkit_s_per_epoch"] / r["plain_s_per_epoch"]  # labkit's time over the plain loop's


def test_stl10_pipeline(isolated_root):
    root = write_stl10(isolated_root / "stl10", train_per_class=2, test_per_class=1)
    children = set(multiprocessing.active_children())
    r = bench.bench_stl10_pipeline(root, 1, batch_size=8)
    assert set(r) == {"images", "labkit_img_per_s", "baseline_img_per_s", "ratio"}
    assert r["images"] == 20  # 10 classes x 2
    assert r["ratio"] == pytest.approx(r["labkit_img_per_s"] / r["baseline_img_per_s"])  # > 1: labkit faster
    assert set(multiprocessing.active_children()) <= children  # the persistent DataLoader workers were stopped


def test_cold_against_cached_load(isolated_root):
    r = bench.bench_cache(isolated_root, 1, n_photos=4)
    assert set(r) == {"files", "cold_s", "cached_s", "ratio"} and r["files"] == 4
    assert r["ratio"] == r["cold_s"] / r["cached_s"]
    assert len(list((isolated_root / "photos" / "train").glob("*.jpg"))) == 4
    assert len(list((isolated_root / "data" / "cache" / "datasets").glob("dogs_vs_cats-*.pt"))) == 1


def test_q3_training(isolated_root):
    children = set(multiprocessing.active_children())
    r = bench.bench_q3_training(isolated_root, per_class=8, image_size=16, epochs=1, batch_size=8, rounds=1)
    assert set(r) == {"photos", "epochs", "labkit_s", "plain_s", "ratio", "labkit_accuracy", "plain_accuracy"}
    assert r["photos"] == 16 and r["epochs"] == 1
    assert r["ratio"] == r["plain_s"] / r["labkit_s"]  # > 1: labkit faster
    n_test = 5  # ceil(0.3 x 16): both are tested on the same held-out images
    for acc in (r["labkit_accuracy"], r["plain_accuracy"]):
        assert 0 <= acc <= 1 and acc * n_test == pytest.approx(round(acc * n_test))
    assert set(multiprocessing.active_children()) <= children


FAKE = {
    "fit_overhead": {"labkit_s_per_epoch": 2.071, "plain_s_per_epoch": 2.113, "ratio": 0.98},
    "stl10_pipeline": {"images": 2000, "labkit_img_per_s": 12690.4, "baseline_img_per_s": 1651.2, "ratio": 7.69},
    "cache": {"files": 400, "cold_s": 0.321, "cached_s": 0.0089, "ratio": 36.1},
    "standin": {arch: {"source_task": "40-class synthetic source task", "train_images": 6000, "train_seconds": s,
                       "heldout_top1": top1} for arch, s, top1 in (("resnet18", 66, 0.836), ("resnet50", 240, 0.81))},
    "sweep": {"points": 8, "sequential_s": 120.0, "jobs2_s": 80.0, "ratio": 1.5, "dask_point_s": 15.5,
              "direct_point_s": 15.0, "overhead": 0.0333, "cluster_start_s": 2.0},
    "shared_cores": {"cores": 2, "epochs": 5, "sequential_s": 6.0, "shared_s": 5.5, "unshared_s": 15.0,
                     "shared_threads": [1, 1], "unshared_threads": [2, 2], "shared_ratio": 1.09, "unshared_ratio": 0.4},
    "q3": {"photos": 600, "epochs": 8, "labkit_s": 1.62, "plain_s": 9.14, "ratio": 5.64, "labkit_accuracy": 0.806,
           "plain_accuracy": 0.8},
}


def test_main_prints_every_ratio_on_a_throwaway_root(tmp_path, monkeypatch, capsys):
    """``make bench`` as a whole, with each comparison replaced by a recorded result: what it prints, that
    every comparison runs under a throwaway LABKIT_ROOT, and that the user's root comes back after."""
    monkeypatch.setenv("LABKIT_ROOT", str(tmp_path / "users-root"))
    monkeypatch.setenv("LABKIT_PLAIN_PROGRESS", "1")  # main sets it: restored after the test
    seen = []

    def fake(name, result):
        def fn(*args, **kwargs):
            seen.append((name, os.environ["LABKIT_ROOT"], args, kwargs))
            return dict(result)
        return fn

    monkeypatch.setattr(bench, "bench_fit_overhead", fake("fit", FAKE["fit_overhead"]))
    monkeypatch.setattr(bench, "write_stl10", lambda root, **kw: seen.append(("write", str(root), (), kw)) or root)
    monkeypatch.setattr(bench, "bench_stl10_pipeline", fake("stl10", FAKE["stl10_pipeline"]))
    monkeypatch.setattr(bench, "bench_cache", fake("cache", FAKE["cache"]))
    monkeypatch.setattr(bench, "bench_q3_training", fake("q3", FAKE["q3"]))
    monkeypatch.setattr(bench, "bench_sweep", fake("sweep", FAKE["sweep"]))
    monkeypatch.setattr(bench, "bench_standin", fake("standin", FAKE["standin"]))
    monkeypatch.setattr(bench, "bench_shared_cores", fake("shared", FAKE["shared_cores"]))
    results = bench.main(repeats=3)

    assert list(results) == ["fit_overhead", "stl10_pipeline", "cache", "q3_training_32px", "q3_training_64px",
                             "standin_resnet18", "standin_resnet50", "sweep", "shared_cores"]
    throwaway = Path(seen[0][1])
    assert throwaway != tmp_path / "users-root" and throwaway.name.startswith("labkit-bench-")
    assert [(name, root == str(throwaway)) for name, root, _, _ in seen] == [
        ("fit", True), ("write", False), ("stl10", True), ("cache", True), ("q3", True), ("q3", True),
        ("standin", True), ("sweep", True), ("shared", True)]
    assert seen[0][2] == (3,) and seen[2][2] == (throwaway / "stl10", 3) and seen[3][2] == (throwaway, 3)
    assert seen[1][1] == str(throwaway / "stl10") and seen[1][3] == {"train_per_class": 200, "test_per_class": 1}
    assert [s[3] for s in seen[4:6]] == [{"image_size": 32}, {"image_size": 64}]
    assert seen[8][2] == (throwaway, 3)  # shared cores, after the stand-in and the sweep
    assert os.environ["LABKIT_ROOT"] == str(tmp_path / "users-root") and not throwaway.exists()
    assert capsys.readouterr().out.splitlines() == [
        "fit vs hand-written loop (SmallCNN, 4096 images 32x32, batch 64): labkit 2.071 s/epoch, plain 2.113 "
        "s/epoch -> 0.980x the time (target <= 1.03x)",
        "STL-10 batches (augmented, normalised, batch 64, 2000 images): labkit 12690 img/s, torchvision "
        "STL10+PIL+DataLoader(2 workers) 1651 img/s -> 7.7x (target >= 5x)",
        "dataset load (400 photo-size JPEGs -> 64x64): cold 0.32 s, cached 0.009 s -> 36x faster (target >= 5x)",
        "Q3 Adam run from 600 photo-size JPEGs (8 epochs, 32x32, SmallCNN): labkit 1.6 s (test accuracy 80.6 %), "
        "plain PIL Dataset + DataLoader(2 workers) 9.1 s (80.0 %) -> 5.6x faster (target >= 3x)",
        "Q3 Adam run from 600 photo-size JPEGs (8 epochs, 64x64, SmallCNN): labkit 1.6 s (test accuracy 80.6 %), "
        "plain PIL Dataset + DataLoader(2 workers) 9.1 s (80.0 %) -> 5.6x faster (target >= 3x)",
        "stand-in resnet18 pre-training (40-class synthetic source task, 6,000 images): 66 s, held-out top-1 "
        "83.6 % (goal >= 80 %)",
        "stand-in resnet50 pre-training (40-class synthetic source task, 6,000 images): 240 s, held-out top-1 "
        "81.0 % (goal >= 80 %)",
        "sweep of 8 Q3 smoke points: papermill one after another 120 s, sweep --jobs 2 on Dask 80 s -> 1.50x faster; "
        "per point, Dask 15.5 s vs papermill directly 15.0 s -> +3.3 % (goal <= +10 %), plus 2.0 s to start the "
        "cluster once per sweep",
        "two Q3 Adam trainings at once on 2 cores (two processes, 5 epochs each): one after the other 6.0 s; together "
        "with fair thread shares (1+1 threads) 5.5 s -> 1.09x; together without sharing (2+2 threads) 15.0 s -> "
        "0.40x (goal: together no slower than one after the other, >= 1.0x)",
    ]


def test_main_restores_an_unset_root_even_when_a_comparison_fails(monkeypatch):
    monkeypatch.delenv("LABKIT_ROOT", raising=False)
    monkeypatch.setenv("LABKIT_PLAIN_PROGRESS", "1")

    def broken(repeats):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(bench, "bench_fit_overhead", broken)
    with pytest.raises(RuntimeError):
        bench.main(1)
    assert "LABKIT_ROOT" not in os.environ


def test_the_cli_passes_repeats(monkeypatch):
    from labkit.bench import cpu_train
    got, train = [], []
    monkeypatch.setattr(bench, "main", lambda repeats: got.append(repeats))
    monkeypatch.setattr(cpu_train, "main", lambda repeats, as_json: train.append(repeats) or {})
    assert cli.main(["bench", "--repeats", "3"]) == 0 and got == [3] and train == [5]  # at least 5 repeats there
    assert cli.main(["bench"]) == 0 and got == [3, 7] and train == [5, 7]
    assert cli.main(["bench", "--only", "cpu"]) == 0 and got == [3, 7] and train == [5, 7, 7]  # that part alone


def test_standin_line_reads_the_stand_ins_own_report(isolated_root):
    """The real call at smoke size: what the stand-in recorded about its pre-training, every key the line prints."""
    (arch, r), = bench.bench_standin(("resnet18",), "standin-smoke").items()
    assert arch == "resnet18" and r["source_task"] == "40-class synthetic source task"
    assert r["train_images"] > 0 and r["train_seconds"] >= 0 and 0 <= r["heldout_top1"] <= 1
