"""Released checkpoints of the reference implementations (rslib.released).

Each test fabricates a checkpoint in a foreign layout — random weights, exactly the foreign key
names, wrappers and input layers (Cohen et al. / SmoothAdv / Consistency / SmoothMix:
``{'epoch', 'arch', 'state_dict', 'optimizer'}`` of ``Sequential(stateless normalise or centre
layer, net)``, ImageNet's net inside ``DataParallel``; MACER: ``{'net', 'epoch'}`` of a bare net on
[0, 1] pixels) — with a network written here the way those repositories write it, and checks that
the imported rslib model computes the same logits as the foreign arrangement on the same inputs.
"""

from __future__ import annotations

import torch
from torch import nn

import pytest

from rslib.checkpoint import load_model
from rslib.dataset_registry import DATASETS
from rslib.errors import CheckpointError
from rslib.released import import_released, released_model, smoothadv_input_layer


# --- the foreign side: networks and input layers as the reference repositories lay them out --------
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


CIFAR = DATASETS["cifar10"]


def cohen_file(path, net, arch, input_layer):
    model = nn.Sequential(input_layer, net)
    torch.save({"epoch": 150, "arch": arch, "state_dict": model.state_dict(),
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.001, "momentum": 0.9}]}}, path)
    return model.eval()


def release_path(tmp_path, *parts):
    path = tmp_path.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def same_logits(foreign: nn.Module, ours: nn.Module, shape, seed=0):
    x = torch.rand((4, *shape), generator=torch.Generator().manual_seed(seed))
    x = x + 0.25 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1))  # noisy, unclipped
    with torch.no_grad():
        expected, got = foreign(x), ours(x)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# --- formats -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["cohen", "consistency", "smoothmix"])
def test_cohen_layout_cifar_resnet_with_normalize_layer(tmp_path, fmt):
    path = release_path(tmp_path, "models", "cifar10", "resnet20", "noise_0.25", "checkpoint.pth.tar")
    foreign = cohen_file(path, randomise(ForeignCifarResNet(20), 1), "cifar_resnet20",
                         ForeignNormalize(CIFAR.mean, CIFAR.std))
    out = tmp_path / "model.pt"
    record = import_released(path, fmt, out, dataset="cifar10", arch="resnet20", sigma=0.25, method="gaussian", seed=0)
    model, spec, extra = load_model(out, dataset="cifar10", sigma=0.25, method="gaussian")
    same_logits(foreign, model, (3, 32, 32))
    assert (spec.mean, spec.std) == (CIFAR.mean, CIFAR.std)
    assert record["format"] == fmt and record["input_layer"] == "normalize" and len(record["sha256"]) == 64
    assert extra["imported"]["sha256"] == record["sha256"] and extra["train_seconds"] is None


@pytest.mark.parametrize(
    "folder, layer",
    [
        (("pretrained_models", "cifar10", "PGD_2steps_multiNoiseSamples", "8-multitrain", "eps_255", "cifar10",
          "resnet110", "noise_0.25"), "center"),
        (("pretrained_models", "cifar10", "finetune_cifar_from_imagenetPGD2steps", "PGD_2steps_30epochs_multinoise",
          "2-multitrain", "eps_255", "cifar10", "resnet110", "noise_0.25"), "normalize"),
    ],
)
def test_smoothadv_input_layer_follows_the_release_folder(tmp_path, folder, layer):
    path = release_path(tmp_path, *folder, "checkpoint.pth.tar")
    first = ForeignCenter(CIFAR.mean) if layer == "center" else ForeignNormalize(CIFAR.mean, CIFAR.std)
    foreign = cohen_file(path, randomise(ForeignCifarResNet(110), 2), "cifar_resnet110", first)
    model, spec, record = released_model(path, "smoothadv", dataset="cifar10", arch="resnet110", sigma=0.25,
                                         method="smoothadv", seed=0)
    assert record["input_layer"] == layer
    assert spec.std == ((1.0, 1.0, 1.0) if layer == "center" else CIFAR.std)
    same_logits(foreign, model, (3, 32, 32))
    # the wrong input layer gives other logits: the folder rule matters
    other = "normalize" if layer == "center" else "center"
    wrong, _, _ = released_model(path, "smoothadv", dataset="cifar10", arch="resnet110", sigma=0.25,
                                 method="smoothadv", seed=0, input_layer=other)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(wrong(x), foreign(x), atol=1e-3)


