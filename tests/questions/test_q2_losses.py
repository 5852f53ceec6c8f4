import json

import numpy as np
import pytest
import torch

from labkit.questions import q2_losses as q2
from labkit.data import load_tiny_imagenet
from labkit.questions.registry import default_parameters, resolved_parameters
from labkit.params import ParameterError


def _on_the_circle(degrees, lengths=None):
    rad = np.radians(degrees)
    emb = np.c_[np.cos(rad), np.sin(rad)] * (1 if lengths is None else np.asarray(lengths)[:, None])
    return torch.tensor(emb, dtype=torch.float32)


def test_retrieval_by_hand_on_six_points():
    """Six embeddings on the unit circle (lengths vary: cosine ignores them), each query retrieving the five
    others by angle. Class 0 at 0, 25, 200 degrees; class 1 at 60, 90, 170. Nearest others: 0 -> 25 (right),
    25 -> 0 (right), 200 -> 170 (wrong), 60 -> 90 (right), 90 -> 60 (right), 170 -> 200 (wrong): precision@1
    = 4/6. MAP@R with R = 2 (the other two of each class): 0: [25 right, 60 wrong] -> 1/2; 25: [0 right, 60
    wrong] -> 1/2; 200: [170, 90 wrong] -> 0; 60: [90 right, 25 wrong] -> 1/2; 90: [60 right, 25 wrong] -> 1/2;
    170: [200 wrong, 90 right] -> (0 + 1/2) / 2 = 1/4; the mean is 2.25 / 6. A query allowed to retrieve itself
    would score precision@1 = 1."""
    emb = _on_the_circle([0, 25, 200, 60, 90, 170], lengths=[1, 3, 0.5, 2, 1, 4])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    got = q2.retrieval(emb, labels)
    assert got["precision_at_1"] == pytest.approx(4 / 6) and got["map_at_r"] == pytest.approx(2.25 / 6)


