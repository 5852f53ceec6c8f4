"""The sentences of the notebooks that hold numbers (the fixed prose lives in their markdown cells): the setup
line, each Q1 method's result, Q2's retrieval labels. Not on the path from files to predictions: editing them
retrains nothing."""
from __future__ import annotations

from labkit import metrics
from labkit.text import percent


def setup_line(P: dict, device, more: dict | None = None) -> str:
    """"**profile** `demo` · **data** synthetic · **device** `cpu` · ...": what this run of the notebook is."""
    items = {"profile": f"`{P['profile']}`", "data": P["data_source"], "device": f"`{device}`",
             **(more or {}), "input size": f"{P['image_size']} px", "training seeds": str(P["seeds"])}
    return " · ".join(f"**{label}** {value}" for label, value in items.items())


def svm(outcome, y_test) -> str:
    s, roc = outcome.settings, outcome.artifacts["roc"]
    return (f"**SVM on `{s['feature_layer']}` features ({outcome.artifacts['dim']}-d, {s['svm_kernel']} kernel, "
            f"C = {s['svm_c']}): test accuracy {metrics.accuracy(y_test, outcome.y_pred)}**; macro-average AUC "
            f"{roc['macro']['auc']:.3f}.")


def zero_shot(outcomes: dict, y_test) -> str:
    """Both rules' accuracy, and how often the original rule answers ``other``."""
    first = next(iter(outcomes.values()))
    parts = [f"Source: {first.artifacts['source_name']}, {first.artifacts['mapped']} source classes mapped."]
    for name, o in outcomes.items():
        other = (f", with `other` predicted for {percent(o.metrics['other_rate'])} of the test images."
                 if "other_rate" in o.metrics else ".")
        parts.append(f"**{name}: {metrics.accuracy(y_test, o.y_pred)}**{other}")
    return " ".join(parts)


def finetune(outcome, y_test) -> str:
    result = (f"{metrics.accuracy(y_test, outcome.y_pred)}" if outcome.accuracy is not None
              else f"n/a — training diverged: {outcome.history.message}")
    return f"**Fine-tuned (frozen up to `{outcome.settings['freeze_until']}`): test accuracy {result}**"


def retrieval(outcome) -> str:
    """"P@1 95.0 %, MAP@R 81.2 %" for a Q2 run's embeddings."""
    return f"P@1 {percent(outcome.metrics.get('precision_at_1'))}, MAP@R {percent(outcome.metrics.get('map_at_r'))}"
