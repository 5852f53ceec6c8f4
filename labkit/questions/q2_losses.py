"""Question 2: Tiny ImageNet (a class subset), a pretrained ResNet-18 fine-tuned with cross-entropy,
cross-entropy + triplet loss, and cross-entropy + center loss; classification and retrieval metrics."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from labkit import metrics
from labkit.data import Batches, decode_size, load_tiny_imagenet, per_class_subset, stratified_split
from labkit.data.synthetic import ensure_synthetic
from labkit.device import seed_everything
from labkit.questions.contract import Data, Pass, Setting, all_runs, distinct, evaluation, held_out
from labkit.questions.experiments import Outcome
from labkit.training.losses import LOSSES, MINERS, center_term, cross_entropy_term, triplet_term
from labkit.models import classifier, resnet
from labkit.training import optim
from labkit.params import ParameterError, Spec, from_notebook
from labkit.paths import real_data_dir
from labkit.runs import PRECISION, Run, checkpoint_path, data_identity, resolve_runs, with_precision
from labkit.training.loop import fit, predict

TINY_IMAGENET_SIZE = 64  # Tiny ImageNet's stored images are 64 x 64
# What a run may set; anything it does not set comes from the notebook's parameter of the same name.
RUN_SPECS = {**optim.SPECS, "loss": Spec(str, LOSSES), "loss_weight": Spec(float, min=0.0),
             "epochs": Spec(int, min=1), "batch_size": Spec(int, min=2), "margin": Spec(float, min=0.0),
             "miner": Spec(str, MINERS), "m_per_class": Spec(int, min=2),
             "center_alpha": Spec(float, min=1e-6, max=1.0), "augment": Spec(bool), "precision": PRECISION}
PARAM_SPECS = {
    "weights": Spec(str, note="'standin', 'standin-smoke', 'imagenet' or the path of a ResNet-18 state-dict file"),
    "num_classes": Spec(int, min=2, max=200),
    "class_order": Spec(str, ("sorted", "wnids")),
    "synthetic_train_per_class": Spec(int, min=4),
    "synthetic_val_per_class": Spec(int, min=1),
    "train_per_class": Spec(int, min=2, optional=True, note="None: every training image"),
    "margin": RUN_SPECS["margin"],
    "miner": RUN_SPECS["miner"],
    "m_per_class": RUN_SPECS["m_per_class"],
    "center_alpha": RUN_SPECS["center_alpha"],
    "embedding_method": Spec(str, ("pca", "tsne")),
    "embedding_classes": Spec(int, min=2),
    "augment": Spec(bool),
    "precision": PRECISION,
    **{k: optim.SPECS[k] for k in ("optimizer", "momentum", "betas", "weight_decay")},
    "runs": Spec(list),
}


TITLE = "Tiny ImageNet losses"
# The real dataset's sizes (what `make data` fetches), for the forecast; its val split is the test set here.
REAL_SIZES = {"train_per_class": 500, "val_per_class": 50, "stored_size": 64}


def parameters(namespace: dict) -> dict:
    """The notebook's parameters, validated (unknown names refused)."""
    return from_notebook(namespace, PARAM_SPECS, "q2")


def architecture(P: dict) -> str:
    return "ResNet-18"


def plan(P: dict) -> dict[str, dict[str, list[Run]]]:
    """The runs, resolved, in one part: ``{"losses": {run name: one Run per training seed}}``."""
    defaults = {"loss": "ce", "loss_weight": 0.0, **{k: P[k] for k in (
        *optim.SETTINGS, "epochs", "batch_size", "margin", "miner", "m_per_class", "center_alpha", "augment",
        "weights", "image_size", "precision")}}
    return {"losses": resolve_runs(P["runs"], defaults, RUN_SPECS, P["seeds"],
                                   check=lambda name, settings: _check_run(name, settings, P["num_classes"]))}


