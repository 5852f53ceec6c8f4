"""Stand-in backbones: a synthetic source task shaped like ImageNet-1k relative to STL-10, pre-trained once and
cached under a key of its settings and labkit's code fingerprint."""
import json
import os

import pytest
import torch
import torchvision

from labkit import models
from labkit.training import standin
from labkit.data import STL10_CLASSES

TINY = {"per_class": 1, "image_size": 16, "epochs": 1, "batch_size": 40, "heldout_per_class": 1}  # one update


@pytest.fixture
def tiny(isolated_root, monkeypatch):
    """A tiny pre-training into a stand-in folder of this test's own (not the session's shared one), and
    the list of archs ``_pretrain`` was called for."""
    folder = isolated_root / "data" / "cache" / "standin"
    folder.unlink()  # the session's shared weights stay untouched
    folder.mkdir()
    for key, value in TINY.items():
        monkeypatch.setitem(standin.SETTINGS["standin"], key, value)
    trained, real = [], standin._pretrain

    def pretrain(arch, settings, progress):
        trained.append(arch)
        return real(arch, settings, progress)

    monkeypatch.setattr(standin, "_pretrain", pretrain)
    return folder, trained


def test_source_classes():
    names = standin.source_classes()
    assert len(names) == standin.SOURCE_PROTOTYPES * standin.VARIANTS == 40
    assert names[:3] == ["proto00-v0", "proto00-v1", "proto01-v0"] and names[-1] == "proto19-v1"


def test_source_to_stl10_is_many_to_one_with_no_deer():
    mapping = standin.source_to_stl10()
    deer = STL10_CLASSES.index("deer")
    assert deer not in mapping.values()  # like ImageNet-1k: deer can only be wrong or 'other'
    assert sorted(set(mapping.values())) == [c for c in range(10) if c != deer]
    for target in set(mapping.values()):  # each STL-10 class: both variants of its prototype
        assert sorted(s for s, t in mapping.items() if t == target) == [2 * target, 2 * target + 1]
    assert 2 * deer not in mapping and 2 * deer + 1 not in mapping
    unmapped = set(range(40)) - set(mapping)
    assert unmapped == {2 * deer, 2 * deer + 1} | set(range(20, 40))  # they become 'other'


def test_a_stand_in_being_pre_trained_elsewhere_is_waited_for_not_trained_again(tiny, capsys):
    """Two kernels that prepare the same stand-in at once: the second waits on the first's lock, then loads the
    file the first wrote (here the "first" is this test, holding the lock while a thread asks for the weights)."""
    import threading
    from labkit.training.sharing import run_lock
    folder, trained = tiny
    path = standin.weights_path("resnet18", "standin")
    got = []
    with run_lock(path):
        waiting = threading.Thread(target=lambda: got.append(standin.standin_weights("resnet18")))
        waiting.start()
        waiting.join(timeout=2)
        assert waiting.is_alive() and not got  # still waiting for the lock
        blob = {"state_dict": {"w": torch.ones(2)}, "classes": ["x"], "settings": "{}", "report": '{"kind": "o"}'}
        standin.atomic_torch_save(path, blob)
    waiting.join(timeout=60)
    assert not waiting.is_alive() and trained == []  # not pre-trained a second time
    assert (f"waiting for process {os.getpid()}, which is pre-training the same stand-in (standin, resnet18) "
            f"({path.name}); its result is reused when it finishes") in capsys.readouterr().out
    assert got[0]["report"] == '{"kind": "o"}' and torch.equal(got[0]["state_dict"]["w"], torch.ones(2))


