"""The original lab report's numbers, once, as data, as fractions: this module is the project's only
copy of them (notebooks, prose and the report index all read them from here).

Tables and the report show these beside our own results, always labelled as the
original report's. ``None`` where the original gave no number.
"""
from __future__ import annotations

from labkit.data.loaders import STL10_CLASSES
from labkit.text import percent

REFERENCE: dict[str, dict[str, dict]] = {
    "q1": {
        "svm": {"accuracy": 0.8365},
        "zero_shot": {"accuracy": 0.2075},
        "zero_shot_restricted": {"accuracy": None},
        "finetune": {
            "accuracy": 0.9155,
            "class_accuracy": dict(zip(STL10_CLASSES, [0.9697, 0.9520, 0.9715, 0.8732, 0.8834,
                                                       0.8683, 0.9232, 0.8934, 0.9253, 0.9002])),
        },
    },
    "q2": {
        "ce_triplet": {"accuracy": 0.6167, "macro_f1": 0.63},
        "ce": {"accuracy": 0.7367, "macro_f1": 0.76},
        "ce_center": {"accuracy": 0.7261, "macro_f1": 0.75},
    },
    "q3": {
        "sgd_bs1": {"accuracy": 0.4324},
        "sgd": {"accuracy": 0.6394},
        "sgd_momentum": {"accuracy": 0.7579},
        "adam": {"accuracy": 0.8233},
        "adam_bs16": {"accuracy": 0.8285},
        "adam_bs32": {"accuracy": 0.8189},
        "adam_bs64": {"accuracy": 0.8233},
        "adam_b1_0.0_b2_0.0": {"accuracy": 0.7913},
        "adam_b1_0.9_b2_0.999": {"accuracy": 0.8233},
    },
}

# Test-set sizes of the original's runs, for the noise of its numbers: STL-10's 8,000 test images;
# 50 Tiny ImageNet classes x 50 val images; 30 % of Dogs vs Cats' 25,000 Kaggle training images.
ORIGINAL_TEST_IMAGES = {"q1": 8000, "q2": 2500, "q3": 7500}

NOTES = {
    "q1": {"zero_shot": "the original's class-wise table for this run was not per-class recall"},
    "q3": {"sgd_bs1": "below chance for two balanced classes: points to divergence or a bug in the original"},
}


def reference_accuracy(notebook: str, run: str) -> float | None:
    """The original report's test accuracy for a run, as a fraction, or None."""
    return REFERENCE.get(notebook, {}).get(run, {}).get("accuracy")


def class_accuracy_note() -> str:
    """Why the original's fine-tuning "class-wise accuracy" column cannot be per-class recall, computed from
    its own numbers: STL-10 has 800 test images per class, so a recall is a multiple of 1/800 (0.125 %),
    and for balanced classes the mean recall equals the overall accuracy."""
    values = REFERENCE["q1"]["finetune"]["class_accuracy"]
    per_class, overall = ORIGINAL_TEST_IMAGES["q1"] // len(values), REFERENCE["q1"]["finetune"]["accuracy"]
    off = [name for name, v in values.items() if abs(v * per_class - round(v * per_class)) > 1e-6]
    first = next(iter(values))
    mean = sum(values.values()) / len(values)
    return (f"The original's class-wise column is not per-class recall: with {per_class} test images per class a "
            f"recall is a multiple of {100 / per_class:.3f} %, but {len(off)} of its {len(values)} values are not "
            f"(e.g. {first}: {percent(values[first], 2)} × {per_class} = {values[first] * per_class:.2f} images), "
            f"and their mean, {percent(mean, 2)}, differs from its overall {percent(overall, 2)}, which for "
            f"balanced classes equals the mean recall. Its metric is not stated.")
