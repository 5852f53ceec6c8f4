import urllib.error

import pytest
import torch
import torchvision

from labkit import models
from labkit.training.convs import WindowConv2d


def test_local_state_dict_path(tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.resnet18(weights=None, num_classes=7)
    path = tmp_path / "mine.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    loaded = models.resnet("resnet18", str(path))
    assert loaded.fc.out_features == 7
    for a, b in zip(source.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "junk.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        models.resnet("resnet18", str(path))
    with pytest.raises(ValueError, match="allowed: 'standin', 'standin-smoke', 'imagenet', 'none'"):
        models.resnet("resnet18", str(tmp_path / "missing.pt"))


def test_imagenet_weights_unavailable_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(models.WeightsUnavailableError, match=r"not cached at .*checkpoints.*make data.*standin"):
        models.resnet("resnet50", "imagenet")


def test_classifier_freezes_up_to_a_stage_and_returns_embedding():
    net = models.classifier(models.resnet("resnet18", "none"), num_classes=10, hidden=50, freeze_until="layer2")
    out = net(torch.randn(2, 3, 32, 32))
    assert out.logits.shape == (2, 10) and out.embedding.shape == (2, 512)
    assert not any(p.requires_grad for p in net.backbone.layer2.parameters())
    assert all(p.requires_grad for p in net.backbone.layer3.parameters())
    net.train()
    assert not net.backbone.bn1.training and net.backbone.layer3.training
    with pytest.raises(ValueError, match="allowed: none, stem, layer1"):
        models.classifier(models.resnet("resnet18", "none"), 10, freeze_until="layer9")


def test_small_cnn_layer_names_and_any_input_size():
    net = models.SmallCNN()
    names = [n for n, m in net.named_modules() if hasattr(m, "weight")]
    assert names == ["conv1", "bn1", "conv2", "bn2", "conv3", "linear1", "linear2"]
    assert net(torch.randn(2, 3, 48, 48)).shape == (2, 2)


@pytest.mark.parametrize("arch", models.ARCHS)
def test_every_resnet_labkit_builds_has_window_convs_and_a_plain_state_dict(arch, tmp_path):
    built = models.resnet(arch, "none")
    torch.save(torchvision.models.get_model(arch, num_classes=7).state_dict(), tmp_path / "mine.pt")
    for model in (built, models.resnet(arch, str(tmp_path / "mine.pt"))):
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(type(m) is WindowConv2d for m in convs)
    plain = torchvision.models.get_model(arch)
    plain.load_state_dict(built.state_dict(), strict=True)  # the same state dict: torchvision reads it as its own
    x = torch.randn(2, 3, 32, 32)  # 32 px: layer4's maps are 1x1, where the window convolutions act
    torch.testing.assert_close(built.eval()(x), plain.eval()(x))
