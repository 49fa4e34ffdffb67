"""Base classifiers. Every model is ``nn.Sequential(InputNormalization, backbone)``.

Normalisation is the model's first layer (SPEC "Smoothing convention"): inputs are [0, 1]
pixels plus Gaussian noise, never clipped or normalised beforehand. This is also the layout of
Cohen et al.'s released models (``Sequential(NormalizeLayer, ResNet)``, state-dict keys
``1.conv1.weight`` …), which keeps their checkpoints importable.

Architectures (``000`` Sec. 4: "the same architectures as in [4]"):

* ``resnet20/26/32/110`` — the CIFAR ResNet of He et al. (2016, Sec. 4.2) as in Cohen et
  al.'s ``cifar_resnet.py``: 3 stages of BasicBlocks (16/32/64 channels), depth 6n+2,
  1×1-conv projection shortcuts. ResNet-110 for CIFAR-10 and SVHN. Global average pooling is
  adaptive (identical to ``AvgPool2d(8)`` on 32×32 inputs, and it works on 8×8 digits).
* ``resnet50`` — torchvision's ResNet-50 for ImageNet.
* ``small_cnn`` — a tiny CNN for the embedded ``digits`` demo.

Networks of other codebases (:mod:`rslib.models.released`, formats ``torchscript``,
``exported`` and ``state_dict``) keep the same layout, ``Sequential(InputNormalization, network)``
(:func:`with_input_layer`): a ``"package.module:function"`` builder (:func:`resolve_builder`)
is a valid ``arch`` of :func:`build_model`, and :data:`TORCHSCRIPT` and :data:`EXPORTED` name a
network stored as a TorchScript or ``torch.export`` archive inside its model file
(:mod:`rslib.models.checkpoint`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence

import torch
from torch import nn


class InputNormalization(nn.Module):
    """(x − mean) / std per channel. Mean/std are non-persistent buffers: they follow
    ``.to(device)`` but stay out of the state dict (as in Cohen et al.'s NormalizeLayer)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet with ``depth = 6n + 2`` (BasicBlocks)."""

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.in_planes = 16
        self.layer1 = self._make_layer(16, n, stride=1)
        self.layer2 = self._make_layer(32, n, stride=2)
        self.layer3 = self._make_layer(64, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(self.in_planes, planes, stride)]
        self.in_planes = planes
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head; ~25k parameters, for 8×8 digits on a laptop CPU."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


def _resnet50(num_classes: int, in_channels: int) -> nn.Module:
    from torchvision.models import resnet50

    if in_channels != 3:
        raise ValueError("resnet50 expects 3-channel images")
    return resnet50(weights=None, num_classes=num_classes)


ARCHITECTURES: dict[str, Callable[[int, int], nn.Module]] = {
    "resnet20": lambda k, c: CifarResNet(20, k, c),
    "resnet26": lambda k, c: CifarResNet(26, k, c),
    "resnet32": lambda k, c: CifarResNet(32, k, c),
    "resnet110": lambda k, c: CifarResNet(110, k, c),
    "resnet50": _resnet50,
    "small_cnn": lambda k, c: SmallCNN(k, c),
}


#: ``arch`` of a network stored as a TorchScript archive in its model file (rebuilt by
#: :func:`rslib.models.checkpoint.load_model`, not by :func:`build_model`)
TORCHSCRIPT = "torchscript"

#: ``arch`` of a network stored as a ``torch.export`` archive (an ExportedProgram, ``.pt2``) in its
#: model file (rebuilt by :func:`rslib.models.checkpoint.load_model`, not by :func:`build_model`)
EXPORTED = "exported"


_BUILDER = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def is_builder(arch: str) -> bool:
    """Whether ``arch`` names a builder function (``"package.module:function"``) rather than a
    registered architecture (registered names have no colon)."""
    return ":" in arch


def resolve_builder(builder: str) -> Callable[[], nn.Module]:
    """The function that ``"package.module:function"`` names, imported: it is called with no
    arguments and returns the network (without input normalisation). Raises a one-line
    ``ValueError`` when the name is malformed, the module cannot be imported or has no such
    function."""
    if not isinstance(builder, str) or not _BUILDER.fullmatch(builder):
        raise ValueError(f"a network builder is named 'package.module:function', got {builder!r}")
    module_name, function = builder.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} of the builder {builder!r} ({exc}): install it, or "
                         f"add its folder to PYTHONPATH") from None
    found = getattr(module, function, None)
    if not callable(found):
        raise ValueError(f"module {module_name!r} has no function {function!r} (the builder {builder!r})")
    return found


def with_input_layer(backbone: nn.Module, mean: Sequence[float], std: Sequence[float]) -> nn.Sequential:
    """``Sequential(InputNormalization(mean, std), backbone)``: every rslib model's layout."""
    return nn.Sequential(InputNormalization(mean, std), backbone)


def build_model(
    arch: str, num_classes: int, in_channels: int, mean: Sequence[float], std: Sequence[float]
) -> nn.Sequential:
    """``Sequential(InputNormalization(mean, std), backbone)`` for a registered architecture, or
    for a builder ``"package.module:function"`` (:func:`resolve_builder`; its network must fit
    ``num_classes`` and ``in_channels`` itself)."""
    if arch in (TORCHSCRIPT, EXPORTED):
        what = "a TorchScript" if arch == TORCHSCRIPT else "an exported (torch.export)"
        raise ValueError(f"{what} network is stored in its model file: load it with "
                         "rslib.models.checkpoint.load_model")
    if not is_builder(arch) and arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}, or a builder "
                         f"'package.module:function'")
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean/std need {in_channels} channel values")
    if is_builder(arch):
        backbone = resolve_builder(arch)()
        if not isinstance(backbone, nn.Module):
            raise ValueError(f"the builder {arch!r} returned a {type(backbone).__name__}, not a torch.nn.Module")
    else:
        backbone = ARCHITECTURES[arch](num_classes, in_channels)
    return with_input_layer(backbone, mean, std)
