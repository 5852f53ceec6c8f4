"""Question 3: Dogs vs Cats, a small CNN trained with different optimizers, batch sizes, orders and
Adam betas. The notebook holds the parameters, figures and prose; the work is here."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from labkit.data import Batches, load_dogs_vs_cats, per_class_subset, stratified_split
from labkit.data.synthetic import ensure_synthetic
from labkit.device import seed_everything
from labkit.questions.contract import Data, Pass, Setting, all_runs, distinct, evaluation, held_out
from labkit.questions.experiments import Outcome, noise_verdicts, verdict_text
from labkit.training.gradflow import GradientFlow
from labkit.models import SmallCNN
from labkit.training import optim
from labkit.params import Spec, from_notebook
from labkit.paths import real_data_dir
from labkit.questions.reference import ORIGINAL_TEST_IMAGES, reference_accuracy
from labkit.runs import PRECISION, Run, checkpoint_path, data_identity, resolve_runs, with_precision
from labkit.text import is_number, percent, status_text
from labkit.training.loop import fit, predict

ORDERS = ("shuffle", "class_sorted", "full_batch")
PARTS = {"optimizers": "(a) optimizers", "batch_sizes": "(b) batch sizes", "order": "(c) order",
         "betas": "(d) Adam's betas"}
RUN_SPECS = {
    **optim.SPECS,
    "batch_size": Spec(int, min=1),
    "epochs": Spec(int, min=1),
    "order": Spec(str, ORDERS, note="(full_batch: one update per epoch, gradients accumulated over batches)"),
    "precision": PRECISION,
}
PARAM_SPECS = {
    "synthetic_per_class": Spec(int, min=4),
    "test_fraction": Spec(float, min=0.01, max=0.99),
    "train_per_class": Spec(int, min=2, optional=True, note="None: every training image"),
    "gradient_flow_every": Spec(int, min=1),
    "precision": PRECISION,
    **{k: optim.SPECS[k] for k in ("optimizer", "momentum", "betas", "weight_decay")},
    **{f"runs_{part}": Spec(list) for part in PARTS},
}
# What a run uses when neither it nor the notebook says otherwise (None: the optimizer's own default).
RUN_DEFAULTS = {"optimizer": "adam", "momentum": None, "betas": None, "weight_decay": None, "order": "shuffle"}


TITLE = "Dogs vs Cats optimizers"
# The real dataset (what `make data` fetches), for the forecast: decoded at the input size, split 70:30.
REAL_SIZES = {"images": 25_000}


def parameters(namespace: dict) -> dict:
    """The notebook's parameters, validated (unknown names refused)."""
    return from_notebook(namespace, PARAM_SPECS, "q3")


def architecture(P: dict) -> str:
    return "small CNN"


def plan(P: dict) -> dict[str, dict[str, list[Run]]]:
    """Every part's runs, resolved: part -> run name -> one Run per training seed."""
    defaults = {**RUN_DEFAULTS, **{k: P[k] for k in optim.SETTINGS}, "batch_size": P["batch_size"],
                "epochs": P["epochs"], "gradient_flow_every": P["gradient_flow_every"], "precision": P["precision"]}
    return {part: resolve_runs(P[f"runs_{part}"], defaults, RUN_SPECS, P["seeds"], f"runs_{part}",
                               check=optim.check_settings) for part in PARTS}


