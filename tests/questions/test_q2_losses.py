import json
import re

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


def test_the_architecture_is_resnet18_for_any_parameters():
    assert q2.architecture({}) == q2.architecture({"num_classes": 50}) == "ResNet-18"


def _forecast_parameters(**over):
    P = q2.parameters(default_parameters("q2", "smoke"))
    return {**P, "data_source": "synthetic", "num_classes": 4, "synthetic_train_per_class": 40,
            "synthetic_val_per_class": 10, "val_fraction": 0.15, "train_per_class": None, "seeds": [0],
            "image_size": 24, "precision": "bf16", **over}


def _by_what(passes):
    return {p.what: p for p in passes}


def test_passes_count_each_runs_training_validation_and_test_images_by_hand():
    """4 classes x 40 generated training images = 160; ceil(0.15 x 160) = 24 held out for validation, 136 trained
    on; the test set is 4 x 10 = 40. The triplet run's P x K batches of 12 drop the last partial one: 11 x 12 =
    132 a epoch. Two runs with equal settings train once (the first name)."""
    from labkit.questions.contract import Pass, Setting
    P = _forecast_parameters(runs=[
        {"name": "ce", "loss": "ce", "epochs": 2, "batch_size": 8, "augment": False},
        {"name": "ce_again", "loss": "ce", "epochs": 2, "batch_size": 8, "augment": False},
        {"name": "pk", "loss": "ce_triplet", "loss_weight": 1.0, "epochs": 3, "batch_size": 12, "m_per_class": 3}],
        seeds=[0, 5])
    got = q2.passes(P)
    train_ce = Setting("resnet18", 64, 24, 8, 4, True, False, optimizer="adam", precision="bf16")
    train_pk = Setting("resnet18", 64, 24, 12, 4, True, True, optimizer="adam", precision="bf16")
    evaluate = Setting("resnet18", 64, 24, 256, 4, False, False, precision="bf16")  # both runs, validation and test
    expected = []
    for name, seed, s, train, epochs in (("ce", 0, train_ce, 136, 2), ("ce", 5, train_ce, 136, 2),
                                        ("pk", 0, train_pk, 132, 3), ("pk", 5, train_pk, 132, 3)):
        expected += [Pass("q2", f"{name} seed {seed}: training", s, train * epochs),
                     Pass("q2", f"{name} seed {seed}: validation", evaluate, 24 * epochs),
                     Pass("q2", f"{name} seed {seed}: test", evaluate, 40)]
    assert got == expected


def test_passes_with_train_per_class_keep_that_many_per_class_and_floor_the_pk_batches():
    """train_per_class=25 of 4 classes: 100 training images (fewer than the 136 left after validation); the
    triplet run's batches of 16 give 6 x 16 = 96. train_per_class=50 asks for more than there is: 136."""
    P = _forecast_parameters(train_per_class=25, runs=[
        {"name": "ce", "loss": "ce", "epochs": 1}, {"name": "pk", "loss": "ce_triplet", "epochs": 1,
                                                    "batch_size": 16, "m_per_class": 4}])
    got = _by_what(q2.passes(P))
    assert got["ce seed 0: training"].images == 100 and got["pk seed 0: training"].images == 96
    assert got["ce seed 0: validation"].images == 24 and got["ce seed 0: test"].images == 40
    more = _by_what(q2.passes({**P, "train_per_class": 50}))
    assert more["ce seed 0: training"].images == 136 and more["pk seed 0: training"].images == 128


def test_passes_train_with_each_runs_optimizer_and_evaluate_without_one():
    """The forecast times a training step with the optimizer the run trains with (an SGD or AdamW step is not an
    Adam step); validation and test take no step."""
    P = _forecast_parameters(optimizer="adam", runs=[
        {"name": "sgd", "loss": "ce", "optimizer": "sgd", "momentum": 0.9},
        {"name": "adamw", "loss": "ce_center", "loss_weight": 0.1, "optimizer": "adamw"},
        {"name": "adam", "loss": "ce"}])
    got = _by_what(q2.passes(P))
    assert [got[f"{n} seed 0: training"].setting.optimizer for n in ("sgd", "adamw", "adam")] == \
        ["sgd", "adamw", "adam"]
    assert {got[f"{n} seed 0: test"].setting.optimizer for n in ("sgd", "adamw", "adam")} == {"adam"}


