import pytest
import torch

from labkit import paths
from labkit.data import Batches
from labkit.data.synthetic import render_many
from labkit.models import SmallCNN
from labkit.training.optim import make_optimizer
from labkit.params import ParameterError, Spec
from labkit.runs import Run, checkpoint_path, data_identity, resolve_runs, run_key, with_precision
from labkit.training.loop import fit

SPECS = {"lr": Spec(float, min=0.0), "epochs": Spec(int, min=1)}


def test_resolve_merges_defaults_under_each_runs_own_keys():
    runs = resolve_runs([{"name": "a"}, {"name": "b", "lr": 0.1}], {"lr": 1e-3, "epochs": 2}, SPECS, [0, 1])
    assert list(runs) == ["a", "b"]
    assert runs["a"] == [Run("a", {"lr": 1e-3, "epochs": 2}, 0), Run("a", {"lr": 1e-3, "epochs": 2}, 1)]
    assert runs["b"][0]["lr"] == 0.1 and runs["b"][0]["epochs"] == 2 and runs["b"][1].seed == 1


def test_an_empty_list_skips_and_bad_runs_are_refused():
    assert resolve_runs([], {"lr": 1.0}, SPECS, [0]) == {}
    with pytest.raises(ParameterError, match=r"runs\[0\] \(a\): unknown key\(s\) 'momentum'"):
        resolve_runs([{"name": "a", "momentum": 0.9}], {}, SPECS, [0])
    with pytest.raises(ParameterError, match="used twice"):
        resolve_runs([{"name": "a"}, {"name": "a"}], {"lr": 1.0, "epochs": 1}, SPECS, [0])
    with pytest.raises(ParameterError, match="'seeds'"):
        resolve_runs([{"name": "a"}], {"lr": 1.0, "epochs": 1}, SPECS, [])
    with pytest.raises(ParameterError, match="repeats a seed"):
        resolve_runs([{"name": "a"}], {"lr": 1.0, "epochs": 1}, SPECS, [1, 1])


def test_keys_for_and_check_shape_the_settings():
    runs = resolve_runs([{"name": "svm"}], {"lr": 1.0, "epochs": 3, "c": 0.1}, SPECS, [0],
                        keys_for=lambda name: ["c"], check=lambda name, s: {"method": name, **s})
    assert runs["svm"][0].settings == {"method": "svm", "c": 0.1}


def test_run_key_follows_settings_seed_data_and_code(monkeypatch):
    a = run_key("q3", {"lr": 1e-3, "epochs": 5}, 0, "data1")
    assert a == run_key("q3", {"epochs": 5, "lr": 1e-3}, 0, "data1")  # order does not matter
    assert a != run_key("q3", {"lr": 1e-4, "epochs": 5}, 0, "data1")
    assert a != run_key("q3", {"lr": 1e-3, "epochs": 5}, 1, "data1")
    assert a != run_key("q3", {"lr": 1e-3, "epochs": 5}, 0, "data2")
    assert a != run_key("q2", {"lr": 1e-3, "epochs": 5}, 0, "data1")
    monkeypatch.setattr(paths, "code_fingerprint", lambda: "changed-code")
    monkeypatch.setattr("labkit.runs.code_fingerprint", lambda: "changed-code")
    assert a != run_key("q3", {"lr": 1e-3, "epochs": 5}, 0, "data1")  # a code change never resumes old runs


def test_checkpoint_path_is_one_per_seed_setting_and_data(isolated_root):
    """Two training seeds of one run never share a file (seed 1 would load seed 0's final state and never train)."""
    run = Run("adam", {"lr": 1e-4, "epochs": 2}, 0)
    path = checkpoint_path("q3", run, "data1")
    assert path.name.startswith("q3-adam-") and path.suffix == ".pt"
    assert path.name == f"q3-adam-{run_key('q3', run.settings, 0, 'data1')}.pt"
    others = [checkpoint_path("q3", Run("adam", {"lr": 1e-4, "epochs": 2}, 1), "data1"),
              checkpoint_path("q3", Run("adam", {"lr": 1e-5, "epochs": 2}, 0), "data1"),
              checkpoint_path("q3", run, "data2"),
              checkpoint_path("q2", run, "data1"),
              checkpoint_path("q3", Run("sgd", {"lr": 1e-4, "epochs": 2}, 0), "data1")]
    assert len({path, *others}) == 6