def load_data(P: dict) -> Data:
    """Decode Dogs vs Cats once at the network's input size, split 70:30 train/test (stratified, seeded),
    then carve the validation split out of train. Synthetic data includes a few broken files on purpose."""
    if P["data_source"] == "synthetic":
        root = Path(P["data_dir"]) if P["data_dir"] else ensure_synthetic(
            "dogs-vs-cats", per_class=P["synthetic_per_class"], image_size=64, layout="kaggle", broken=1, seed=0)
    else:
        root = Path(P["data_dir"]) if P["data_dir"] else real_data_dir("dogs-vs-cats")
    with warnings.catch_warnings():  # the notebook shows the skipped files' count and an example itself
        warnings.simplefilter("ignore", UserWarning)
        data = load_dogs_vs_cats(root, image_size=P["image_size"])
    seed = P["seed"]
    train_val, test = stratified_split(data.labels.numpy(), P["test_fraction"], seed, "test_fraction")
    tr, va = stratified_split(data.labels[train_val].numpy(), P["val_fraction"], seed, "val_fraction")
    train, val = train_val[tr], train_val[va]
    # a training subset (the cpu profile's) after test and validation are carved; the test set is never reduced
    train = train[per_class_subset(data.labels[train].numpy(), P["train_per_class"], seed)]
    key = data_identity(data, train.tolist(), val.tolist(), test.tolist())
    return Data(data.subset(train), data.subset(val), data.subset(test), str(root), key, split_seed=seed)


def train_and_test(run: Run, data: Data, device: torch.device, keep_checkpoints: str = "final") -> Outcome:
    """Train one run from scratch on the training split, curves on validation, the test split once.
    ``keep_checkpoints`` (the notebook's parameter) goes beside the run, not into it: it never changes a key."""
    run = with_precision(run, device, "smallcnn", data.train.images.shape[-1])
    seed_everything(run.seed)
    # channels-last: about 20 % faster convolutions for this CNN on the CPU as well as on GPUs
    model = SmallCNN(num_classes=2).to(device, memory_format=torch.channels_last)
    opt = optim.for_run(run, model.parameters())
    order = "class_sorted" if run["order"] == "class_sorted" else "shuffle"
    train = Batches(data.train.images, data.train.labels, run["batch_size"], order=order, augment=False,
                    device=device, seed=run.seed, channels_last=True)
    val = Batches(data.val.images, data.val.labels, 256, order="sequential", device=device,
                  channels_last=True) if len(data.val) else None
    test = Batches(data.test.images, data.test.labels, 256, order="sequential", device=device, channels_last=True)
    flow = GradientFlow(model, every=run["gradient_flow_every"])
    history = fit(model, train, epochs=run["epochs"], optimizer=opt, val=val,
                  accumulate="epoch" if run["order"] == "full_batch" else 1, gradient_flow=flow,
                  checkpoint=checkpoint_path("q3", run, data.key), keep_checkpoints=keep_checkpoints,
                  device=device, desc=run.name, channels_last=True, precision=run["precision"])
    p = predict(model, test, device, run["precision"])
    return Outcome(run.name, run.settings, run.seed, history, p["labels"].numpy(), p["predictions"].numpy(),
                   artifacts={"gradient_flow": flow.summary()}, cost=history.cost(),
                   confidence=p["confidence"].numpy())


# --------------------------------------------------------------------------- sentences with numbers

def describe(table, names) -> str:
    """ "`sgd` 57.5 % ± 1.2 %, `adam` 79.2 %, ..." for the named runs in a summary table."""
    out = []
    for name in names:
        if name not in table.index:
            out.append(f"`{name}` (not run)")
            continue
        row = table.loc[name]
        flag = f", **{status_text(row['status'])}**" if row["status"] != "ok" else ""
        spread = f" ± {percent(row['std_over_seeds'])}" if row["seeds"] > 1 and is_number(row["std_over_seeds"]) \
            else ""
        out.append(f"`{name}` {percent(row['accuracy'])}{spread}{flag}")
    return ", ".join(out)