def test_passes_on_the_real_data_use_its_sizes_and_given_sizes_win():
    """The real set: 500 training and 50 val (our test) images a class, stored at 64 px. 3 classes: 1500 training
    images, ceil(0.2 x 1500) = 300 held out, 1200 trained on; 150 test images."""
    P = _forecast_parameters(data_source="real", num_classes=3, val_fraction=0.2, image_size=96,
                             runs=[{"name": "ce", "loss": "ce", "epochs": 1}])
    got = _by_what(q2.passes(P))
    assert got["ce seed 0: training"].images == 1200 and got["ce seed 0: validation"].images == 300
    assert got["ce seed 0: test"].images == 150
    assert got["ce seed 0: training"].setting.stored_size == 64 and got["ce seed 0: training"].setting.image_size == 96
    sizes = {"train_per_class": 20, "val_per_class": 7, "stored_size": 48}
    given = _by_what(q2.passes(P, sizes))  # the forecast's own sizes, even for the real data
    assert given["ce seed 0: training"].images == 48 and given["ce seed 0: validation"].images == 12
    assert given["ce seed 0: test"].images == 21 and given["ce seed 0: test"].setting.stored_size == 48


def _principal_plane(unit: np.ndarray) -> np.ndarray:
    """The centred rows on their first two principal axes, by numpy's SVD (the sign of each axis is arbitrary)."""
    centred = unit - unit.mean(axis=0)
    return centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T


def _same_up_to_axis_signs(a: np.ndarray, b: np.ndarray, atol: float = 1e-9) -> bool:
    return all(np.allclose(a[:, k], b[:, k], atol=atol) or np.allclose(a[:, k], -b[:, k], atol=atol)
               for k in range(2))


def test_pca_projection_is_of_the_directions_not_the_lengths():
    """Lengths from 0.01 to 50 (short ones too: a floor on the norm must stay far below them) and a zero vector
    (a dead network's embedding: it stays at the origin instead of making the projection NaN); the projection
    equals the principal plane of the unit directions, worked out with numpy's SVD."""
    rng = np.random.default_rng(3)
    directions = rng.normal(size=(9, 5))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    lengths = np.array([0.01, 0.3, 50, 2, 0.05, 1, 7, 0.2, 0.0])
    got = q2.project_2d(directions * lengths[:, None], "pca", seed=0)
    unit = directions.copy()
    unit[-1] = 0.0
    assert got.shape == (9, 2) and _same_up_to_axis_signs(got, _principal_plane(unit))
    assert not _same_up_to_axis_signs(got, _principal_plane(directions * lengths[:, None]))


def test_pca_projection_of_wide_embeddings_uses_the_runs_seed():
    """600-d embeddings of three clusters (wider than 500: sklearn's PCA switches to its randomised solver, whose
    result depends on the seed in the last bits): the projection is, bit for bit, sklearn's PCA with the run's
    seed, and the principal plane."""
    from sklearn.decomposition import PCA
    rng = np.random.default_rng(0)
    emb = np.repeat(rng.normal(size=(3, 600)), [6, 7, 7], axis=0) * 3 + rng.normal(size=(20, 600))
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    got = q2.project_2d(emb, "pca", seed=3)
    assert np.array_equal(got, PCA(2, random_state=3).fit_transform(unit))
    assert not np.array_equal(got, PCA(2, random_state=4).fit_transform(unit))  # the seed shows here
    assert _same_up_to_axis_signs(got, _principal_plane(unit), atol=1e-6)


class _TSNESpy:
    """sklearn's TSNE in shape only: what it was built with and given (a real t-SNE of a hundred points takes
    seconds)."""
    built = []

    def __init__(self, *args, **kw):
        self.built.append((args, kw))

    def fit_transform(self, X):
        self.built.append(X)
        return X[:, :2] * 10


@pytest.mark.parametrize("n, perplexity", [(12, 5), (23, 5), (60, 15), (123, 30), (128, 30)])
def test_tsne_projection_perplexity_is_a_quarter_of_the_points_within_5_and_30(monkeypatch, n, perplexity):
    """t-SNE's perplexity: n // 4, at least 5 (tiny test sets), at most 30 (its usual value); two components, a
    PCA start and the run's seed, on the unit directions; its output is the projection."""
    import sklearn.manifold
    monkeypatch.setattr(sklearn.manifold, "TSNE", _TSNESpy)
    _TSNESpy.built = []
    emb = np.random.default_rng(n).normal(size=(n, 6)) * np.linspace(0.1, 5, n)[:, None]
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    got = q2.project_2d(emb, "tsne", seed=7)
    (args, kw), given = _TSNESpy.built
    assert args == (2,) and kw == {"init": "pca", "random_state": 7, "perplexity": perplexity}
    assert np.allclose(given, unit) and np.array_equal(got, given[:, :2] * 10)


