import json

import torch

from labkit import q2_losses as q2
from labkit.data import load_tiny_imagenet


def test_miner_yields_valid_triplets_on_a_pk_batch():
    from pytorch_metric_learning import miners
    torch.manual_seed(0)
    labels = torch.arange(4).repeat_interleave(4)  # P = 4 classes x K = 4 images
    emb = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
    for miner in (miners.BatchHardMiner(), miners.TripletMarginMiner(0.2, "semihard")):
        a, p, n = miner(emb, labels)
        assert len(a) > 0
        assert torch.all(labels[a] == labels[p]) and torch.all(labels[a] != labels[n]) and torch.all(a != p)


def test_pk_sampler_batches_are_class_balanced():
    labels = torch.arange(6).repeat_interleave(10)
    sampler = q2.pk_sampler(labels, m_per_class=4, batch_size=12)
    order = list(iter(sampler))
    assert len(order) == 60
    for start in range(0, 60, 12):
        counts = torch.bincount(labels[order[start:start + 12]], minlength=6)
        assert sorted(counts[counts > 0].tolist()) == [4, 4, 4]


def test_smoke_notebook_writes_all_three_runs(smoke_report):
    root, _ = smoke_report
    metrics = json.loads((root / "q2" / "metrics.json").read_text())
    assert set(metrics["runs"]) == {"ce", "ce_triplet", "ce_center"}
    for run in metrics["runs"].values():
        if run["status"] != "diverged":
            assert {"macro_f1", "precision_at_1", "map_at_r"} <= set(run)


def test_demo_sized_runs_beat_chance():
    P = {"weights": "standin", "margin": 0.2, "miner": "batch_hard", "m_per_class": 4, "center_alpha": 0.5,
         "augment": True, "seed": 0, "image_size": 32}
    data = q2.load_data("synthetic", None, 10, "sorted", 32, 40, 10, 0.15, 0)
    for run in ({"name": "ce", "loss": "ce", "loss_weight": 0.0},
                {"name": "ce_triplet", "loss": "ce_triplet", "loss_weight": 1.0},
                {"name": "ce_center", "loss": "ce_center", "loss_weight": 0.1}):
        out = q2.train_and_test({**run, "lr": 1e-3, "epochs": 3, "batch_size": 32}, data, P, torch.device("cpu"),
                                {"test": "demo"})
        assert out.accuracy is not None and out.accuracy > 0.2, (run["name"], out.accuracy)  # chance: 0.1


def test_real_sample_loads_with_the_right_class_subset(samples):
    data = q2.load_data("real", str(samples / "tiny-imagenet-200"), 3, "wnids", 32, 0, 0, 0.25, 0)
    wnids = (samples / "tiny-imagenet-200" / "wnids.txt").read_text().split()[:3]
    words = dict(l.split("\t") for l in (samples / "tiny-imagenet-200" / "words.txt").read_text().splitlines())
    assert data.train.classes == [words[w].split(",")[0] for w in wnids]
    assert len(data.train) + len(data.val) == 36 and len(data.test) == 60
    assert data.test.images.shape[1:] == (3, 32, 32)
    full = load_tiny_imagenet(samples / "tiny-imagenet-200", "val", 3, "wnids")
    assert full.images.shape[1:] == (3, 64, 64)
