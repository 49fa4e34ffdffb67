"""Networks and checkpoint files laid out as the reference repositories lay them out (Cohen et
al. / SmoothAdv / Consistency / SmoothMix: ``{'epoch', 'arch', 'state_dict', 'optimizer'}`` of
``Sequential(stateless normalise or centre layer, net)``; MACER: ``{'net', 'epoch'}`` of a bare
net), written here from their public code, for the import tests (unit and workflow)."""

from __future__ import annotations

import torch
from torch import nn


class ForeignNormalize(nn.Module):
    """Stateless (x − mean) / sd: mean and sd are plain attributes, not buffers (no state-dict keys)."""

    def __init__(self, means, sds):
        super().__init__()
        self.means, self.sds = torch.tensor(means).view(1, -1, 1, 1), torch.tensor(sds).view(1, -1, 1, 1)

    def forward(self, x):
        return (x - self.means) / self.sds


class ForeignCenter(nn.Module):
    """Stateless x − mean (SmoothAdv's input-centring layer)."""

    def __init__(self, means):
        super().__init__()
        self.means = torch.tensor(means).view(1, -1, 1, 1)

    def forward(self, x):
        return x - self.means


class ForeignBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class ForeignCifarResNet(nn.Module):
    """The CIFAR ResNet of the reference repositories: 16/32/64 channels, AvgPool2d(8), fc."""

    def __init__(self, depth, num_classes=10, in_channels=3):
        super().__init__()
        n = (depth - 2) // 6
        self.inplanes = 16
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._layer(16, n, 1)
        self.layer2 = self._layer(32, n, 2)
        self.layer3 = self._layer(64, n, 2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, num_classes)

    def _layer(self, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [ForeignBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [ForeignBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.avgpool(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.view(x.size(0), -1))


def randomise(net: nn.Module, seed: int) -> nn.Module:
    """Random weights and batch-norm statistics (so that a misplaced key or layer shows in the logits)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.dtype.is_floating_point:
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if "running_var" in name
                        else 0.2 * torch.randn(t.shape, generator=g))
    return net.eval()


def cohen_file(path, net, arch, input_layer):
    model = nn.Sequential(input_layer, net)
    torch.save({"epoch": 150, "arch": arch, "state_dict": model.state_dict(),
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.001, "momentum": 0.9}]}}, path)
    return model.eval()


# --- a network of an architecture rslib does not define, for "your own model" ---------------------
class DigitsMLP(nn.Module):
    """An MLP on 8×8 digits (64 → hidden → 10, ReLU): no architecture of rslib's registry, the
    kind of network a user brings as a TorchScript file or a state dict."""

    def __init__(self, hidden: int = 256):
        super().__init__()
        self.hidden = nn.Linear(64, hidden)
        self.out = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x.flatten(1))))


def digits_mlp() -> nn.Module:
    """The builder ``foreign_models:digits_mlp`` of a state-dict import (tests/ is on the path)."""
    return DigitsMLP()


def train_on_digits(net: nn.Module, train_split, *, steps: int = 300, sigma: float = 0.25, seed: int = 0,
                    mean: float = 0.0, std: float = 1.0) -> nn.Module:
    """``net`` trained for ``steps`` SGD steps of 64 digits under Gaussian noise at ``sigma`` on
    [0, 1] pixels (Cohen et al.'s training), behind the normalisation (x − mean) / std: well above
    chance under noise (about 90 % of the digits at σ = 0.25), in about a second."""
    images, labels = train_split.images.float() / 255, train_split.labels
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for p in net.parameters():
            if p.dim() > 1:
                nn.init.kaiming_uniform_(p, a=5 ** 0.5)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(labels), (64,), generator=g)
        x = images[idx] + sigma * torch.randn(images[idx].shape, generator=g)
        loss = nn.functional.cross_entropy(net((x - mean) / std), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()