def _outcome(name, y_true, y_pred, seed=0, embeddings=None, **metrics_):
    from labkit.questions.experiments import Outcome
    return Outcome(name, {}, seed, None, np.asarray(y_true), np.asarray(y_pred), metrics=dict(metrics_),
                   artifacts={} if embeddings is None else {"embeddings": embeddings})


def test_the_embedding_view_shows_the_first_classes_projected_with_the_runs_retrieval(monkeypatch):
    """Classes 0 and 1 of four (n_classes=2): their four test embeddings, projected with the method asked and
    the run's seed; their labels; "P@1 ..., MAP@R ..." from the run's metrics."""
    projected = []

    def project(emb, method, seed):
        projected.append((emb, method, seed))
        return emb[:, :2] + 100

    monkeypatch.setattr(q2, "project_2d", project)
    emb = np.arange(24, dtype=float).reshape(8, 3)
    out = _outcome("ce", [0, 2, 1, 3, 1, 0, 2, 3], [0, 2, 1, 3, 0, 0, 2, 1], seed=4, embeddings=emb,
                   precision_at_1=0.5, map_at_r=0.25)
    view = q2.embedding_view(out, 2, "tsne")
    ((given, method, seed),) = projected
    assert np.array_equal(given, emb[[0, 2, 4, 5]]) and method == "tsne" and seed == 4
    assert np.array_equal(view["points"], emb[[0, 2, 4, 5], :2] + 100)
    assert view["labels"].tolist() == [0, 1, 1, 0]
    assert view["retrieval"] == "P@1 50.0 %, MAP@R 25.0 %"


def test_no_embedding_view_for_a_failed_or_diverged_run_or_fewer_than_three_points():
    from dataclasses import replace

    from labkit.training.loop import History
    emb = np.eye(4)
    three = _outcome("ce", [0, 1, 0, 2], [0, 1, 1, 2], embeddings=emb)  # 3 points of classes 0 and 1
    assert q2.embedding_view(three, 2, "pca")["labels"].tolist() == [0, 1, 0]
    assert q2.embedding_view(three, 1, "pca") is None  # class 0 alone: 2 points
    assert q2.embedding_view(replace(three, error="out of memory"), 2, "pca") is None
    assert q2.embedding_view(replace(three, history=History(status="diverged")), 2, "pca") is None


def _summary(rows: dict):
    """A summary table as experiments.summarize makes it, one seed a run: what pretty and findings read."""
    import pandas as pd
    base = {"seeds": 1, "seeds_ok": 1, "std_over_seeds": None, "ci_low": 0.5, "ci_high": 0.9, "original": None,
            "status": "ok", "train_seconds": 2.0}
    return pd.DataFrame.from_dict({name: {**base, **row} for name, row in rows.items()}, orient="index")


def test_the_summary_view_adds_macro_f1_and_retrieval_to_three_decimals_beside_the_originals_macro_f1():
    summary = _summary({"ce": {"accuracy": 0.8, "macro_f1": 0.78449, "precision_at_1": 0.6666, "map_at_r": 0.0},
                        "ce_triplet": {"accuracy": 0.7, "macro_f1": 0.7, "precision_at_1": None,
                                       "map_at_r": float("nan")},
                        "mine": {"accuracy": 0.6, "macro_f1": 1.0, "precision_at_1": 0.1235, "map_at_r": 0.5}})
    view = q2.summary_view(summary)
    assert view["ours (%)"].tolist() == ["80.00", "70.00", "60.00"]  # experiments.pretty's columns stay
    assert view["macro_f1"].tolist() == ["0.784", "0.700", "1.000"]
    assert view["precision_at_1"].tolist() == ["0.667", "", "0.123"]  # missing: empty, not "nan"
    assert view["map_at_r"].tolist() == ["0.000", "", "0.500"]
    assert view["original macro-F1"].tolist() == [0.76, 0.63, ""]  # the original report's, by run name


def test_the_summary_view_of_runs_without_retrieval_figures_leaves_them_empty():
    """A summary where no run has the retrieval columns (every run failed before testing)."""
    view = q2.summary_view(_summary({"ce_center": {"accuracy": None, "status": "failed", "macro_f1": None}}))
    assert view.loc["ce_center", "precision_at_1"] == view.loc["ce_center", "map_at_r"] == ""
    assert view.loc["ce_center", "macro_f1"] == "" and view.loc["ce_center", "original macro-F1"] == 0.75