def test_data_identity_covers_pixels_labels_and_split():
    images = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 0, 1])
    base = data_identity(images, labels, [0, 1])
    changed = images.clone()
    changed[0, 0, 0, 0] = 1
    assert base == data_identity(images.clone(), labels.clone(), [0, 1])
    assert base != data_identity(changed, labels, [0, 1])
    assert base != data_identity(images, labels.flip(0), [0, 1])
    assert base != data_identity(images, labels, [0, 2])
    from labkit.data import ImageSet
    keyed = ImageSet(images, labels, ["a", "b"], key="stl10-abc")
    assert data_identity(keyed) == data_identity(ImageSet(changed, labels, ["a", "b"], key="stl10-abc"))  # the key
    assert data_identity(ImageSet(images, labels, ["a", "b"])) != data_identity(ImageSet(changed, labels, ["a", "b"]))


def test_code_fingerprint_is_stable_and_covers_the_package():
    assert paths.code_fingerprint() == paths.code_fingerprint() and len(paths.code_fingerprint()) == 12


def test_changed_parameter_does_not_resume_and_same_one_does(isolated_root):
    labels = torch.arange(64) % 2
    images = torch.from_numpy(render_many((labels * 4 + 1).tolist(), 16, seed=1)).permute(0, 3, 1, 2).contiguous()

    def train(run, epochs):
        model = SmallCNN(width=4, hidden=8)
        return fit(model, Batches(images, labels, 32), epochs=epochs,
                   optimizer=make_optimizer("sgd", model.parameters(), run["lr"]),
                   checkpoint=checkpoint_path("test", run, "data"), progress=False)

    first = Run("r", {"lr": 0.05}, 0)
    train(first, 1)
    assert checkpoint_path("test", first, "data").parent == isolated_root / "data" / "cache" / "checkpoints"
    assert train(Run("r", {"lr": 0.01}, 0), 1).resumed_from_epoch == 0
    assert train(first, 2).resumed_from_epoch == 1


@pytest.mark.parametrize("key", ["q1", "q2", "q3"])
def test_keep_checkpoints_never_changes_a_run_or_its_key(key, monkeypatch):
    """It goes beside the runs (to fit), so ``-p keep_checkpoints none`` still finds the finished runs."""
    from labkit.questions import registry
    monkeypatch.delenv("LABKIT_ROOT", raising=False)  # the checkout's notebooks
    module = registry.question(key)
    plans = [module.plan(module.parameters({**registry.default_parameters(key, "smoke"), "keep_checkpoints": keep}))
             for keep in ("final", "none", "all")]
    assert plans[0] == plans[1] == plans[2]


def test_the_defaults_are_checked_naming_the_parameter():
    with pytest.raises(ParameterError, match="'epochs'"):
        resolve_runs([{"name": "a"}], {"lr": 1.0, "epochs": 0}, SPECS, [0])
    with pytest.raises(ParameterError, match=r"probes\[0\]"):  # the notebook parameter's own name
        resolve_runs([{"name": "a", "momentum": 0.9}], {}, SPECS, [0], param="probes")


@pytest.mark.parametrize("seeds", [[-1], [0, -2], [True], [0.5], [0, "1"]])
def test_seeds_are_distinct_integers_from_0(seeds):
    with pytest.raises(ParameterError, match="'seeds'"):
        resolve_runs([{"name": "a"}], {"lr": 1.0, "epochs": 1}, SPECS, seeds)


