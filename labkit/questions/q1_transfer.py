"""Question 1: STL-10 with a pretrained ResNet-50 — features + SVM, the ImageNet classifier mapped to
STL-10 (+ "other"), and fine-tuning with frozen layers. The notebook holds parameters, figures, prose."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from labkit import metrics
from labkit.training import standin
from labkit.data import Batches, STL10_CLASSES, load_stl10, per_class_subset, stratified_split
from labkit.data.synthetic import ensure_synthetic
from labkit.device import seed_everything
from labkit.questions.contract import Data, Pass, Setting, distinct, evaluation, held_out
from labkit.questions.experiments import Outcome, noise_verdicts, verdict_text
from labkit.questions.imagenet import IMAGENET_TO_STL10
from labkit.models import RESNET_STAGES, classifier, resnet
from labkit.training import optim
from labkit.params import NAMED_WEIGHTS, STANDINS, ParameterError, Spec, from_notebook
from labkit.paths import atomic_torch_save, cache_dir, code_fingerprint, real_data_dir, touch
from labkit.runs import PRECISION, Run, checkpoint_path, data_identity, resolve_runs, with_precision
from labkit.training.loop import fit, predict

# What a run may set; anything it does not set comes from the notebook's parameter of the same name.
RUN_SPECS = {
    "feature_layer": Spec(str, ("avgpool", "fc")),
    "svm_kernel": Spec(str, ("linear", "rbf")),
    "svm_c": Spec(float, min=1e-6),
    "freeze_until": Spec(str, RESNET_STAGES),
    "hidden_units": Spec(int, min=0, note="0: a single linear layer as the new head"),
    "dropout": Spec(float, min=0.0, max=0.9),
    **optim.SPECS,
    "batch_size": Spec(int, min=1),
    "epochs": Spec(int, min=1),
    "augment": Spec(bool),
    "val_fraction": Spec(float, min=0.0, max=0.99, note="0: no validation split"),
    "precision": PRECISION,
}
PARAM_SPECS = {
    "weights": Spec(str, note="'standin', 'standin-smoke', 'imagenet' or the path of a ResNet state-dict file"),
    "arch": Spec(str, ("resnet50", "resnet18")),
    "synthetic_train_per_class": Spec(int, min=2),
    "synthetic_test_per_class": Spec(int, min=1),
    "train_per_class": Spec(int, min=2, optional=True, note="None: every training image"),
    **{k: v for k, v in RUN_SPECS.items() if k not in ("lr", "batch_size", "epochs", "val_fraction")},
    "runs": Spec(list, note="names: svm, zero_shot, zero_shot_restricted, finetune"),
}
# Each method (a run's name) and the settings it uses: its checkpoint and feature keys hold only these.
BACKBONE = ["weights", "arch", "image_size"]
METHODS = {
    "svm": BACKBONE + ["feature_layer", "svm_kernel", "svm_c"],
    "zero_shot": BACKBONE,
    "zero_shot_restricted": BACKBONE,
    "finetune": BACKBONE + ["freeze_until", "hidden_units", "dropout", *optim.SETTINGS, "batch_size", "epochs",
                            "augment", "val_fraction", "precision"],
}
DETERMINISTIC = ("svm", "zero_shot", "zero_shot_restricted")  # no training seed: one run whatever `seeds` holds
OTHER = "other"
OTHER_INDEX = len(STL10_CLASSES)  # the zero-shot rule's extra class


TITLE = "STL-10 transfer learning"
# The notebook's parts and the methods (run names) each holds.
PARTS = {"svm": ("svm",), "zero_shot": ("zero_shot", "zero_shot_restricted"), "finetune": ("finetune",)}
# The real dataset's sizes (what `make data` fetches), for the forecast.
REAL_SIZES = {"train": 5_000, "test": 8_000, "stored_size": 96, "classes": 10}


def parameters(namespace: dict) -> dict:
    """The notebook's parameters, validated (unknown names refused)."""
    return from_notebook(namespace, PARAM_SPECS, "q1")


def architecture(P: dict) -> str:
    return {"resnet50": "ResNet-50", "resnet18": "ResNet-18"}[P["arch"]]