def test_findings_give_accuracy_retrieval_flags_the_pairwise_verdict_and_the_triplet_idea():
    """Two runs of one seed on 20 test images: ce right on all, ce_triplet wrong on 10 of them (ce's only
    discordant images): McNemar's exact p = 2 x 0.5^10 = 0.00195 (one pair: Holm leaves it). ce_center is in the
    summary but not in the parts (never trained here): no verdict for it; it and ce_big (failed) are flagged. The triplet run's MAP@R (0.5) above
    ce's (0.4): the idea holds."""
    y = np.arange(20) % 4
    parts = {"losses": {"ce_triplet": [_outcome("ce_triplet", y, np.where(np.arange(20) < 10, (y + 1) % 4, y))],
                        "ce": [_outcome("ce", y, y)]}}
    summary = _summary({"ce": {"accuracy": 1.0, "precision_at_1": 0.6, "map_at_r": 0.4},
                        "ce_triplet": {"accuracy": 0.5, "precision_at_1": 0.55, "map_at_r": 0.5},
                        "ce_center": {"accuracy": 0.25, "status": "at_chance", "precision_at_1": None,
                                      "map_at_r": None},
                        "ce_big": {"accuracy": None, "status": "failed", "precision_at_1": None, "map_at_r": None}})
    assert q2.findings(summary, parts, {}) == (
        "**Test accuracy:** `ce` 100.0 %, `ce_triplet` 50.0 %, `ce_center` 25.0 %, `ce_big` n/a. **Retrieval "
        "(precision@1 / MAP@R):** `ce` 60.0 % / 40.0 %, `ce_triplet` 55.0 % / 50.0 %, `ce_center` n/a / n/a, "
        "`ce_big` n/a / n/a.\n\n"
        "Flagged runs: `ce_center` (at_chance), `ce_big` (failed).\n\n"
        "Pairwise, Holm-adjusted over the pairs: ce vs ce_triplet: these two trained networks differ (one seed: "
        "not a verdict on the recipes) (Holm-adjusted p = 0.00195, McNemar).\n\n"
        "Retrieval here: the triplet run's MAP@R (50.0 %) is above cross-entropy's (40.0 %), so the idea that the "
        "triplet loss helps retrieval more holds in this run.")


@pytest.mark.parametrize("triplet_map", [0.4, 0.3])
def test_findings_say_the_triplet_idea_does_not_hold_when_its_map_at_r_is_not_above(triplet_map):
    """Equal MAP@R (0.4 and 0.4) is not "above" either. One trained run: no pairs, no flags."""
    summary = _summary({"ce": {"accuracy": 0.8, "precision_at_1": 0.6, "map_at_r": 0.4},
                        "ce_triplet": {"accuracy": 0.7, "precision_at_1": 0.5, "map_at_r": triplet_map}})
    parts = {"losses": {"ce": [_outcome("ce", [0, 1], [0, 1])]}}
    assert q2.findings(summary, parts, {}).split("\n\n") == [
        "**Test accuracy:** `ce` 80.0 %, `ce_triplet` 70.0 %. **Retrieval (precision@1 / MAP@R):** `ce` 60.0 % / "
        "40.0 %, `ce_triplet` 50.0 % / " + f"{100 * triplet_map:.1f} %.",
        f"Retrieval here: the triplet run's MAP@R ({100 * triplet_map:.1f} %) is not above cross-entropy's "
        "(40.0 %), so the idea that the triplet loss helps retrieval more does not hold in this run."]


@pytest.mark.parametrize("missing", ["ce", "ce_triplet"])
def test_findings_say_nothing_of_the_triplet_idea_without_both_map_at_r(missing):
    """A run without MAP@R (diverged, or not in the run list): no comparison; the sentences before it stay."""
    rows = {"ce": {"accuracy": 0.8, "precision_at_1": 0.6, "map_at_r": 0.4},
            "ce_triplet": {"accuracy": 0.7, "precision_at_1": 0.5, "map_at_r": 0.5}}
    rows[missing]["map_at_r"] = float("nan")
    text = q2.findings(_summary(rows), {"losses": {}}, {})
    assert "Retrieval here" not in text and text.startswith("**Test accuracy:** `ce` 80.0 %")
    rows = {name: row for name, row in rows.items() if name != missing}
    assert "Retrieval here" not in q2.findings(_summary(rows), {"losses": {}}, {})


