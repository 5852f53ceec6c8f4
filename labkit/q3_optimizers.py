"""Question 3: Dogs vs Cats, a small CNN trained with different optimizers, batch sizes, orders and
Adam betas. The notebook holds the parameters, figures and prose; the work is here."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from labkit.data import Batches, ImageSet, load_dogs_vs_cats, stratified_split
from labkit.data.synthetic import ensure_synthetic
from labkit.experiments import Outcome, Runner
from labkit.metrics import wilson_interval
from labkit.models import SmallCNN
from labkit.params import Spec
from labkit.paths import real_data_dir
from labkit.reference import ORIGINAL_TEST_IMAGES, percent, reference_accuracy
from labkit.train import GradientFlow, checkpoint_path, fit, make_optimizer, predict

ORDERS = ("shuffle", "class_sorted", "full_batch")
RUN_SPECS = {
    "optimizer": Spec(str, ("sgd", "adam")),
    "batch_size": Spec(int, min=1),
    "lr": Spec(float, min=0.0),
    "momentum": Spec(float, min=0.0, max=1.0),
    "betas": Spec((list, tuple), note="[beta1, beta2], each in [0, 1)"),
    "epochs": Spec(int, min=1),
    "order": Spec(str, ORDERS, note="(full_batch: one update per epoch, gradients accumulated over batches)"),
}
PARAM_SPECS = {
    "synthetic_per_class": Spec(int, min=4),
    "test_fraction": Spec(float, min=0.01, max=0.99),
    "val_fraction": Spec(float, min=0.01, max=0.99),
    "seeds": Spec(list),
    "gradient_flow_every": Spec(int, min=1),
    "runs_optimizers": Spec(list), "runs_batch_sizes": Spec(list), "runs_order": Spec(list), "runs_betas": Spec(list),
}


@dataclass
class Splits:
    data: ImageSet
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    source: str


def load_data(data_source: str, data_dir: str | None, image_size: int, synthetic_per_class: int,
              test_fraction: float, val_fraction: float, seed: int) -> Splits:
    """Decode Dogs vs Cats once, split 70:30 train/test (stratified, seeded), then carve the
    validation split out of train. Synthetic data includes a few broken files on purpose."""
    if data_source == "synthetic":
        root = Path(data_dir) if data_dir else ensure_synthetic("dogs-vs-cats", per_class=synthetic_per_class,
                                                                image_size=64, layout="kaggle", broken=1, seed=0)
    else:
        root = Path(data_dir) if data_dir else real_data_dir("dogs-vs-cats")
    with warnings.catch_warnings():  # the notebook shows the skipped files' count and an example itself
        warnings.simplefilter("ignore", UserWarning)
        data = load_dogs_vs_cats(root, image_size=image_size)
    train_val, test = stratified_split(data.labels.numpy(), test_fraction, seed)
    tr, va = stratified_split(data.labels[train_val].numpy(), val_fraction, seed)
    return Splits(data, train_val[tr], train_val[va], test, str(root))


def resolve_run(run: dict, defaults: dict) -> dict:
    """A run's full settings: its own keys over the notebook defaults."""
    settings = {"optimizer": "adam", "batch_size": defaults["batch_size"], "lr": defaults["lr"],
                "momentum": 0.0, "betas": [0.9, 0.999], "epochs": defaults["epochs"], "order": "shuffle"}
    settings.update({k: v for k, v in run.items() if k != "name"})
    settings["betas"] = [float(b) for b in settings["betas"]]
    if len(settings["betas"]) != 2 or not all(0.0 <= b < 1.0 for b in settings["betas"]):
        raise ValueError(f"run {run['name']!r}: betas={settings['betas']} is not allowed; allowed: [beta1, beta2], "
                         f"each in [0, 1)")
    return settings


def train_and_test(name: str, settings: dict, splits: Splits, seed: int, device: torch.device,
                   gradient_flow_every: int, context: dict) -> Outcome:
    """Train one run from scratch on the training split, curves on validation, the test split once."""
    d = splits.data
    torch.manual_seed(context["split_seed"] * 1000 + seed)  # `seed` (the split's) and `seeds` both vary runs
    # channels-last: about 20 % faster convolutions for this CNN on the CPU as well as on GPUs
    model = SmallCNN(num_classes=2).to(device, memory_format=torch.channels_last)
    opt = make_optimizer(settings["optimizer"], model.parameters(), settings["lr"], settings["momentum"],
                         settings["betas"])
    full_batch = settings["order"] == "full_batch"
    order = "class_sorted" if settings["order"] == "class_sorted" else "shuffle"
    train = Batches(d.images[splits.train], d.labels[splits.train], settings["batch_size"], order=order,
                    augment=False, device=device, seed=seed, channels_last=True)
    val = Batches(d.images[splits.val], d.labels[splits.val], 256, order="sequential", device=device)
    test = Batches(d.images[splits.test], d.labels[splits.test], 256, order="sequential", device=device)
    flow = GradientFlow(model, every=gradient_flow_every)
    key = {**settings, "seed": seed, **context}
    history = fit(model, train, epochs=settings["epochs"], optimizer=opt, val=val,
                  accumulate="epoch" if full_batch else 1, gradient_flow=flow,
                  checkpoint=checkpoint_path(f"q3-{name}", key), device=device, desc=name, channels_last=True)
    p = predict(model, test, device)
    return Outcome(name, settings, seed, history, p["labels"].numpy(), p["predictions"].numpy(),
                   artifacts={"gradient_flow": flow.summary()})