def plan(P: dict) -> dict[str, dict[str, list[Run]]]:
    """The runs, resolved, by part: part -> method name -> its Runs (one per training seed for fine-tuning,
    one otherwise); a part whose methods are not in ``runs`` is empty."""
    for i, run in enumerate(P["runs"]):
        name = run.get("name") if isinstance(run, dict) else None
        if name not in METHODS:
            raise ParameterError(f"runs[{i}]: name={name!r} is not allowed; allowed: {', '.join(METHODS)}")
        extra = sorted(set(run) - {"name"} - set(METHODS[name]))
        if extra:
            raise ParameterError(f"runs[{i}] ({name}): key(s) {', '.join(map(repr, extra))} do not apply to "
                                 f"{name}; allowed: {', '.join(k for k in METHODS[name] if k in RUN_SPECS)}")
    defaults = {k: P[k] for keys in METHODS.values() for k in keys}
    # the method is a setting too: the two zero-shot rules share every other setting but are not one run
    runs = resolve_runs(P["runs"], defaults, RUN_SPECS, P["seeds"], keys_for=METHODS.__getitem__,
                        check=lambda name, settings: optim.check_settings(name, {"method": name, **settings}))
    runs = {name: per_seed[:1] if name in DETERMINISTIC else per_seed for name, per_seed in runs.items()}
    return {part: {name: per_seed for name, per_seed in runs.items() if name in names}
            for part, names in PARTS.items()}


def load_data(P: dict) -> Data:
    """STL-10's training and test files. ``train`` holds every training image (the SVM's); fine-tuning carves its
    validation split (its own ``val_fraction``) from it with the split seed, so ``val`` is empty here."""
    if P["data_source"] == "synthetic":
        root = Path(P["data_dir"]) if P["data_dir"] else ensure_synthetic(
            "stl10", train_per_class=P["synthetic_train_per_class"], test_per_class=P["synthetic_test_per_class"],
            seed=0)
    else:
        root = Path(P["data_dir"]) if P["data_dir"] else real_data_dir("stl10")
    train, test = load_stl10(root, "train"), load_stl10(root, "test")
    # a training subset (the cpu profile's) serves the SVM and fine-tuning alike; the test set is never reduced
    train = train.subset(per_class_subset(train.labels.numpy(), P["train_per_class"], P["seed"]))
    key = data_identity(train, test, P["seed"])
    return Data(train, train.subset([]), test, str(root), key, split_seed=P["seed"])


def source_model(arch: str, weights: str) -> tuple[torch.nn.Module, dict[int, int], str]:
    """The pretrained classifier with its source head, its source-class -> STL-10 map, and the
    source's name ("ImageNet-1k" or the stand-in's synthetic source task)."""
    model = resnet(arch, weights)
    n = model.fc.out_features
    if weights in STANDINS or (weights not in ("imagenet",) and n == len(standin.source_classes())):
        return model, standin.source_to_stl10(), f"the stand-in's synthetic source task ({n} classes)"
    if n == 1000:
        return model, dict(IMAGENET_TO_STL10), "ImageNet-1k (1000 classes)"
    raise ValueError(f"weights={weights!r}: its classifier has {n} outputs; the zero-shot part needs "
                     f"ImageNet's 1000 classes (or the stand-in's). Use weights='imagenet' or 'standin'.")


def _weights_id(weights: str) -> str:
    path = Path(weights).expanduser()
    if weights not in NAMED_WEIGHTS and path.is_file():
        st = path.stat()
        return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return weights + (str(standin.SETTINGS[weights]) if weights in STANDINS else "")


@torch.no_grad()
def extract(model: torch.nn.Module, images: torch.Tensor, *, image_size: int, device: torch.device,
            weights: str, arch: str, batch_size: int = 128) -> dict:
    """Pooled features (2048-d for ResNet-50) and source-class logits for every image, in one
    inference pass in fp32, cached under ``data/cache/features/`` keyed by the weights,
    the image size and the images themselves, so re-running with other SVM settings is instant."""
    digest = hashlib.sha1(images.numpy().tobytes()).hexdigest()[:16]
    # fp32 on every device: with logits of 10 to 20, bf16's resolution (about 0.06) could flip near-ties of
    # the zero-shot argmax over 1,000 classes; the key holds the device type and the precision anyway
    key = hashlib.sha1(f"{arch}|{_weights_id(weights)}|{image_size}|{digest}|{device.type}|fp32|"
                       f"{code_fingerprint()}".encode()).hexdigest()[:20]
    path = cache_dir("features") / f"{arch}-{key}.pt"
    if path.exists():
        touch(path)  # its last use, for `python -m labkit cache`
        return torch.load(path, weights_only=True)
    model = model.to(device, memory_format=torch.channels_last).eval()
    pooled = []
    hook = model.avgpool.register_forward_hook(lambda m, i, o: pooled.append(o.flatten(1).float().cpu()))
    # fp32 means fp32: recent NVIDIA GPUs would run the convolutions and matmuls in TF32 (10-bit mantissas)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        out = predict(model, Batches(images, torch.zeros(len(images), dtype=torch.long), batch_size,
                                     order="sequential", image_size=image_size, device=device,
                                     channels_last=True), device, precision="fp32")
    finally:
        hook.remove()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    blob = {"avgpool": torch.cat(pooled), "fc": out["logits"]}
    atomic_torch_save(path, blob)
    return blob