# (parameter, a value at its bound or among its choices: accepted, a value past it: refused, the refusal's words)
NOTEBOOK_BOUNDS = [
    ("num_classes", 2, 1, "= 1 is out of range; allowed: an integer in [2, 200]"),
    ("num_classes", 200, 201, "= 201 is out of range; allowed: an integer in [2, 200]"),
    ("class_order", "wnids", "random", "= 'random' is not allowed; allowed: 'sorted', 'wnids'"),
    ("synthetic_train_per_class", 4, 3, "= 3 is out of range; allowed: an integer >= 4"),
    ("synthetic_val_per_class", 1, 0, "= 0 is out of range; allowed: an integer >= 1"),
    ("train_per_class", 2, 1, "= 1 is out of range; allowed: an integer >= 2 or None (None: every training image)"),
    ("train_per_class", None, 2.5, "= 2.5 has the wrong type; allowed: an integer >= 2 or None (None: every "
                                   "training image)"),
    ("margin", 0.0, -0.1, "= -0.1 is out of range; allowed: a number >= 0.0"),
    ("miner", "all", "hard", "= 'hard' is not allowed; allowed: 'batch_hard', 'semihard', 'all'"),
    ("m_per_class", 2, 1, "= 1 is out of range; allowed: an integer >= 2"),
    ("center_alpha", 1e-6, 1e-7, "= 1e-07 is out of range; allowed: a number in [1e-06, 1.0]"),
    ("center_alpha", 1.0, 1.01, "= 1.01 is out of range; allowed: a number in [1e-06, 1.0]"),
    ("embedding_method", "tsne", "umap", "= 'umap' is not allowed; allowed: 'pca', 'tsne'"),
    ("embedding_classes", 2, 1, "= 1 is out of range; allowed: an integer >= 2"),
    ("augment", False, 1, "= 1 has the wrong type; allowed: true or false"),
    ("precision", "bf16", "fp16", "= 'fp16' is not allowed; allowed: 'auto', 'fp32', 'bf16'"),
    ("optimizer", "sgd", "rmsprop", "= 'rmsprop' is not allowed; allowed: 'sgd', 'adam', 'adamw'"),
    ("momentum", 1.0, 1.5, "= 1.5 is out of range; allowed: a number in [0.0, 1.0] or None (SGD's; None: 0)"),
    ("betas", [0.5, 0.9], 0.9, "= 0.9 has the wrong type; allowed: a list or tuple or None (Adam's"),
    ("weight_decay", 0.0, -1.0, "= -1.0 is out of range; allowed: a number >= 0.0 or None (None: the optimizer"),
    ("runs", [], {"name": "ce"}, "= {'name': 'ce'} has the wrong type; allowed: a list"),
    ("weights", "standin-smoke", 3, "= 3 has the wrong type; allowed: a string ('standin', 'standin-smoke', "
                                    "'imagenet' or the path of a ResNet-18 state-dict file)"),
]


@pytest.mark.parametrize("name, good, bad, refusal", NOTEBOOK_BOUNDS)
def test_notebook_parameters_take_their_bounds_and_refuse_past_them_naming_what_is_allowed(name, good, bad, refusal):
    defaults = default_parameters("q2", "smoke")
    if name == "momentum":  # only SGD takes momentum; the optimizer rule is checked when the runs are planned
        defaults["optimizer"] = "sgd"
    assert q2.parameters({**defaults, name: good})[name] == good
    with pytest.raises(ParameterError, match=re.escape(f"parameter {name!r} {refusal}")):
        q2.parameters({**defaults, name: bad})


RUN_BOUNDS = [
    ("loss", "ce_center", "arcface", "= 'arcface' is not allowed; allowed: 'ce', 'ce_triplet', 'ce_center'"),
    ("loss_weight", 0.0, -0.5, "= -0.5 is out of range; allowed: a number >= 0.0"),
    ("epochs", 1, 0, "= 0 is out of range; allowed: an integer >= 1"),
    ("batch_size", 2, 1, "= 1 is out of range; allowed: an integer >= 2"),
    ("margin", 0.0, -0.2, "= -0.2 is out of range; allowed: a number >= 0.0"),
    ("miner", "semihard", "easy", "= 'easy' is not allowed; allowed: 'batch_hard', 'semihard', 'all'"),
    ("m_per_class", 2, 1, "= 1 is out of range; allowed: an integer >= 2"),
    ("center_alpha", 1e-6, 0.0, "= 0.0 is out of range; allowed: a number in [1e-06, 1.0]"),
    ("center_alpha", 1.0, 2.0, "= 2.0 is out of range; allowed: a number in [1e-06, 1.0]"),
    ("augment", False, "no", "= 'no' has the wrong type; allowed: true or false"),
    ("precision", "fp32", "half", "= 'half' is not allowed; allowed: 'auto', 'fp32', 'bf16'"),
    ("lr", 0.0, -0.1, "= -0.1 is out of range; allowed: a number >= 0.0"),
]


