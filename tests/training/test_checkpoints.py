"""Checkpoint files: the final state stores what changed and refers to the starting weights by hash; a full
disk is one clear error before anything is written."""
import re
import shutil
from collections import namedtuple

import pytest
import torch
import torchvision

from labkit.training import checkpoints as ckpt
from labkit.data import Batches
from labkit.models import classifier
from labkit.training.optim import make_optimizer
from labkit.paths import DiskSpaceError
from labkit.training.loop import fit

# fit registers every CPU training under data/cache/running (its thread share): keep that out of the checkout
pytestmark = pytest.mark.usefixtures("isolated_root")


def test_a_hash_follows_values_not_memory_layout():
    x = torch.randn(2, 3, 4, 4)
    assert ckpt.tensor_hash(x) == ckpt.tensor_hash(x.to(memory_format=torch.channels_last))
    assert ckpt.tensor_hash(x) != ckpt.tensor_hash(x.reshape(3, 2, 4, 4))  # the shape counts
    assert ckpt.tensor_hash(x) != ckpt.tensor_hash(x.double())  # the dtype counts
    assert ckpt.tensor_hash(torch.tensor(7)) != ckpt.tensor_hash(torch.tensor(8))  # 0-d buffers too


def _finetune_model(source_state=None):
    """A ResNet-18 frozen up to layer3 on starting weights (a fixed random 'source'), a new 4-way head."""
    torch.manual_seed(0)
    backbone = torchvision.models.resnet18(num_classes=10)
    if source_state is not None:
        backbone.load_state_dict(source_state)
    torch.manual_seed(1)
    return classifier(backbone, num_classes=4, freeze_until="layer3")


def _train(model, path, keep="final", epochs=1):
    images = torch.randint(0, 255, (16, 3, 16, 16), dtype=torch.uint8)
    labels = torch.arange(16) % 4
    return fit(model, Batches(images, labels, 8, seed=0), epochs=epochs,
               optimizer=make_optimizer("adam", [p for p in model.parameters() if p.requires_grad], 1e-3),
               checkpoint=path, keep_checkpoints=keep, progress=False)


def test_the_final_state_stores_the_trainable_part_and_refers_to_the_frozen_one(tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.resnet18(num_classes=10).state_dict()
    model = _finetune_model(source)
    path = tmp_path / "q1-finetune-0123456789abcdef.pt"
    _train(model, path)
    blob = torch.load(path, weights_only=True)
    assert blob["final"] and "optimizer" not in blob and "rng" not in blob
    stored, referenced = set(blob["model"]), set(blob["source"])
    assert stored and referenced and not stored & referenced
    assert stored | referenced == set(model.state_dict())
    assert {k.split(".")[1] for k in referenced} == {"conv1", "bn1", "layer1", "layer2", "layer3"}  # frozen
    assert all(k.startswith(("backbone.layer4.", "head.")) for k in stored)
    # smaller than the model alone: the frozen stages (a quarter of ResNet-18) are not stored again
    whole = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    assert path.stat().st_size < 0.8 * whole

    rebuilt = _finetune_model(source)  # as a re-run builds it: the starting weights, a fresh head
    history = _train(rebuilt, path)
    assert history.resumed_from_epoch == 1
    for (k, a), b in zip(model.state_dict().items(), rebuilt.state_dict().values()):
        assert torch.equal(a, b), k


def test_other_starting_weights_are_noticed_and_the_run_trains_again(tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.resnet18(num_classes=10).state_dict()
    path = tmp_path / "run.pt"
    _train(_finetune_model(source), path)
    changed = {k: v + 1 if k == "layer1.0.conv1.weight" else v for k, v in source.items()}
    with pytest.warns(UserWarning, match=r"training again: run\.pt: 1 stored-by-reference weight\(s\) differ"):
        history = _train(_finetune_model(changed), path)
    assert history.resumed_from_epoch == 0 and len(history.epochs) == 1


def test_a_full_disk_is_one_clear_error_before_writing(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10**12, 10**12 - 1000, 1000))
    path = tmp_path / "checkpoints" / "q3-adam-0123456789abcdef.pt"
    with pytest.raises(DiskSpaceError) as err:
        _train(_finetune_model(), path)
    message = str(err.value)
    assert message.startswith(f"the checkpoint {path} needs ")  # the path, the space needed and free
    assert re.search(r"needs 0\.[0-9]{2} GB but \S+ has 0\.00 GB free", message), message
    assert "python -m labkit cache --prune" in message
    assert not path.parent.exists() or not list(path.parent.iterdir())  # nothing written, no temporary left


def test_the_cli_prints_a_full_disk_as_one_line():
    """The CLI shortens a LabkitError to one line (tests/test_cli.py); a full disk is one."""
    from labkit.errors import LabkitError
    assert issubclass(DiskSpaceError, LabkitError)
