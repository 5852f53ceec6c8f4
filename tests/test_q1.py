import json

import numpy as np
import torch

from labkit import q1_transfer as q1
from labkit.imagenet import IMAGENET_TO_STL10, IMAGENET_TO_STL10_CLASS, STL10_CLASSES
from labkit.models import imagenet_classes


def test_imagenet_mapping_spot_checks():
    names = imagenet_classes("resnet50")
    assert IMAGENET_TO_STL10[151] == STL10_CLASSES.index("dog") and IMAGENET_TO_STL10[268] == STL10_CLASSES.index("dog")
    assert all(IMAGENET_TO_STL10[i] == STL10_CLASSES.index("cat") for i in range(281, 286))
    assert IMAGENET_TO_STL10[404] == IMAGENET_TO_STL10[895] == STL10_CLASSES.index("airplane")
    assert names[404] == "airliner" and names[895] == "warplane"
    assert 726 not in IMAGENET_TO_STL10 and names[726] == "plane"  # the carpenter's tool
    assert IMAGENET_TO_STL10[339] == STL10_CLASSES.index("horse") and names[339] == "sorrel"
    assert IMAGENET_TO_STL10[510] == STL10_CLASSES.index("ship") and names[510] == "container ship"
    assert IMAGENET_TO_STL10[867] == STL10_CLASSES.index("truck") and names[867] == "trailer truck"
    assert IMAGENET_TO_STL10[817] == STL10_CLASSES.index("car") and names[817] == "sports car"
    assert IMAGENET_TO_STL10[373] == STL10_CLASSES.index("monkey") and names[373] == "macaque"


def test_imagenet_mapping_is_a_function_with_no_deer():
    listed = [i for indices in IMAGENET_TO_STL10_CLASS.values() for i in indices]
    assert len(listed) == len(set(listed)), "an ImageNet index is mapped twice"
    assert all(0 <= i < 1000 for i in listed)
    assert IMAGENET_TO_STL10_CLASS["deer"] == [] and STL10_CLASSES.index("deer") not in IMAGENET_TO_STL10.values()


def test_zero_shot_rules():
    logits = torch.tensor([[0.0, 5.0, 1.0, 0.0], [3.0, 0.0, 1.0, 0.0]])
    mapping = {0: 2, 2: 7}  # source 0 -> car, 2 -> monkey; 1 and 3 unmapped
    assert q1.zero_shot(logits, mapping, restricted=False).tolist() == [10, 2]  # 10 = other
    assert q1.zero_shot(logits, mapping, restricted=True).tolist() == [7, 2]


def test_smoke_notebook_writes_every_run(smoke_report):
    root, _ = smoke_report
    metrics = json.loads((root / "q1" / "metrics.json").read_text())
    assert set(metrics["runs"]) == {"svm", "zero_shot", "zero_shot_restricted", "finetune"}
    assert metrics["weights"] == "standin"
    assert "NOT ImageNet" in (root / "q1" / "q1_stl10_transfer.report.html").read_text()


def test_demo_sized_svm_and_finetune_beat_chance():
    """Demo-sized synthetic STL-10 with the stand-in ResNet-50: both trained approaches beat chance (10 %)."""
    data = q1.load_data("synthetic", None, 30, 30)
    dev = torch.device("cpu")
    model, mapping, _ = q1.source_model("resnet50", "standin")
    feats = {s: q1.extract(model, getattr(data, s).images, image_size=32, device=dev, weights="standin",
                           arch="resnet50") for s in ("train", "test")}
    svm = q1.train_svm(feats["train"]["avgpool"].numpy(), data.train.labels.numpy(), "linear", 0.1, 0)
    y = data.test.labels.numpy()
    svm_acc = float((svm.predict(feats["test"]["avgpool"].numpy()) == y).mean())
    history, out = q1.finetune("resnet50", "standin", data, image_size=32, hidden_units=0, dropout=0.0,
                               freeze_until="layer3", optimizer="adam", lr=1e-3, batch_size=32, epochs=3,
                               val_fraction=0.15, augment=True, seed=0, device=dev, context={"test": "demo"})
    ft_acc = float((out["predictions"].numpy() == y).mean())
    assert svm_acc > 0.2 and ft_acc > 0.2, (svm_acc, ft_acc)  # 300 test images: chance is 0.1 +- 0.035


def test_features_are_cached(tmp_path):
    data = q1.load_data("synthetic", None, 2, 1)
    model, _, _ = q1.source_model("resnet18", "standin")
    args = dict(image_size=32, device=torch.device("cpu"), weights="standin", arch="resnet18")
    first = q1.extract(model, data.test.images, **args)
    model.fc.weight.data.zero_()  # a cache hit must not run the model again
    second = q1.extract(model, data.test.images, **args)
    assert torch.equal(first["fc"], second["fc"]) and first["avgpool"].shape == (10, 512)
    assert not np.allclose(second["fc"].numpy(), 0)