@pytest.mark.parametrize("name, good, bad, refusal", RUN_BOUNDS)
def test_run_settings_take_their_bounds_and_refuse_past_them_naming_what_is_allowed(name, good, bad, refusal):
    P = q2.parameters(default_parameters("q2", "smoke"))
    ((run,),) = q2.plan({**P, "seeds": [0], "runs": [{"name": "t", name: good}]})["losses"].values()
    assert run[name] == good
    with pytest.raises(ParameterError, match=re.escape(f"'runs[0].{name}' {refusal}")):
        q2.plan({**P, "runs": [{"name": "t", name: bad}]})


def test_a_run_that_sets_nothing_is_cross_entropy_alone_with_every_other_setting_the_notebooks():
    """Every notebook value set away from the smoke profile's (and the libraries' defaults), so a setting taken
    from elsewhere shows."""
    P = q2.parameters({**default_parameters("q2", "smoke"), "optimizer": "sgd", "lr": 0.03, "momentum": 0.7,
                       "weight_decay": 0.002, "epochs": 4, "batch_size": 12, "margin": 0.35, "miner": "semihard",
                       "m_per_class": 3, "center_alpha": 0.15, "augment": False, "image_size": 40,
                       "precision": "bf16", "weights": "standin-smoke"})
    ((run,),) = q2.plan({**P, "seeds": [7], "runs": [{"name": "plain"}]})["losses"].values()
    assert run.seed == 7 and run["loss"] == "ce" and run["loss_weight"] == 0.0
    assert {k: run[k] for k in ("optimizer", "lr", "momentum", "betas", "weight_decay", "epochs", "batch_size",
                                "margin", "miner", "m_per_class", "center_alpha", "augment", "weights",
                                "image_size", "precision")} == {
        "optimizer": "sgd", "lr": 0.03, "momentum": 0.7, "betas": None, "weight_decay": 0.002, "epochs": 4,
        "batch_size": 12, "margin": 0.35, "miner": "semihard", "m_per_class": 3, "center_alpha": 0.15,
        "augment": False, "weights": "standin-smoke", "image_size": 40, "precision": "bf16"}


def test_pk_batch_rules_name_a_batch_size_that_works_and_apply_to_the_triplet_run_only():
    P = q2.parameters(default_parameters("q2", "smoke"))  # 4 classes
    with pytest.raises(ParameterError, match=re.escape(
            "run 't': batch_size=30 must be a multiple of m_per_class=4 for the triplet run's P x K batches "
            "(e.g. batch_size=28)")):
        q2.plan({**P, "runs": [{"name": "t", "loss": "ce_triplet", "batch_size": 30, "m_per_class": 4}]})
    with pytest.raises(ParameterError, match=re.escape("batch_size=3 must be a multiple of m_per_class=4 for the "
                                                       "triplet run's P x K batches (e.g. batch_size=4)")):
        q2.plan({**P, "runs": [{"name": "t", "loss": "ce_triplet", "batch_size": 3, "m_per_class": 4}]})
    # exactly num_classes classes a batch (4 x 3 = 12) is fine; 5 would not be
    ok = q2.plan({**P, "runs": [{"name": "t", "loss": "ce_triplet", "batch_size": 12, "m_per_class": 3}]})
    assert ok["losses"]["t"][0]["batch_size"] == 12
    with pytest.raises(ParameterError, match=re.escape(
            "run 't': batch_size=15 with m_per_class=3 needs 5 classes per batch, but num_classes=4: use "
            "num_classes >= 5, or batch_size <= 12, or m_per_class >= 4 (a divisor of batch_size)")):
        q2.plan({**P, "runs": [{"name": "t", "loss": "ce_triplet", "batch_size": 15, "m_per_class": 3}]})
    for loss in ("ce", "ce_center"):  # batches of any size: neither rule applies
        assert q2.plan({**P, "runs": [{"name": "t", "loss": loss, "batch_size": 15, "m_per_class": 4}]})


