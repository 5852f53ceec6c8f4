"""Models: ResNet backbones with the weights the profiles need, a logits+embedding wrapper, the small CNN."""
from __future__ import annotations

import urllib.error
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from labkit.errors import LabkitError
from labkit.training.convs import torchvision_resnet
from labkit.training.losses import ModelOutput
from labkit.params import STANDINS

RESNET_STAGES = ("none", "stem", "layer1", "layer2", "layer3", "layer4")
ARCHS = ("resnet18", "resnet50")
# The ImageNet weights the original report would have used with `pretrained=True`.
IMAGENET_WEIGHTS = {"resnet18": "IMAGENET1K_V1", "resnet50": "IMAGENET1K_V1"}


class WeightsUnavailableError(LabkitError, RuntimeError):
    """Pretrained weights are neither cached nor downloadable; the message says how to get them."""


def imagenet_weights_enum(arch: str):
    return torchvision.models.get_model_weights(arch)[IMAGENET_WEIGHTS[arch]]


def imagenet_classes(arch: str = "resnet50") -> list[str]:
    """The 1000 ImageNet-1k class names that ship with torchvision's weight metadata (no download)."""
    return list(imagenet_weights_enum(arch).meta["categories"])


def load_imagenet_state_dict(arch: str) -> dict:
    """ImageNet weights through torchvision's weights API and its cache (``$TORCH_HOME/hub/checkpoints``)."""
    weights = imagenet_weights_enum(arch)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
        raise WeightsUnavailableError(
            f"ImageNet weights for {arch} are not cached at {cache} and could not be downloaded from "
            f"{weights.url} ({err}). Run `make data` on a machine with internet access (or copy the file to "
            f"that path), or use weights='standin' to run offline."
        ) from err


def _load_state_dict_file(path: Path) -> dict:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of parameter names to tensors)")
    return blob


def resnet(arch: str, weights: str = "standin") -> nn.Module:
    """A torchvision ResNet with its original classifier, loaded with ``weights``:

    "standin" (labkit's offline stand-in, see ``labkit.training.standin``), "imagenet"
    (torchvision's ImageNet-1k weights), "none" (random init) or a path to a
    local state-dict file. The fc layer keeps the source task's size (1000 for
    ImageNet); use :func:`classifier` to put a new head on it.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r} is not allowed; allowed: {', '.join(ARCHS)}")
    if weights == "imagenet":
        state = load_imagenet_state_dict(arch)
    elif weights in STANDINS:
        from labkit.training.standin import standin_weights
        state = standin_weights(arch, weights)["state_dict"]
    elif weights == "none":
        return torchvision_resnet(arch, weights=None)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ValueError(f"weights={weights!r} is not allowed; allowed: {', '.join(map(repr, STANDINS))}, "
                             f"'imagenet', 'none' or the path of an existing state-dict file")
        state = _load_state_dict_file(path)
    num_classes = state["fc.weight"].shape[0] if "fc.weight" in state else 1000
    model = torchvision_resnet(arch, weights=None, num_classes=num_classes)
    model.load_state_dict(state)
    return model


def describe_weights(weights: str, arch: str) -> str:
    """A one-line, honest name for the weights in use (the notebooks' banner)."""
    if weights == "imagenet":
        return f"ImageNet-1k pretrained {arch} (torchvision {IMAGENET_WEIGHTS[arch]})"
    if weights in STANDINS:
        from labkit.training.standin import report
        r = report(arch, weights)
        return (f"STAND-IN weights ({weights}): {arch} pre-trained by labkit on a {r['source_task']} "
                f"({r['train_images']:,} images, {r['train_seconds']:.0f} s), held-out top-1 "
                f"{100 * r['heldout_top1']:.0f} %, NOT ImageNet. Numbers here show the methods working, not "
                f"ImageNet transfer results.")
    if weights == "none":
        return f"randomly initialised {arch} (no pre-training)"
    return f"{arch} weights from the local file {weights}"


class EmbeddingClassifier(nn.Module):
    """A backbone (images -> embedding) and a head (embedding -> logits).

    ``forward`` returns ``ModelOutput(logits, embedding)`` so losses on the
    embedding (triplet, center) and on the logits can share one pass. Modules
    listed in ``frozen`` have no trainable parameters and stay in eval mode
    (their BatchNorm statistics do not drift) even while the model trains.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, frozen: list[str] | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.frozen = list(frozen or [])

    def forward(self, x):
        embedding = self.backbone(x)
        return ModelOutput(self.head(embedding), embedding)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen:
            self.backbone.get_submodule(name).eval()
        return self


# The submodules of each ResNet stage, input to output.
RESNET_STAGE_MODULES = [("stem", ["conv1", "bn1"]), ("layer1", ["layer1"]), ("layer2", ["layer2"]),
                        ("layer3", ["layer3"]), ("layer4", ["layer4"])]


def classifier(backbone_resnet: nn.Module, num_classes: int, hidden: int = 0, freeze_until: str = "none",
               dropout: float = 0.0) -> EmbeddingClassifier:
    """Replace a ResNet's fc by a new head (``hidden`` > 0 adds a hidden layer) and freeze the
    backbone up to and including the stage ``freeze_until`` ("none", "stem", "layer1".."layer4")."""
    if freeze_until not in RESNET_STAGES:
        raise ValueError(f"freeze_until={freeze_until!r} is not allowed; allowed: {', '.join(RESNET_STAGES)}")
    features = backbone_resnet.fc.in_features
    backbone_resnet.fc = nn.Identity()
    if hidden:
        head = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                             nn.Linear(hidden, num_classes))
    else:
        head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes)) if dropout else \
            nn.Linear(features, num_classes)
    frozen = []
    if freeze_until != "none":
        for stage, modules in RESNET_STAGE_MODULES:
            frozen += modules
            if stage == freeze_until:
                break
    for name in frozen:
        for p in backbone_resnet.get_submodule(name).parameters():
            p.requires_grad_(False)
    return EmbeddingClassifier(backbone_resnet, head, frozen)


class SmallCNN(nn.Module):
    """Three conv blocks (batch norm after the first two), two linear layers; named as in the
    original report's gradient-flow plots (conv1..conv3, bn1, bn2, linear1, linear2)."""

    def __init__(self, num_classes: int = 2, width: int = 16, hidden: int = 64, dropout: float = 0.25):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.squeeze = nn.AdaptiveAvgPool2d(4)  # any input size works
        self.linear1 = nn.Linear(4 * width * 16, hidden)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        x = self.squeeze(torch.relu(self.conv3(x)))
        return self.linear2(self.dropout(torch.relu(self.linear1(x.flatten(1)))))