def _leave_one_out(emb: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Precision@1 and MAP@R by brute force with numpy: every query against every other point."""
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = emb @ emb.T
    p1, ap = [], []
    for q in range(len(emb)):
        others = np.array([i for i in range(len(emb)) if i != q])
        ranked = others[np.argsort(-sim[q, others], kind="stable")]
        right = labels[ranked] == labels[q]
        r = int(right.sum())
        p1.append(float(right[0]))
        hits = np.cumsum(right[:r])
        ap.append(float(np.sum(hits / np.arange(1, r + 1) * right[:r]) / r))
    return float(np.mean(p1)), float(np.mean(ap))


def test_retrieval_on_random_embeddings_is_near_chance_and_matches_brute_force():
    """Random 8-d embeddings of 4 classes: precision@1 near chance (1/4 of the others share a class), far from
    the 1.0 a query finding itself would give; both figures equal a brute-force leave-one-out count."""
    rng = np.random.default_rng(5)
    emb, labels = rng.normal(size=(60, 8)), np.repeat(np.arange(4), 15)
    got = q2.retrieval(torch.tensor(emb, dtype=torch.float32), torch.tensor(labels))
    p1, map_r = _leave_one_out(emb, labels)
    assert got["precision_at_1"] == pytest.approx(p1) and got["map_at_r"] == pytest.approx(map_r, abs=1e-6)
    assert got["precision_at_1"] < 0.5


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
    sampler = q2.PKSampler(labels, m_per_class=4, batch_size=12)
    order = list(iter(sampler))
    assert len(order) == 60
    for start in range(0, 60, 12):
        counts = torch.bincount(labels[order[start:start + 12]], minlength=6)
        assert sorted(counts[counts > 0].tolist()) == [4, 4, 4]


@pytest.mark.slow
def test_smoke_notebook_writes_all_three_runs(smoke_report):
    root, _ = smoke_report
    metrics = json.loads((root / "q2" / "metrics.json").read_text())
    assert set(metrics["runs"]) == {"ce", "ce_triplet", "ce_center"}
    for run in metrics["runs"].values():
        if run["status"] != "diverged":
            assert {"macro_f1", "precision_at_1", "map_at_r"} <= set(run)


@pytest.mark.slow
def test_demo_sized_runs_beat_chance(isolated_root):
    P = q2.parameters(default_parameters("q2"))
    data = q2.load_data(P)
    for name, (run, *_) in q2.plan(P)["losses"].items():  # the first of the demo's seeds
        out = q2.train_and_test(run, data, torch.device("cpu"))
        # chance 0.1; these runs measured 0.95 / 0.92 / 0.92 on the 100 test images: SE = sqrt(0.92 x 0.08 / 100)
        # = 2.7 points, 3 SE below 0.92 is 0.84, so a floor of 0.84 passes test-set noise and catches a
        # regression of about 10 points (0.7 let 20 points through)
        assert out.accuracy is not None and out.accuracy > 0.84, (name, out.accuracy)


def test_runs_take_the_notebook_defaults_and_their_own_settings():
    P = q2.parameters(default_parameters("q2"))
    runs = q2.plan({**P, "seeds": [3], "runs": [{"name": "t", "loss": "ce_triplet", "margin": 0.5}]})
    (run,) = runs["losses"]["t"]
    assert run.seed == 3 and run["margin"] == 0.5 and run["lr"] == P["lr"] and run["miner"] == P["miner"]
    with pytest.raises(ParameterError, match="multiple of m_per_class"):
        q2.plan({**P, "runs": [{"name": "t", "loss": "ce_triplet", "batch_size": 30, "m_per_class": 4}]})


def test_real_sample_loads_with_the_right_class_subset(samples, isolated_root):
    data = q2.load_data(resolved_parameters("q2", data_source="real", data_dir=str(samples / "tiny-imagenet-200"),
                                            num_classes=3, class_order="wnids", image_size=32, val_fraction=0.25,
                                            seed=0))
    wnids = (samples / "tiny-imagenet-200" / "wnids.txt").read_text().split()[:3]
    words = dict(l.split("\t") for l in (samples / "tiny-imagenet-200" / "words.txt").read_text().splitlines())
    assert data.train.classes == [words[w].split(",")[0] for w in wnids]
    assert len(data.train) + len(data.val) == 36 and len(data.test) == 60
    assert data.test.images.shape[1:] == (3, 32, 32)
    full = load_tiny_imagenet(samples / "tiny-imagenet-200", "val", 3, "wnids")
    assert full.images.shape[1:] == (3, 64, 64)


def test_pk_sampler_draws_per_epoch_from_its_own_seed():
    labels = torch.arange(6).repeat_interleave(10)
    a, b = q2.PKSampler(labels, 4, 12, seed=1), q2.PKSampler(labels, 4, 12, seed=1)
    first = list(a)
    np.random.seed(99)  # the global generator does not matter
    assert list(b) == first and list(a) == first  # the same epoch draws the same batches again
    a.set_epoch(1)
    assert list(a) != first
    assert list(q2.PKSampler(labels, 4, 12, seed=2)) != first


def test_impossible_pk_batches_are_refused_naming_the_three_parameters():
    P = q2.parameters(default_parameters("q2"))
    with pytest.raises(ParameterError, match=r"needs 16 classes per batch, but num_classes=5: use num_classes >= 16, "
                                             r"or batch_size <= 20, or m_per_class >= 13"):
        q2.plan({**P, "num_classes": 5, "runs": [{"name": "t", "loss": "ce_triplet", "batch_size": 64}]})


@pytest.mark.slow
def test_same_seed_same_numbers_with_caches_cleared(same_twice):
    same_twice(q2, "q2",
               q2.load_data, lambda plan: [per_seed[0] for per_seed in plan["losses"].values()])


@pytest.mark.slow
def test_the_triplet_and_center_terms_change_training_from_the_first_update(isolated_root):
    """Not just "accuracy > chance": with the same seed, data and batches, the extra terms change the loss of
    the very first update and the trained weights."""
    P = q2.parameters({**default_parameters("q2", "smoke"), "epochs": 1})
    data = q2.load_data(P)
    runs = q2.plan({**P, "runs": [{"name": "ce", "loss": "ce"}, {"name": "center", "loss": "ce_center",
                                                                 "loss_weight": 0.1},
                                  {"name": "ce_pk", "loss": "ce_triplet", "loss_weight": 0.0},
                                  {"name": "triplet", "loss": "ce_triplet", "loss_weight": 1.0}]})["losses"]
    out = {name: q2.train_and_test(run, data, torch.device("cpu")) for name, (run,) in runs.items()}
    first = {name: o.history.updates[0]["loss"] for name, o in out.items()}
    assert first["center"] > first["ce"]  # the same first batch, plus 0.1 x a positive center loss
    assert first["triplet"] != first["ce_pk"]  # the same P x K batch, with and without the triplet term
    assert not np.array_equal(out["triplet"].artifacts["embeddings"], out["ce_pk"].artifacts["embeddings"])
    assert not np.array_equal(out["center"].artifacts["embeddings"], out["ce"].artifacts["embeddings"])


def test_val_fraction_0_keeps_the_whole_training_split(isolated_root):
    P = q2.parameters(default_parameters("q2", "smoke"))
    held = q2.load_data({**P, "val_fraction": 0.25})
    whole = q2.load_data({**P, "val_fraction": 0.0})
    assert len(whole.val) == 0 and len(whole.train) == len(held.train) + len(held.val)
    assert len(whole.train) == P["num_classes"] * P["synthetic_train_per_class"]


def test_pk_batches_the_training_split_cannot_give_are_refused_naming_the_parameters():
    from labkit.runs import Run
    run = Run("t", {"batch_size": 8, "m_per_class": 4}, 0)
    with pytest.raises(ParameterError, match=r"holds 6 images, fewer than one P x K batch \(batch_size=8\)"):
        q2.check_pk_batches(run, torch.tensor([0, 0, 0, 1, 1, 1]))
    with pytest.raises(ParameterError, match=r"m_per_class=4 but a class has only 3 training images"):
        q2.check_pk_batches(run, torch.tensor([0] * 8 + [1] * 3))
    q2.check_pk_batches(run, torch.tensor([0] * 4 + [1] * 4))  # one whole batch, 4 of each: fine