def test_smoothadv_folder_rule_needs_a_release_folder(tmp_path):
    assert smoothadv_input_layer("a/imagenet/PGD_1step/imagenet/eps_512/resnet50/noise_0.25/checkpoint.pth.tar") == "center"
    assert smoothadv_input_layer("pretrained_models/imagenet32/PGD_2steps/checkpoint.pth.tar") == "normalize"
    with pytest.raises(CheckpointError, match="set input_layer: normalize or center"):
        smoothadv_input_layer("downloads/best.pth.tar")


def test_macer_bare_resnet_on_unnormalised_pixels(tmp_path):
    net = randomise(ForeignCifarResNet(20), 3)
    path = tmp_path / "macer" / "440.pth"
    path.parent.mkdir()
    torch.save({"net": net.state_dict(), "epoch": 440}, path)
    out = tmp_path / "model.pt"
    import_released(path, "macer", out, dataset="cifar10", arch="resnet20", sigma=0.5, method="macer", seed=1)
    model, spec, extra = load_model(out, sigma=0.5)
    assert spec.mean == (0.0, 0.0, 0.0) and spec.std == (1.0, 1.0, 1.0)
    assert extra["imported"]["input_layer"] == "none" and extra["imported"]["arch_in_file"] is None
    same_logits(net, model, (3, 32, 32))


def test_imagenet_resnet50_inside_data_parallel(tmp_path):
    from torchvision.models import resnet50

    info = DATASETS["imagenet"]
    path = release_path(tmp_path, "models", "imagenet", "resnet50", "noise_0.50", "checkpoint.pth.tar")
    inner = randomise(resnet50(weights=None), 4)
    foreign = cohen_file(path, nn.DataParallel(inner), "resnet50", ForeignNormalize(info.mean, info.std))
    assert next(iter(foreign.state_dict())).startswith("1.module.")
    model, spec, record = released_model(path, "cohen", dataset="imagenet", arch="resnet50", sigma=0.5,
                                         method="gaussian", seed=0)
    x = torch.rand(1, 3, 64, 64)  # any size: adaptive pooling (the check is the weights' arrangement)
    with torch.no_grad():
        torch.testing.assert_close(model(x), foreign(x), rtol=1e-4, atol=1e-4)


# --- refusals: one line naming what was expected and what was found, nothing written ---------------
def _cohen20(tmp_path, folder="noise_0.25", arch="cifar_resnet20", classes=10):
    path = release_path(tmp_path, "models", folder, "checkpoint.pth.tar")
    cohen_file(path, randomise(ForeignCifarResNet(20, classes), 5), arch, ForeignNormalize(CIFAR.mean, CIFAR.std))
    return path


@pytest.mark.parametrize(
    "make, kwargs, message",
    [
        (lambda p: _cohen20(p, folder="noise_0.50"), {},
         r"expected a model for sigma=0.25, found one trained at sigma=0.5"),
        (lambda p: _cohen20(p), {"arch": "resnet110"},
         r"expected architecture 'resnet110' \(datasets.cifar10.arch\), found 'resnet20'"),
        (lambda p: _cohen20(p, arch="imagenet32_resnet110"), {},
         r"expected arch 'resnet20' .*found arch 'imagenet32_resnet110'"),
        (lambda p: _cohen20(p, classes=1000), {}, r"expected 10 classes \(cifar10\), found 1000"),
        (lambda p: _cohen20(p), {"fmt": "macer"}, r"expected a macer checkpoint \(a dict with 'net'\), found keys"),
        (lambda p: _cohen20(p), {"fmt": "caffe"}, r"unknown released-checkpoint format 'caffe'"),
    ],
)
def test_mismatched_or_foreign_files_are_refused(tmp_path, make, kwargs, message):
    path = make(tmp_path)
    args = dict(fmt="cohen", dataset="cifar10", arch="resnet20", sigma=0.25, method="smoothadv", seed=0) | kwargs
    out = tmp_path / "out" / "model.pt"
    fmt = args.pop("fmt")
    with pytest.raises(CheckpointError, match=message) as info:
        import_released(path, fmt, out, **args)
    assert "\n" not in str(info.value)
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_corrupt_release_file_is_refused(tmp_path):
    path = tmp_path / "noise_0.25" / "checkpoint.pth.tar"
    path.parent.mkdir()
    path.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        released_model(path, "cohen", dataset="cifar10", arch="resnet20", sigma=0.25, method="smoothadv", seed=0)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = _cohen20(tmp_path)
    blob = torch.load(path, weights_only=True)
    del blob["state_dict"]["1.layer2.0.downsample.0.weight"]
    torch.save(blob, path)
    with pytest.raises(CheckpointError, match=r"weights do not fit 'resnet20': missing keys \['layer2.0.downsample.0.weight'\]"):
        released_model(path, "cohen", dataset="cifar10", arch="resnet20", sigma=0.25, method="smoothadv", seed=0)