def _check_run(name: str, settings: dict, num_classes: int) -> dict:
    """The optimizer rule (:func:`labkit.training.optim.check_settings`); P x K batches (the triplet run's) need
    batch_size = P x m_per_class with P distinct classes."""
    settings = optim.check_settings(name, settings)
    if settings["loss"] != "ce_triplet":
        return settings
    batch, m = settings["batch_size"], settings["m_per_class"]
    if batch % m:
        raise ParameterError(f"run {name!r}: batch_size={batch} must be a multiple of m_per_class={m} for the "
                             f"triplet run's P x K batches (e.g. batch_size={max(m, batch // m * m)})")
    if batch // m > num_classes:
        raise ParameterError(
            f"run {name!r}: batch_size={batch} with m_per_class={m} needs {batch // m} classes per batch, but "
            f"num_classes={num_classes}: use num_classes >= {batch // m}, or batch_size <= {num_classes * m}, "
            f"or m_per_class >= {-(-batch // num_classes)} (a divisor of batch_size)")
    return settings


def load_data(P: dict) -> Data:
    """The first ``num_classes`` classes: their training images, minus a validation share carved for the curves,
    and Tiny ImageNet's official val split as the test set (evaluated once)."""
    num_classes = P["num_classes"]
    if P["data_source"] == "synthetic":
        root = Path(P["data_dir"]) if P["data_dir"] else ensure_synthetic(
            "tiny-imagenet-200", num_classes=num_classes, train_per_class=P["synthetic_train_per_class"],
            val_per_class=P["synthetic_val_per_class"], test_images=5, image_size=TINY_IMAGENET_SIZE, seed=0)
    else:
        root = Path(P["data_dir"]) if P["data_dir"] else real_data_dir("tiny-imagenet-200")
    size = decode_size(P["image_size"], TINY_IMAGENET_SIZE)
    train_all = load_tiny_imagenet(root, "train", num_classes, P["class_order"], image_size=size)
    test = load_tiny_imagenet(root, "val", num_classes, P["class_order"], image_size=size)
    tr, va = stratified_split(train_all.labels.numpy(), P["val_fraction"], P["seed"], "val_fraction")
    # a training subset (the cpu profile's) after the validation share is carved; the test set is never reduced
    tr = tr[per_class_subset(train_all.labels[tr].numpy(), P["train_per_class"], P["seed"])]
    train, val = train_all.subset(tr), train_all.subset(va)
    key = data_identity(train, val, test)
    return Data(train, val, test, str(root), key)


def check_pk_batches(run: Run, labels: torch.Tensor) -> None:
    """What P x K batches need of the training split, checked with the data in hand: at least one whole batch
    (pytorch-metric-learning would stop on a bare assertion), and ``m_per_class`` images of every class (fewer would
    be drawn with replacement: the same image twice, a positive at distance zero)."""
    n, batch, m = len(labels), run["batch_size"], run["m_per_class"]
    if n < batch:
        raise ParameterError(f"run {run.name!r}: the training split holds {n} images, fewer than one P x K batch "
                             f"(batch_size={batch}); lower batch_size or val_fraction, or use more training images")
    counts = torch.bincount(labels)
    present = counts[counts > 0]
    if len(present) and int(present.min()) < m:
        raise ParameterError(f"run {run.name!r}: m_per_class={m} but a class has only {int(present.min())} training "
                             f"images; lower m_per_class (and batch_size with it) or val_fraction")