def test_trained_once_then_loaded_from_the_cache(tiny):
    folder, trained = tiny
    first = standin.standin_weights("resnet18")
    assert trained == ["resnet18"]
    (path,) = folder.iterdir()  # one file, no temporary left
    settings = "-".join(f"{k}{v}" for k, v in standin.SETTINGS["standin"].items())
    assert path.name == f"resnet18-standin-{settings}-{standin.code_fingerprint()}.pt"
    assert first["classes"] == standin.source_classes()
    assert json.loads(first["settings"]) == standin.SETTINGS["standin"]
    report = json.loads(first["report"])
    assert report["source_task"] == "40-class synthetic source task" and report["train_images"] == 40
    assert report["heldout_images"] == 40 and 0 <= report["heldout_top1"] <= 1 and report["train_seconds"] >= 0
    again = standin.standin_weights("resnet18")
    assert trained == ["resnet18"]  # loaded, not trained
    assert again["state_dict"].keys() == first["state_dict"].keys()
    assert all(torch.equal(again["state_dict"][k], v) for k, v in first["state_dict"].items())
    plain = torchvision.models.resnet18(num_classes=40)
    plain.load_state_dict(again["state_dict"])  # a plain torchvision ResNet-18 with the 40 source classes
    net = models.resnet("resnet18", "standin")  # what the notebooks load: the cached weights, honestly named
    assert trained == ["resnet18"] and net.fc.out_features == len(standin.source_classes())
    assert torch.equal(net.conv1.weight, first["state_dict"]["conv1.weight"])
    banner = models.describe_weights("standin", "resnet18")
    assert "NOT ImageNet" in banner and "40-class synthetic source task" in banner and "held-out top-1" in banner


def test_the_key_follows_the_code_fingerprint_and_the_settings(tiny, monkeypatch):
    folder, trained = tiny
    first = standin.standin_weights("resnet18")
    monkeypatch.setattr(standin, "code_fingerprint", lambda: "0123456789ab")
    retrained = standin.standin_weights("resnet18")
    assert trained == ["resnet18", "resnet18"]
    assert len(list(folder.glob("*-0123456789ab.pt"))) == 1 and len(list(folder.iterdir())) == 2
    # the same settings train the same weights (CPU, float32, seeded), so a retrain is a true rebuild
    assert all(torch.equal(retrained["state_dict"][k], v) for k, v in first["state_dict"].items())
    monkeypatch.setattr(standin, "_pretrain", lambda arch, s, progress: trained.append(arch) or ({}, {}))
    monkeypatch.setitem(standin.SETTINGS["standin"], "seed", 1)
    standin.standin_weights("resnet18")
    assert trained == ["resnet18"] * 3 and len(list(folder.glob("*-seed1-0123456789ab.pt"))) == 1
    standin.standin_weights("resnet18")
    assert len(trained) == 3


def test_the_smoke_stand_in_is_its_own_and_learns_its_task(isolated_root):
    """The seconds-size stand-in of the smoke profile and the tests: cached under its own key, and above chance
    (2.5 %) on held-out source images, by a margin: 4x chance."""
    blob = standin.standin_weights("resnet18", "standin-smoke")
    report = json.loads(blob["report"])
    assert report["kind"] == "standin-smoke" and report["heldout_images"] == 160 and report["train_images"] == 480
    assert report["heldout_top1"] > 0.1, report
    assert any("standin-smoke" in p.name for p in (isolated_root / "data" / "cache" / "standin").iterdir())
    with pytest.raises(ValueError, match="allowed: standin, standin-smoke"):
        standin.standin_weights("resnet18", "standin-huge")


def test_pre_training_twice_gives_the_same_weights(tiny):
    folder, trained = tiny
    first = standin.standin_weights("resnet18")
    for path in folder.iterdir():
        path.unlink()
    second = standin.standin_weights("resnet18")
    assert trained == ["resnet18", "resnet18"]  # trained twice from scratch
    assert all(torch.equal(second["state_dict"][k], v) for k, v in first["state_dict"].items())
    assert json.loads(first["report"])["heldout_top1"] == json.loads(second["report"])["heldout_top1"]


def test_the_stand_in_is_pre_trained_with_window_convs(tiny, monkeypatch):
    """Its 1x1 maps at 32 px (layer4) and 16 px (layer3 too) are where CPUs without AVX-512 lose half a step."""
    from labkit.training import loop
    from labkit.training.convs import WindowConv2d
    seen, real = [], loop.fit
    monkeypatch.setattr(loop, "fit", lambda model, *a, **kw: seen.append(model) or real(model, *a, **kw))
    standin.standin_weights("resnet18")
    assert len(seen) == 1
    convs = [m for m in seen[0].modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(type(m) is WindowConv2d for m in convs)
