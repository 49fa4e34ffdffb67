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