def train_svm(train_x: np.ndarray, train_y: np.ndarray, kernel: str, c: float, seed: int):
    """Standardised features -> one-vs-rest SVM (one binary SVM per class, as in the original).

    libsvm's exact solver (``SVC``) rather than liblinear's ``LinearSVC``: with more feature
    dimensions than images (2048 vs a few thousand) liblinear's dual solver converges slowly,
    while libsvm solves STL-10's 5,000 training images in seconds."""
    base = SVC(C=c, kernel=kernel, gamma="scale", random_state=seed)
    model = make_pipeline(StandardScaler(), OneVsRestClassifier(base))
    return model.fit(train_x, train_y)


def zero_shot(logits: torch.Tensor, mapping: dict[int, int], restricted: bool,
              num_classes: int = OTHER_INDEX) -> np.ndarray:
    """STL-10 predictions from source-class logits. Original rule: argmax over all source classes,
    mapped, unmapped -> ``other`` (index ``num_classes``). Restricted rule: argmax over the mapped
    source classes only (never ``other``)."""
    target = torch.full((logits.shape[1],), num_classes, dtype=torch.long)
    for src, tgt in mapping.items():
        target[src] = tgt
    if restricted:
        masked = logits.clone()
        masked[:, target == num_classes] = float("-inf")
        return target[masked.argmax(1)].numpy()
    return target[logits.argmax(1)].numpy()


def chosen_probability(logits: torch.Tensor, mapping: dict[int, int], restricted: bool) -> np.ndarray:
    """The softmax probability of the source class each rule of :func:`zero_shot` picks (the largest of all
    source classes, or of the mapped ones only)."""
    probs = logits.float().softmax(1)
    if restricted:
        probs = probs[:, sorted(mapping)]
    return probs.amax(1).numpy()


def features(data: Data, run: Run, device: torch.device) -> tuple[dict, dict, dict[int, int], str]:
    """The backbone's features and source logits for the training and test images (cached), with the
    source-class map and the source's name."""
    model, mapping, source_name = source_model(run["arch"], run["weights"])
    feats = {split: extract(model, getattr(data, split).images, image_size=run["image_size"], device=device,
                            weights=run["weights"], arch=run["arch"]) for split in ("train", "test")}
    return feats["train"], feats["test"], mapping, source_name


def train_and_test(run: Run, data: Data, device: torch.device, keep_checkpoints: str = "final") -> Outcome:
    """One method, named by the run: "svm", "zero_shot", "zero_shot_restricted" or "finetune".
    ``keep_checkpoints`` (the notebook's parameter) goes beside the run, not into it: it never changes a key."""
    y_test = data.test.labels.numpy()
    method = run["method"]
    if method == "finetune":
        run = with_precision(run, device, run["arch"], run["image_size"])
        history, test = finetune(run, data, device, keep_checkpoints)
        pred = test["predictions"].numpy()
        ok = history.status == "ok"
        return Outcome(run.name, run.settings, run.seed, history, y_test, pred,
                       metrics={"macro_f1": metrics.macro_f1(y_test, pred, OTHER_INDEX) if ok else None},
                       cost=history.cost(), confidence=test["confidence"].numpy())
    train, test, mapping, source_name = features(data, run, device)
    if method == "svm":
        layer = run["feature_layer"]
        started = time.perf_counter()
        svm = train_svm(train[layer].numpy(), data.train.labels.numpy(), run["svm_kernel"], run["svm_c"], run.seed)
        seconds = time.perf_counter() - started  # the SVM's fit; the cached feature pass is not training
        pred = svm.predict(test[layer].numpy())
        roc = metrics.roc_curves(y_test, svm.decision_function(test[layer].numpy()), data.train.classes)
        return Outcome(run.name, run.settings, run.seed, None, y_test, pred,
                       metrics={"macro_f1": metrics.macro_f1(y_test, pred, OTHER_INDEX),
                              "auc_macro": roc["macro"]["auc"], "auc_micro": roc["micro"]["auc"]},
                       artifacts={"roc": roc, "dim": test[layer].shape[1]},
                       cost={"train_seconds": seconds, "train_images_per_second": len(data.train) / seconds,
                             "epochs": None, "updates": None, "torch_threads": None})
    restricted = method == "zero_shot_restricted"
    pred = zero_shot(test["fc"], mapping, restricted=restricted)
    extra = {"other_rate": float((pred == OTHER_INDEX).mean())} if method == "zero_shot" else {}
    return Outcome(run.name, run.settings, run.seed, None, y_test, pred, metrics=extra,
                   artifacts={"source_name": source_name, "mapped": len(mapping)},
                   confidence=chosen_probability(test["fc"], mapping, restricted))