class PKSampler:
    """Class-balanced P x K batches: ``batch_size / m_per_class`` classes, ``m_per_class`` images each.

    pytorch-metric-learning's ``MPerClassSampler`` draws them, but from numpy's global generator and while
    reordering its own label list every epoch, so a resumed run would draw other batches. Here each epoch
    draws with a fresh sampler from a generator seeded by the run's seed and the epoch (``set_epoch``, which
    :class:`labkit.data.Batches` calls), like ``Batches``' own shuffle: resumed runs see the same batches.
    """

    def __init__(self, labels: torch.Tensor, m_per_class: int, batch_size: int, seed: int = 0):
        if batch_size % m_per_class:
            raise ValueError(f"batch_size={batch_size} must be a multiple of m_per_class={m_per_class} for "
                             f"P x K batches")
        self.labels, self.m_per_class, self.batch_size, self.seed = labels.numpy(), m_per_class, batch_size, seed
        self.length = (len(labels) // batch_size) * batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        from pytorch_metric_learning.samplers import MPerClassSampler
        from pytorch_metric_learning.utils import common_functions as c_f
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sampler = MPerClassSampler(self.labels, self.m_per_class, batch_size=self.batch_size,
                                       length_before_new_iter=self.length)
        saved = c_f.NUMPY_RANDOM  # the library draws from this module attribute
        c_f.NUMPY_RANDOM = np.random.RandomState((self.seed * 1_000_003 + self.epoch) % 2**32)
        try:
            return iter(list(sampler))
        finally:
            c_f.NUMPY_RANDOM = saved


def train_and_test(run: Run, data: Data, device: torch.device, keep_checkpoints: str = "final") -> Outcome:
    """Fine-tune the pretrained ResNet-18 with the run's loss; curves on validation, the test set once.
    ``keep_checkpoints`` (the notebook's parameter) goes beside the run, not into it: it never changes a key."""
    num_classes = len(data.train.classes)
    run = with_precision(run, device, "resnet18", run["image_size"])
    seed_everything(run.seed)
    model = classifier(resnet("resnet18", run["weights"]), num_classes=num_classes).to(device)
    terms = [cross_entropy_term()]
    order = "shuffle"
    if run["loss"] == "ce_triplet":
        check_pk_batches(run, data.train.labels)
        terms.append(triplet_term(run["loss_weight"], run["margin"], run["miner"]))
        order = PKSampler(data.train.labels, run["m_per_class"], run["batch_size"], seed=run.seed)
    elif run["loss"] == "ce_center":
        terms.append(center_term(run["loss_weight"], num_classes, model.head.in_features, run["center_alpha"],
                                 device))
    # channels-last with bf16 (1.45x on a 2-core AVX512-BF16 CPU at 64 px); in fp32 on a CPU it is slower (0.9x)
    common = dict(image_size=run["image_size"], device=device,
                  channels_last=device.type == "cuda" or run["precision"] == "bf16")
    train = Batches(data.train.images, data.train.labels, run["batch_size"], order=order, augment=run["augment"],
                    seed=run.seed, drop_last=run["loss"] == "ce_triplet", **common)
    val = Batches(data.val.images, data.val.labels, 256, order="sequential", **common) if len(data.val) else None
    test = Batches(data.test.images, data.test.labels, 256, order="sequential", **common)
    opt = optim.for_run(run, model.parameters())
    history = fit(model, train, epochs=run["epochs"], optimizer=opt, val=val, loss_terms=terms,
                  checkpoint=checkpoint_path("q2", run, data.key), keep_checkpoints=keep_checkpoints, device=device,
                  desc=run.name, channels_last=common["channels_last"], precision=run["precision"])
    p = predict(model, test, device, run["precision"])
    y, pred = p["labels"].numpy(), p["predictions"].numpy()
    out = Outcome(run.name, run.settings, run.seed, history, y, pred,
                  artifacts={"embeddings": p["embeddings"].numpy()}, cost=history.cost(),
                  confidence=p["confidence"].numpy())
    if history.status == "ok":
        out.metrics = {"macro_f1": metrics.macro_f1(y, pred, num_classes), **retrieval(p["embeddings"], p["labels"])}
    return out


def retrieval(embeddings: torch.Tensor, labels: torch.Tensor) -> dict:
    """Precision@1 and MAP@R of the test embeddings retrieving each other (leave-one-out), L2-normalised."""
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN
    # Exact k-NN in torch (faiss is an optional extra of pytorch-metric-learning, not needed at this size).
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"),
                              knn_func=CustomKNN(CosineSimilarity()), device=torch.device("cpu"))
    emb = F.normalize(embeddings.float(), dim=1)
    acc = calc.get_accuracy(emb, labels, emb, labels, ref_includes_query=True)
    return {"precision_at_1": float(acc["precision_at_1"]), "map_at_r": float(acc["mean_average_precision_at_r"])}


