"""The original report's numbers: fractions, once, as data, under the run names the notebooks use."""
from labkit.questions import q1_transfer as q1
from labkit.data import STL10_CLASSES
from labkit.questions.registry import default_parameters
from labkit.questions.reference import NOTES, ORIGINAL_TEST_IMAGES, REFERENCE, reference_accuracy


def _numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    else:
        yield value


def test_reference_numbers_are_fractions():
    assert set(REFERENCE) == {"q1", "q2", "q3"}
    for nb, runs in REFERENCE.items():
        for name, values in runs.items():
            assert "accuracy" in values, (nb, name)
            for v in _numbers(values):  # accuracy, macro_f1, per-class accuracies
                assert v is None or (isinstance(v, float) and 0.0 < v < 1.0), (nb, name, v)


def test_reference_accuracy():
    assert reference_accuracy("q3", "sgd_bs1") == 0.4324
    assert reference_accuracy("q1", "finetune") == 0.9155
    assert reference_accuracy("q2", "ce") == 0.7367
    assert reference_accuracy("q1", "zero_shot_restricted") is None  # the original gave no number
    assert reference_accuracy("q1", "nothing") is None
    assert reference_accuracy("q9", "svm") is None


def test_q1_class_precision_is_keyed_by_the_stl10_classes_in_order():
    per_class = REFERENCE["q1"]["finetune"]["class_precision"]
    assert list(per_class) == STL10_CLASSES == ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey",
                                                "ship", "truck"]
    assert per_class["airplane"] == 0.9697 and per_class["truck"] == 0.9002


def test_original_test_images():
    assert ORIGINAL_TEST_IMAGES == {"q1": 8000, "q2": 2500, "q3": 7500}


def test_run_names_are_the_notebooks_run_names():
    """A renamed run would silently lose the original's number beside it."""
    assert set(REFERENCE["q1"]) == set(q1.METHODS)
    assert set(REFERENCE["q2"]) == {run["name"] for run in default_parameters("q2")["runs"]}
    q3 = default_parameters("q3")
    q3_names = {run["name"] for part in ("optimizers", "batch_sizes", "order", "betas")
                for run in q3[f"runs_{part}"]}
    assert set(REFERENCE["q3"]) <= q3_names
    for nb, notes in NOTES.items():
        assert set(notes) <= set(REFERENCE[nb]), nb


def test_the_class_table_note_says_precision_from_the_originals_numbers():
    from labkit.questions.reference import class_table_note, original_class_precision, original_test_images
    note = class_table_note("finetune")
    assert "per-class **precision**" in note and "a multiple of 0.125 %" in note and "airplane: 96.97 %" in note
    assert "transcribed" not in note  # all ten values
    assert "Only airplane was transcribed" in class_table_note("zero_shot")
    assert original_class_precision("zero_shot") == {"airplane": 0.9689}
    # 96.89 % is 156 / 161 truncated: precision (right / predicted), not recall (156 / 800 would be 19.5 %)
    assert int(156 / 161 * 10000) / 10000 == 0.9689
    assert original_test_images("q2", "ce_triplet") == 7500 and original_test_images("q2", "ce") == 2500