def finetune(run: Run, data: Data, device: torch.device, keep_checkpoints: str = "final"):
    """New 10-way head on the pretrained backbone, frozen up to ``freeze_until``; curves on a validation
    split carved from train; the test set evaluated once. Returns (history, test predictions)."""
    seed_everything(run.seed)
    model = classifier(resnet(run["arch"], run["weights"]), num_classes=OTHER_INDEX, hidden=run["hidden_units"],
                       freeze_until=run["freeze_until"], dropout=run["dropout"]).to(device)
    train_idx, val_idx = stratified_split(data.train.labels.numpy(), run["val_fraction"], data.split_seed,
                                          "val_fraction")
    tr, va = data.train.subset(train_idx), data.train.subset(val_idx)
    # channels-last helps ResNet convolutions on CPUs too (about 10 % here), not only on GPUs
    common = dict(image_size=run["image_size"], device=device, channels_last=True)
    opt = optim.for_run(run, model.parameters())
    history = fit(model, Batches(tr.images, tr.labels, run["batch_size"], augment=run["augment"], seed=run.seed,
                                 **common),
                  epochs=run["epochs"], optimizer=opt,
                  val=Batches(va.images, va.labels, 128, order="sequential", **common) if len(va) else None,
                  checkpoint=checkpoint_path("q1", run, data.key), keep_checkpoints=keep_checkpoints, device=device,
                  desc="fine-tune", channels_last=True, precision=run["precision"])
    test = predict(model, Batches(data.test.images, data.test.labels, 128, order="sequential", **common), device,
                   run["precision"])
    return history, test


def passes(P: dict, sizes: dict | None = None) -> list[Pass]:
    """One feature pass over the training and test images (shared by the SVM and the zero-shot rules), and each
    fine-tuning seed's training epochs, validation and test."""
    sizes = sizes or (REAL_SIZES if P["data_source"] == "real" else {
        "train": 10 * P["synthetic_train_per_class"], "test": 10 * P["synthetic_test_per_class"], "stored_size": 96,
        "classes": 10})
    plan_ = plan(P)
    n_train, n_test, stored = sizes["train"], sizes["test"], sizes["stored_size"]
    if P["train_per_class"] is not None:
        n_train = min(n_train, P["train_per_class"] * sizes["classes"])
    out = []
    if plan_["svm"] or plan_["zero_shot"]:
        features = Setting(P["arch"], stored, P["image_size"], 128, 1000, train=False, precision="fp32")
        out.append(Pass("q1", "feature pass (train + test)", features, n_train + n_test))
    for run in distinct(plan_["finetune"].get("finetune", [])):
        val = held_out(n_train, run["val_fraction"])
        s = Setting(run["arch"], stored, run["image_size"], run["batch_size"], OTHER_INDEX, True, run["augment"],
                    run["freeze_until"], run["optimizer"], run["precision"])
        out += [Pass("q1", f"finetune seed {run.seed}: training", s, (n_train - val) * run["epochs"]),
                Pass("q1", f"finetune seed {run.seed}: validation", evaluation(s, 128), val * run["epochs"]),
                Pass("q1", f"finetune seed {run.seed}: test", evaluation(s, 128), n_test)]
    return out


def findings(summary, parts: dict, P: dict) -> str:
    """This run's figures for the conclusion (the notebook's markdown holds the fixed prose)."""
    outcomes = {name: runs for part in parts.values() for name, runs in part.items()}
    from labkit.text import is_number, percent, status_text

    labels = {"svm": "features + SVM", "zero_shot": "zero-shot mapping (original rule)",
              "zero_shot_restricted": "zero-shot mapping (restricted rule)", "finetune": "fine-tuning"}
    acc = {k: summary.loc[k, "accuracy"] for k in summary.index}
    ranked = sorted((k for k in acc if is_number(acc[k])), key=lambda k: -acc[k])
    lines = ["**Ranking in this run:** " + " > ".join(f"{labels[k]} ({percent(acc[k])})" for k in ranked) + "."]
    if is_number(acc.get("finetune")) and is_number(acc.get("svm")):
        verdicts = noise_verdicts(outcomes, ["finetune", "svm"], DETERMINISTIC)
        lines.append(f"Fine-tuning vs the SVM on the same {len(outcomes['svm'][0].y_true)} test images: "
                     f"{verdict_text(verdicts)}.")
    flagged = [k for k in summary.index if summary.loc[k, "status"] != "ok"]
    if flagged:
        lines.append("Flagged runs: " + ", ".join(f"{labels[k]} ({status_text(summary.loc[k, 'status'])})"
                                                  for k in flagged) + ".")
    if "zero_shot" in outcomes and "other_rate" in outcomes["zero_shot"][0].metrics:
        zs = outcomes["zero_shot"][0]
        lines.append(f"The original rule predicts `other` for {percent(zs.metrics['other_rate'])} of the test images "
                     f"({zs.artifacts['source_name']}).")
    return "\n\n".join(lines)