def test_pk_sampler_refuses_a_batch_that_is_not_whole_classes_and_counts_whole_batches():
    with pytest.raises(ValueError, match=r"^batch_size=10 must be a multiple of m_per_class=4 for P x K batches$"):
        q2.PKSampler(torch.arange(4).repeat_interleave(5), 4, 10)
    sampler = q2.PKSampler(torch.arange(5).repeat_interleave(10), 4, 12)  # 50 images: 4 batches of 12
    assert len(sampler) == 48 and len(list(sampler)) == 48


def test_pk_sampler_epoch_draws_from_its_own_generator_seeded_by_seed_and_epoch():
    """Epoch 3 of seed 5000 draws from RandomState((5000 x 1,000,003 + 3) mod 2^32) = 5,000,015,003 -
    4,294,967,296 = 705,047,707 (a seed beyond 2^32 is folded, not refused), and pytorch-metric-learning's own
    generator is left as it was."""
    from pytorch_metric_learning.samplers import MPerClassSampler
    from pytorch_metric_learning.utils import common_functions as c_f
    labels = torch.arange(5).repeat_interleave(6)
    sampler = q2.PKSampler(labels, 3, 6, seed=5000)
    saved = c_f.NUMPY_RANDOM
    sampler.set_epoch(3)
    before = np.random.RandomState(123)
    c_f.NUMPY_RANDOM = before  # whatever the library's generator is, it is the same one afterwards
    try:
        got = list(sampler)
        assert c_f.NUMPY_RANDOM is before
        c_f.NUMPY_RANDOM = np.random.RandomState(705_047_707)
        expected = list(MPerClassSampler(labels.numpy(), 3, batch_size=6, length_before_new_iter=30))
    finally:
        c_f.NUMPY_RANDOM = saved
    assert got == expected


def test_pk_batches_count_only_the_classes_the_training_split_holds():
    """Classes 0 and 2 with 4 images each, none of class 1 (absent from the split, not a class with 0 images)."""
    from labkit.runs import Run
    run = Run("t", {"batch_size": 8, "m_per_class": 4}, 0)
    q2.check_pk_batches(run, torch.tensor([0] * 4 + [2] * 4))
    with pytest.raises(ParameterError, match=r"m_per_class=4 but a class has only 1 training images"):
        q2.check_pk_batches(run, torch.tensor([0] * 4 + [1] + [2] * 4))  # one image is a class too


def test_load_data_generates_the_synthetic_set_the_parameters_ask_for(isolated_root):
    """Without data_dir: the generated set of num_classes classes, synthetic_train_per_class and
    synthetic_val_per_class images each, 5 unlabelled test images, stored at Tiny ImageNet's 64 px, seed 0 (its
    folder name holds every one of these settings)."""
    from labkit.data.synthetic import ensure_synthetic
    from labkit.runs import data_identity
    P = q2.parameters({**default_parameters("q2", "smoke"), "num_classes": 3, "synthetic_train_per_class": 6,
                       "synthetic_val_per_class": 2, "val_fraction": 0.0, "image_size": 96})
    data = q2.load_data(P)
    assert data.source == str(ensure_synthetic("tiny-imagenet-200", num_classes=3, train_per_class=6,
                                               val_per_class=2, test_images=5, image_size=64, seed=0))
    assert len(data.train) == 18 and len(data.val) == 0 and len(data.test) == 6
    assert data.train.images.shape[1:] == data.test.images.shape[1:] == (3, 64, 64)  # 96 px: upsampled per batch
    assert data.key == data_identity(data.train, data.val, data.test)


def _generated_tiny_imagenet(folder, num_classes=4, train_per_class=12, val_per_class=3):
    """A dataset folder in the official layout (wnids.txt in shuffled order, as the real one), written here, its
    images stored at 24 px."""
    from labkit.data.synthetic import write_tiny_imagenet
    root = write_tiny_imagenet(folder, num_classes=num_classes, train_per_class=train_per_class,
                               val_per_class=val_per_class, test_images=1, image_size=24)
    return root / "tiny-imagenet-200"