def test_data_identity_of_shapes_dtypes_key_order_and_other_objects():
    from pathlib import Path
    from types import SimpleNamespace
    from labkit.data import ImageSet
    # the same bytes under another shape or dtype are other data
    assert data_identity(torch.zeros(4, dtype=torch.uint8)) != data_identity(torch.zeros(2, 2, dtype=torch.uint8))
    assert data_identity(torch.zeros(8, dtype=torch.uint8)) != data_identity(torch.zeros(1, dtype=torch.int64))
    # JSON parts: key order does not matter, objects JSON does not know go by their text
    assert data_identity({"a": 1, "b": [2]}) == data_identity({"b": [2], "a": 1})
    assert data_identity(Path("x.csv")) != data_identity(Path("y.csv"))
    # without a key, an ImageSet is its pixels and its labels
    images = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    assert data_identity(ImageSet(images, torch.tensor([0, 1]), ["a", "b"])) != \
        data_identity(ImageSet(images, torch.tensor([1, 0]), ["a", "b"]))
    # only a thing with images and labels is taken for an ImageSet
    assert data_identity(SimpleNamespace(images=1)) == data_identity(SimpleNamespace(images=1))


def test_run_keys_fit_the_checkpoint_names_the_cache_command_reads():
    """``python -m labkit cache`` finds checkpoints by name: <question>-<run>-<16 hex digits>.pt."""
    from pathlib import Path
    import numpy as np
    from labkit.cache import CHECKPOINT
    key = run_key("q3", {"lr": np.float32(1e-3), "root": Path("/x")}, 0, "data1")  # values JSON does not know
    assert CHECKPOINT.match(f"q3-adam-{key}.pt") and len(key) == 16
    assert run_key("q3", {"lr": 1e-3}, 0) == run_key("q3", {"lr": 1e-3}, 0, "")  # no data: an empty identity


CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU: only its type is read


@pytest.mark.parametrize("model, image_size, batch_size, expected", [
    ("resnet18", 64, 2, "bf16"),    # a ResNet at 64 px and above: bf16 whatever the batch
    ("resnet50", 32, 64, "fp32"),   # ...below 64 px: fp32 (the image size reaches the rule)
    ("small_cnn", 32, 4, "bf16"),   # the small CNN at batch 4 and above, whatever the image size
    ("small_cnn", 128, 3, "fp32"),  # ...below: fp32 (the run's batch size reaches the rule)
])
def test_with_precision_resolves_auto_from_the_model_image_size_and_the_runs_batch_size(
        monkeypatch, model, image_size, batch_size, expected):
    monkeypatch.setattr("labkit.device.native_bf16_cpu", lambda: True)
    run = Run("adam", {"lr": 1e-4, "batch_size": batch_size, "precision": "auto"}, 3)
    out = with_precision(run, CPU, model, image_size)
    assert out == Run("adam", {"lr": 1e-4, "batch_size": batch_size, "precision": expected}, 3)
    assert run.settings["precision"] == "auto"  # the given run is not changed


def test_with_precision_reads_the_device_and_keeps_an_explicit_choice(monkeypatch):
    monkeypatch.setattr("labkit.device.native_bf16_cpu", lambda: False)
    run = Run("sgd", {"batch_size": 64, "precision": "auto"}, 1)
    assert with_precision(run, CPU, "resnet18", 96)["precision"] == "fp32"  # no native bf16 on this CPU
    assert with_precision(run, CUDA, "small_cnn", 8)["precision"] == "bf16"  # a GPU: bf16 for every model
    explicit = Run("sgd", {"batch_size": 64, "precision": "fp32"}, 1)
    assert with_precision(explicit, CUDA, "resnet18", 96)["precision"] == "fp32"
    # a run made by hand, without the setting, is "auto"
    assert with_precision(Run("sgd", {"batch_size": 64}, 2), CUDA, "resnet18", 96) == \
        Run("sgd", {"batch_size": 64, "precision": "bf16"}, 2)
    with pytest.raises(ValueError, match="precision='fp16' is not allowed"):
        with_precision(Run("sgd", {"batch_size": 64, "precision": "fp16"}, 1), CPU, "resnet18", 96)