def run_part(runs: list[dict], defaults: dict, splits: Splits, seeds: list[int], device, runner: Runner,
             gradient_flow_every: int, context: dict) -> dict[str, list[Outcome]]:
    """Every run of one part of the question, over every seed; equal settings are trained once."""
    out = {}
    for run in runs:
        settings = resolve_run(run, defaults)
        out[run["name"]] = [
            runner.run(run["name"], settings, seed,
                       lambda s=seed: train_and_test(run["name"], settings, splits, s, device,
                                                     gradient_flow_every, context))
            for seed in seeds]
    return out


def _pct(v) -> str:
    return "n/a" if v is None or v != v else f"{100 * v:.1f} %"


def _describe(table, name: str) -> str:
    if name not in table.index:
        return f"`{name}` (not run)"
    row = table.loc[name]
    flag = {"diverged": ", **diverged**", "below_chance": ", **below chance**"}.get(row["status"], "")
    spread = f" ± {_pct(row['std_over_seeds'])}" if row["seeds"] > 1 and row["std_over_seeds"] == row["std_over_seeds"] \
        else ""
    return f"`{name}` {_pct(row['accuracy'])}{spread}{flag}"


def discussion(summary, part_b: dict, part_c: dict, part_d: dict, P: dict) -> str:
    """The discussion's prose, with every figure taken from this run's results."""
    from labkit.experiments import noise_verdicts

    s = summary
    lines = ["**(a) Optimizers.** Test accuracy: " + ", ".join(
        _describe(s, n) for n in ("sgd_bs1", "sgd", "sgd_momentum", "adam") if n in s.index) + "."]
    if "sgd_bs1" in s.index and s.loc["sgd_bs1", "status"] != "ok":
        lines.append("Batch-size-1 SGD is flagged: its test accuracy is not above chance for two balanced "
                     f"classes. The original report's {percent('q3', 'sgd_bs1')} for this run is also below "
                     "chance, which points to divergence or a bug there rather than to a property of SGD.")
    lines.append("With the same learning rate and number of epochs, plain mini-batch SGD takes small steps "
                 "in the gradient's direction; momentum accumulates consistent directions and so moves further "
                 "per update; Adam normalises each parameter's step by its recent gradient magnitude, so layers "
                 "with small gradients still learn at the set rate.")
    if part_b:
        verdicts = noise_verdicts(part_b, list(part_b))
        accs = ", ".join(_describe(s, n) for n in part_b)
        if len(verdicts) and (verdicts["verdict"] == "within noise").all():
            verdict = ("every pairwise difference is **within noise** (McNemar's exact test on the same test "
                       "images, p ≥ 0.05), so no batch-size ranking can be claimed from them")
        elif len(verdicts):
            real = verdicts[verdicts["verdict"] != "within noise"]
            verdict = "real differences (p < 0.05): " + "; ".join(
                f"{a} vs {b} (p = {p:.3g})" for a, b, p in zip(real["run A"], real["run B"], real["McNemar p"]))
        else:
            verdict = "no comparison was possible"
        original = [reference_accuracy("q3", n) for n in ("adam_bs16", "adam_bs32", "adam_bs64")]
        n_test = ORIGINAL_TEST_IMAGES["q3"]
        low, high = wilson_interval(round(np.mean(original) * n_test), n_test)
        span, width = max(original) - min(original), high - low
        within = span < width
        lines.append(f"**(b) Batch size.** {accs}: {verdict}. The original's "
                     f"{' / '.join(f'{100 * v:.2f}' for v in original)} % span {100 * span:.2f} percentage "
                     f"points, {'less' if within else 'more'} than the {100 * width:.1f}-point width "
                     f"(±{50 * width:.1f}) of one run's 95 % interval on a test set of {n_test:,} images, so its "
                     f"ranking {'is within noise too' if within else 'may be more than noise'}.")
    if part_c:
        lines.append("**(c) Order and mini-batches.** " + ", ".join(_describe(s, n) for n in part_c) + ". "
                     "In class-sorted order every epoch ends with a long run of one class, so the last updates "
                     "pull the model towards predicting that class and validation accuracy swings from epoch to "
                     "epoch; shuffling makes each mini-batch an unbiased sample of the whole set. With one "
                     "full-batch update per epoch the model gets only as many updates as epochs, each an exact "
                     "gradient but far too few: mini-batches trade a little gradient noise for many more steps "
                     "(and the noise itself helps escape poor regions).")
    if part_d:
        names = [n for n in part_d if n in s.index and s.loc[n, "accuracy"] == s.loc[n, "accuracy"]]
        best = max(names, key=lambda n: s.loc[n, "accuracy"]) if names else None
        lines.append("**(d) Adam's betas.** " + ", ".join(_describe(s, n) for n in part_d) + "." +
                     (f" The best here is `{best}`." if best else "") +
                     " With β = (0, 0) Adam degenerates to a sign-like update of fixed size per step, which is "
                     "noisy late in training; β₁ = 0.99 averages over so many steps that the update reacts "
                     "slowly to changes in the gradient.")
    seeds = P.get("seeds", [0])
    lines.append("**(e) Why Adam.** Per-parameter step sizes make it far less sensitive to the learning rate and "
                 "to badly scaled layers than SGD; its first moment gives the benefit of momentum; bias "
                 "correction keeps the first steps sensible. Its cost is two extra buffers per parameter. "
                 f"These figures come from {len(seeds)} seed(s) " +
                 ("(spread reported above)." if len(seeds) > 1 else
                  "— with one seed, differences of a few points between runs may be noise; the full profile "
                  "uses three seeds."))
    return "\n\n".join(lines)