def batch_size_verdict(part_b: dict, summary=None) -> str:
    """The batch-size runs' pairwise verdicts (at equal epochs: smaller batches make more updates), with their
    update counts, and what the original's published numbers can and cannot tell."""
    verdicts = noise_verdicts(part_b, list(part_b))
    ours_within = len(verdicts) and (verdicts["verdict"] == "within noise").all()
    verdict = verdict_text(verdicts) if len(verdicts) else "no comparison was possible"
    updates = ""
    if summary is not None and "updates" in summary:
        updates = " Updates made: " + ", ".join(f"`{n}` {summary.loc[n, 'updates']:.0f}" for n in part_b
                                                if n in summary.index and is_number(summary.loc[n, "updates"]))
        updates += " (the comparison is at equal epochs and learning rate, not at equal updates)."
    original = [reference_accuracy("q3", n) for n in ("adam_bs16", "adam_bs32", "adam_bs64")]
    n_test = ORIGINAL_TEST_IMAGES["q3"]
    span = max(original) - min(original)
    return (f"{verdict}.{updates} The original's {' / '.join(percent(v, 2, sign=False) for v in original)} % span "
            f"{100 * span:.2f} points on {n_test:,} test images; its predictions and seeds are not published, so "
            f"whether that span is more than noise cannot be judged from its numbers (two independent runs on "
            f"{n_test:,} images differ by up to {100 * two_run_yardstick(float(np.mean(original)), n_test):.1f} "
            f"points by test-set noise alone, 95 %, before any seed-to-seed spread)"
            + (", and our own runs show no real difference either." if ours_within else "."))


def two_run_yardstick(accuracy: float, n: int) -> float:
    """How far two independent runs' accuracies on ``n`` test images may differ by noise alone (95 %):
    1.96 · √2 · SE with SE = √(p (1 − p) / n)."""
    return 1.96 * np.sqrt(2) * np.sqrt(accuracy * (1 - accuracy) / n)


def best_run(table, names) -> str | None:
    ran = [n for n in names if n in table.index and is_number(table.loc[n, "accuracy"])]
    return max(ran, key=lambda n: table.loc[n, "accuracy"]) if ran else None


def passes(P: dict, sizes: dict | None = None) -> list[Pass]:
    """Each run's and seed's training epochs, validation after each epoch, and the test split once."""
    n = (sizes or (REAL_SIZES if P["data_source"] == "real" else {"images": 2 * P["synthetic_per_class"]}))["images"]
    test = held_out(n, P["test_fraction"])
    val = held_out(n - test, P["val_fraction"])
    train = n - test - val
    if P["train_per_class"] is not None:
        train = min(train, 2 * P["train_per_class"])
    out = []
    for run in distinct(all_runs(plan(P))):
        s = Setting("smallcnn", P["image_size"], P["image_size"], run["batch_size"], 2, True,
                    optimizer=run["optimizer"], precision=run["precision"])
        label = f"{run.name} seed {run.seed}"
        out += [Pass("q3", f"{label}: training", s, train * run["epochs"]),
                Pass("q3", f"{label}: validation", evaluation(s, 256), val * run["epochs"]),
                Pass("q3", f"{label}: test", evaluation(s, 256), test)]
    return out


def findings(summary, parts: dict[str, dict], P: dict) -> str:
    """One paragraph per part with this run's figures (the notebook's markdown holds the fixed prose)."""
    seeds = P["seeds"]
    lines = []
    for part, label in PARTS.items():
        outcomes = parts.get(part) or {}
        if not outcomes:
            lines.append(f"**{label}:** skipped.")
            continue
        text = f"**{label}:** test accuracy {describe(summary, outcomes)}."
        if part == "optimizers" and "sgd_bs1" in summary.index and summary.loc["sgd_bs1", "status"] != "ok":
            text += (f" Batch-size-1 SGD is flagged ({status_text(summary.loc['sgd_bs1', 'status'])}); the "
                     f"original report's {percent(reference_accuracy('q3', 'sgd_bs1'), 2)} for it is below chance "
                     f"too.")
        if part == "batch_sizes":
            text += " Between them: " + batch_size_verdict(outcomes, summary)
        if part == "betas" and best_run(summary, outcomes):
            text += f" The best here is `{best_run(summary, outcomes)}`."
        lines.append(text)
    lines.append(f"These figures come from {len(seeds)} training seed(s) " +
                 ("(mean ± standard deviation over seeds above)." if len(seeds) > 1 else
                  "— with one seed, differences of a few points between runs may be noise; the full profile "
                  "uses three seeds."))
    return "\n\n".join(lines)