def test_load_data_splits_with_the_data_seed_in_the_class_order_asked(isolated_root, tmp_path):
    """A real-layout folder of 4 classes x 12 training images, 3 classes taken in wnids.txt order (another set than
    the sorted order's first 3): the validation share and the per-class subset drawn with the parameter `seed` (3),
    the test set in the same class order, everything decoded at the run's 16 px (stored at 24)."""
    from labkit.data import per_class_subset, stratified_split
    root = _generated_tiny_imagenet(tmp_path / "tiny")
    P = resolved_parameters("q2", "smoke", data_source="real", data_dir=str(root), num_classes=3,
                            class_order="wnids", image_size=16, val_fraction=0.25, train_per_class=5, seed=3)
    data = q2.load_data(P)
    every = load_tiny_imagenet(root, "train", 3, "wnids", image_size=16)
    assert every.classes != load_tiny_imagenet(root, "train", 3, "sorted", image_size=16).classes
    tr, va = stratified_split(every.labels.numpy(), 0.25, 3)
    tr = tr[per_class_subset(every.labels[tr].numpy(), 5, 3)]
    assert data.train.ids == [every.ids[i] for i in tr] and data.val.ids == [every.ids[i] for i in va]
    assert torch.equal(data.train.images, every.images[tr]) and data.train.images.shape[1:] == (3, 16, 16)
    test = load_tiny_imagenet(root, "val", 3, "wnids", image_size=16)
    assert torch.equal(data.test.images, test.images) and data.test.ids == test.ids
    assert data.test.classes == data.train.classes == every.classes
    assert data.test.labels.tolist() == test.labels.tolist() and data.source == str(root)
    other = q2.load_data({**P, "seed": 4})
    assert other.val.ids != data.val.ids and other.train.ids != data.train.ids  # the seed shows in both draws
    assert len(other.train) == 15 and len(other.val) == 9


def test_load_data_reads_the_real_set_from_the_data_folder_by_default(isolated_root, tmp_path):
    root = _generated_tiny_imagenet(tmp_path / "tiny", num_classes=2, train_per_class=6, val_per_class=4)
    (isolated_root / "data" / "tiny-imagenet-200").symlink_to(root, target_is_directory=True)
    P = resolved_parameters("q2", "smoke", data_source="real", num_classes=2, val_fraction=0.25, image_size=16)
    data = q2.load_data(P)
    assert data.source == str(isolated_root / "data" / "tiny-imagenet-200")
    assert len(data.train) + len(data.val) == 12 and len(data.test) == 8


def test_load_data_names_val_fraction_when_a_class_is_too_small_to_split(isolated_root, tmp_path):
    """A dataset folder whose classes hold one training image each: the validation share cannot be carved, and
    the error names the notebook's parameter and its way out."""
    from labkit.data.synthetic import write_tiny_imagenet
    root = write_tiny_imagenet(tmp_path / "tiny", num_classes=2, train_per_class=1, val_per_class=1,
                               test_images=1, image_size=16)
    P = resolved_parameters("q2", "smoke", data_source="real", data_dir=str(root), num_classes=2, val_fraction=0.5,
                            image_size=16)
    with pytest.raises(ParameterError, match=r"^val_fraction=0\.5: too few images for this split .* or "
                                             r"val_fraction=0 \(no validation split\)$"):
        q2.load_data(P)


def test_the_notebooks_output_goes_to_its_own_folder_of_the_profile(isolated_root):
    P = q2.parameters({k: v for k, v in default_parameters("q2", "smoke").items() if k != "output_dir"})
    assert P["output_dir"] == str(isolated_root / "reports" / "smoke" / "q2")


def test_the_optimizer_rule_names_the_run():
    P = q2.parameters(default_parameters("q2", "smoke"))
    with pytest.raises(ParameterError, match=r"^run 'adam_m': momentum=0\.9 does not apply to optimizer='adam'"):
        q2.plan({**P, "optimizer": "adam", "runs": [{"name": "adam_m", "momentum": 0.9}]})


def test_pk_sampler_draws_as_seed_0_unless_given_a_seed():
    labels = torch.arange(6).repeat_interleave(10)
    assert list(q2.PKSampler(labels, 4, 12)) == list(q2.PKSampler(labels, 4, 12, seed=0))
    assert list(q2.PKSampler(labels, 4, 12)) != list(q2.PKSampler(labels, 4, 12, seed=1))


def test_load_data_reads_a_given_folder_even_for_synthetic_data(isolated_root, tmp_path):
    """data_dir wins over generating: a folder of 3 classes x 5 training and 2 val images written beforehand
    (the smoke profile would generate 4 x 10 elsewhere)."""
    root = _generated_tiny_imagenet(tmp_path / "mine", num_classes=3, train_per_class=5, val_per_class=2)
    data = q2.load_data(resolved_parameters("q2", "smoke", data_dir=str(root), num_classes=3, val_fraction=0.0,
                                            image_size=16))
    assert data.source == str(root) and len(data.train) == 15 and len(data.test) == 6