def project_2d(embeddings: np.ndarray, method: str, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    emb = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    if method == "tsne":
        return TSNE(2, init="pca", random_state=seed, perplexity=min(30, max(5, len(emb) // 4))).fit_transform(emb)
    return PCA(2, random_state=seed).fit_transform(emb)


def passes(P: dict, sizes: dict | None = None) -> list[Pass]:
    """Each run's and seed's training epochs (the triplet run's P x K batches drop the last partial one),
    validation after each epoch, and the test set once."""
    sizes = sizes or (REAL_SIZES if P["data_source"] == "real" else {
        "train_per_class": P["synthetic_train_per_class"], "val_per_class": P["synthetic_val_per_class"],
        "stored_size": TINY_IMAGENET_SIZE})
    n = P["num_classes"] * sizes["train_per_class"]
    val, test = held_out(n, P["val_fraction"]), P["num_classes"] * sizes["val_per_class"]
    out = []
    for run in distinct(all_runs(plan(P))):
        s = Setting("resnet18", sizes["stored_size"], run["image_size"], run["batch_size"], P["num_classes"], True,
                    run["augment"], optimizer=run["optimizer"], precision=run["precision"])
        train = n - val if P["train_per_class"] is None else min(n - val, P["train_per_class"] * P["num_classes"])
        if run["loss"] == "ce_triplet":
            train = train // run["batch_size"] * run["batch_size"]
        label = f"{run.name} seed {run.seed}"
        out += [Pass("q2", f"{label}: training", s, train * run["epochs"]),
                Pass("q2", f"{label}: validation", evaluation(s, 256), val * run["epochs"]),
                Pass("q2", f"{label}: test", evaluation(s, 256), test)]
    return out


def embedding_view(outcome, n_classes: int, method: str) -> dict | None:
    """The first ``n_classes`` classes' test embeddings projected to 2-D (``method``: pca or tsne), with their labels
    and the run's retrieval figures; None for a run with no embeddings to show (diverged, too few points)."""
    from labkit.questions.sentences import retrieval
    shown = np.isin(outcome.y_true, np.arange(n_classes))
    if outcome.accuracy is None or shown.sum() < 3:
        return None
    return {"points": project_2d(outcome.artifacts["embeddings"][shown], method, outcome.seed),
            "labels": outcome.y_true[shown], "retrieval": retrieval(outcome)}


def summary_view(summary):
    """The summary for reading, with macro-F1, P@1 and MAP@R beside the original's macro-F1."""
    import pandas as pd

    from labkit.questions.experiments import pretty
    from labkit.questions.reference import REFERENCE
    from labkit.text import is_number
    view = pretty(summary)
    for key in ("macro_f1", "precision_at_1", "map_at_r"):
        view[key] = [f"{v:.3f}" if is_number(v) else "" for v in summary.get(key, pd.Series(index=summary.index))]
    view["original macro-F1"] = [REFERENCE["q2"].get(n, {}).get("macro_f1", "") for n in summary.index]
    return view


def findings(summary, parts: dict, P: dict) -> str:
    """This run's figures for the conclusion (the notebook's markdown holds the fixed prose)."""
    outcomes = {name: runs for part in parts.values() for name, runs in part.items()}
    from labkit.questions.experiments import noise_verdicts, verdict_text
    from labkit.text import is_number, percent

    names = list(summary.index)
    lines = ["**Test accuracy:** " + ", ".join(f"`{n}` {percent(summary.loc[n, 'accuracy'])}" for n in names) +
             ". **Retrieval (precision@1 / MAP@R):** " +
             ", ".join(f"`{n}` {percent(summary.loc[n].get('precision_at_1'))} / "
                       f"{percent(summary.loc[n].get('map_at_r'))}" for n in names) + "."]
    flagged = [n for n in names if summary.loc[n, "status"] != "ok"]
    if flagged:
        lines.append("Flagged runs: " + ", ".join(f"`{n}` ({summary.loc[n, 'status']})" for n in flagged) + ".")
    verdicts = noise_verdicts(outcomes, [n for n in names if n in outcomes])
    if len(verdicts):
        lines.append("Pairwise, Holm-adjusted over the pairs: " + verdict_text(verdicts) + ".")
    retrieval = {n: summary.loc[n].get("map_at_r") for n in names}
    if is_number(retrieval.get("ce_triplet")) and is_number(retrieval.get("ce")):
        better = retrieval["ce_triplet"] > retrieval["ce"]
        lines.append(f"Retrieval here: the triplet run's MAP@R ({percent(retrieval['ce_triplet'])}) is "
                     f"{'above' if better else 'not above'} cross-entropy's ({percent(retrieval['ce'])}), so the "
                     f"idea that the triplet loss helps retrieval more {'holds' if better else 'does not hold'} in "
                     f"this run.")
    return "\n\n".join(lines)
