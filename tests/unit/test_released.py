"""Released checkpoints of the reference implementations (rslib.models.released).

Each test fabricates a checkpoint in a foreign layout — random weights, exactly the foreign key
names, wrappers and input layers (Cohen et al. / SmoothAdv / Consistency / SmoothMix:
``{'epoch', 'arch', 'state_dict', 'optimizer'}`` of ``Sequential(stateless normalise or centre
layer, net)``, ImageNet's net inside ``DataParallel``; MACER: ``{'net', 'epoch'}`` of a bare net on
[0, 1] pixels) — with a network written here the way those repositories write it, and checks that
the imported rslib model computes the same logits as the foreign arrangement on the same inputs.
"""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import torch
from torch import nn

import pytest

from rslib.models.checkpoint import load_model
from rslib.data.load import load_split
from rslib.data.prepare import prepare_dataset
from rslib.data.registry import DATASETS
from rslib.runtime.errors import CheckpointError
from rslib.models.architectures import build_model
from rslib.certification.plausibility import CheckImages, import_released, plausibility_threshold
from rslib.models.released import input_layer_constants, release_root, released_model, smoothadv_input_layer
from rslib.data.load import evaluation_subset
from foreign_models import ForeignNormalize, ForeignCenter, ForeignCifarResNet, randomise, cohen_file


CIFAR = DATASETS["cifar10"]


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
    record = import_released(path, fmt, out, check=None, dataset="cifar10", arch="resnet20", sigma=0.25,
                             method="gaussian", seed=0)
    model, spec, extra = load_model(out, dataset="cifar10", sigma=0.25, method="gaussian")
    same_logits(foreign, model, (3, 32, 32))
    assert (spec.mean, spec.std) == (CIFAR.mean, CIFAR.std)
    assert record["format"] == fmt and record["input_layer"] == "normalize" and len(record["sha256"]) == 64
    assert record["plausibility"] is None and extra["imported"]["plausibility"] is None  # check=None: not checked
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


def test_smoothadv_folder_rule_applies_only_below_the_archive_root():
    assert smoothadv_input_layer("pretrained_models/imagenet/PGD_1step/imagenet/eps_512/resnet50/noise_0.25/"
                                 "checkpoint.pth.tar") == "center"
    assert smoothadv_input_layer("/data/pretrained_models/imagenet32/PGD_2steps/checkpoint.pth.tar") == "normalize"
    assert smoothadv_input_layer("pretrained_models/cifar10/self_training/PGD_2steps/noise_0.25/x.pt") == "normalize"
    # the folders after the LAST pretrained_models decide (an archive unpacked inside another)
    assert smoothadv_input_layer("pretrained_models/imagenet32/old/pretrained_models/cifar10/PGD_2steps/eps_64/"
                                 "cifar10/resnet110/noise_0.25/checkpoint.pth.tar") == "center"
    # the release folder names alone are not enough: the old rule read these as "center"
    for path in ("a/imagenet/PGD_1step/imagenet/eps_512/resnet50/noise_0.25/checkpoint.pth.tar",
                 "checkpoints/cifar10/smoothadv_best/noise_0.25/checkpoint.pth.tar", "downloads/best.pth.tar"):
        with pytest.raises(CheckpointError, match=(
                rf"^{re.escape(path)}: SmoothAdv checkpoints do not record their input layer, and the path is not "
                r"below the release archive's pretrained_models/ folder whose subfolders decide it \(the authors' README\); "
                r"set input_layer: normalize or center$")):
            smoothadv_input_layer(path)
    with pytest.raises(CheckpointError, match=(
            r"^pretrained_models/mnist/noise_0.25/c.pth.tar: below pretrained_models/ the folder 'mnist' is none of "
            r"imagenet32, imagenet, cifar10 that decide SmoothAdv's input layer \(the authors' README\); "
            r"set input_layer: normalize or center$")):
        smoothadv_input_layer("pretrained_models/mnist/noise_0.25/c.pth.tar")


@pytest.mark.parametrize(
    "path, root",
    [
        ("models/cifar10/resnet110/noise_0.25/checkpoint.pth.tar", "cohen"),
        ("/x/models/imagenet/resnet50/noise_1.00/checkpoint.pth.tar", "cohen"),
        ("released/pretrained_models/cifar10/PGD_2steps/eps_64/cifar10/resnet110/noise_0.25/checkpoint.pth.tar",
         "smoothadv"),
        ("models/pretrained_models/cifar10/PGD_2steps/eps_64/cifar10/resnet110/noise_0.25/checkpoint.pth.tar",
         "smoothadv"),
        ("pretrained_models/x/models/cifar10/resnet110/noise_0.25/checkpoint.pth.tar", "cohen"),  # the deeper root
        ("models/my_runs/cifar10/noise_0.25/checkpoint.pth.tar", None),  # a folder named models is not Cohen's root
        ("models/cifar10/resnet110/checkpoint.pth.tar", None),
        ("macer/440.pth", None),
    ],
)
def test_release_root_is_the_archive_shape_not_a_folder_name(path, root):
    assert release_root(path) == root


def test_macer_bare_resnet_on_unnormalised_pixels(tmp_path):
    net = randomise(ForeignCifarResNet(20), 3)
    path = tmp_path / "macer" / "440.pth"
    path.parent.mkdir()
    torch.save({"net": net.state_dict(), "epoch": 440}, path)
    out = tmp_path / "model.pt"
    import_released(path, "macer", out, check=None, dataset="cifar10", arch="resnet20", sigma=0.5, method="macer",
                    seed=1)
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
        import_released(path, fmt, out, check=None, **args)
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


# --- the silent mistakes of the folder rule: each refused before anything is read or written -------
def _smoothadv_file(tmp_path, *folders, layer="center"):
    path = release_path(tmp_path, *folders, "checkpoint.pth.tar")
    first = ForeignCenter(CIFAR.mean) if layer == "center" else ForeignNormalize(CIFAR.mean, CIFAR.std)
    return path, cohen_file(path, randomise(ForeignCifarResNet(20), 6), "cifar_resnet20", first)


COHEN_RELEASE = ("models", "cifar10", "resnet110", "noise_0.25")
SMOOTHADV_CENTRE = ("pretrained_models", "cifar10", "PGD_2steps", "eps_64", "cifar10", "resnet110", "noise_0.25")


@pytest.mark.parametrize(
    "folders, layer, fmt, message",
    [
        # a Cohen file declared smoothadv: its models/cifar10/… path made the old folder rule centre it
        (COHEN_RELEASE, "normalize", "smoothadv",
         r"the file lies in Cohen et al.'s release layout models/<cifar10\|imagenet>/<arch>/noise_<σ>/ "
         r"\(locuslab/smoothing\), whose models normalise their input, but format smoothadv would centre it; "
         r"set format: cohen \(or input_layer: if this really is a SmoothAdv file\)$"),
        # a SmoothAdv normalise-layer release moved to another folder that contains cifar10/
        (("checkpoints", "cifar10", "smoothadv_finetuned", "noise_0.25"), "normalize", "smoothadv",
         r"SmoothAdv checkpoints do not record their input layer, and the path is not below the release "
         r"archive's pretrained_models/ folder whose subfolders decide it \(the authors' README\); "
         r"set input_layer: normalize or center$"),
        # a SmoothAdv centre-layer file declared cohen (or a format sharing Cohen's layout)
        *[(SMOOTHADV_CENTRE, "center", fmt,
           r"the file lies below pretrained_models/, the root of SmoothAdv's release archive "
           rf"\(Hadisalman/smoothing-adversarial\) whose input layer follows the release folder, but format {fmt} "
           rf"always normalises; set format: smoothadv \(or input_layer: if this really is a {fmt} file\)$")
          for fmt in ("cohen", "consistency", "smoothmix")],
    ],
)
def test_files_in_another_release_layout_than_declared_are_refused(tmp_path, folders, layer, fmt, message):
    path, _ = _smoothadv_file(tmp_path, *folders, layer=layer)
    out = tmp_path / "out" / "model.pt"
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: {message}"):
        import_released(path, fmt, out, check=None, dataset="cifar10", arch="resnet20", sigma=0.25,
                        method="smoothadv", seed=0)
    assert not out.parent.exists()


def test_an_explicit_input_layer_overrides_the_folder_rules(tmp_path):
    """The user who says which layer the file has is believed (the plausibility check still
    runs in the workflow): a normalising file in Cohen's layout declared smoothadv, and a
    centring SmoothAdv file outside its archive."""
    for folders, layer in ((COHEN_RELEASE, "normalize"), (("downloads", "noise_0.25"), "center")):
        path, foreign = _smoothadv_file(tmp_path / layer, *folders, layer=layer)
        model, _, record = released_model(path, "smoothadv", dataset="cifar10", arch="resnet20", sigma=0.25,
                                          method="smoothadv", seed=0, input_layer=layer)
        assert record["input_layer"] == layer
        same_logits(foreign, model, (3, 32, 32))


# --- files that pickle Python objects: not corrupt, loaded only when the user trusts them ----------
def test_a_file_that_pickles_python_objects_is_named_as_such_and_loads_with_allow_pickle(tmp_path):
    path = release_path(tmp_path, *COHEN_RELEASE, "checkpoint.pth.tar")
    net = randomise(ForeignCifarResNet(20), 7)
    foreign = nn.Sequential(ForeignNormalize(CIFAR.mean, CIFAR.std), net).eval()
    # torch names the first object it meets: the Namespace (a numpy epoch follows)
    torch.save({"args": argparse.Namespace(lr=0.1, noise_sd=0.25), "epoch": np.int64(90), "arch": "cifar_resnet20",
                "state_dict": foreign.state_dict()}, path)
    slot = dict(dataset="cifar10", arch="resnet20", sigma=0.25, method="gaussian", seed=0)
    out = tmp_path / "out" / "model.pt"
    entry = "methods.gaussian.cifar10.released.0.25"
    with pytest.raises(CheckpointError, match=(
            rf"^{re.escape(str(path))} holds Python objects besides tensors \(argparse.Namespace\), which torch's "
            r"weights-only loader refuses; the file is not damaged: load it only if you trust its source, by setting "
            rf"allow_pickle: true in {re.escape(entry)}$")):
        import_released(path, "cohen", out, check=None, entry=entry, **slot)
    assert not out.parent.exists()
    record = import_released(path, "cohen", out, check=None, entry=entry, allow_pickle=True, **slot)
    assert record["allow_pickle"] is True and record["epoch_in_file"] == 90
    model, _, extra = load_model(out)  # rslib's own file: weights-only, and JSON-only extras
    assert extra["imported"]["allow_pickle"] is True
    same_logits(foreign, model, (3, 32, 32))


# --- plausibility: real (tiny) trained networks in foreign layouts ---------------------------------
DIGITS = DATASETS["digits"]


@pytest.fixture(scope="module")
def digits_check(tmp_path_factory) -> tuple[CheckImages, object]:
    """The first 100 of digits' evaluation subset (the demo's: the first 100 test images), as the
    import_model rule reads them, and the training split."""
    meta = prepare_dataset("digits", tmp_path_factory.mktemp("data") / "digits")
    check = CheckImages.from_dataset(load_split(meta, "test"),
                                     evaluation_subset(meta, {"start": 0, "stride": 1, "count": 500}), noise_seed=0)
    return check, load_split(meta, "train")


def _train(train_split, layer: str, steps: int, sigma: float = 0.25, seed: int = 0) -> nn.Module:
    """ResNet-20 trained behind ``layer`` for ``steps`` SGD steps of 64 digits under Gaussian
    noise (Cohen et al.'s training, written here; about 2 s on one thread): far above chance
    under noise (about 80 % of the check's images at σ = 0.25), far from a converged model."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model("resnet20", 10, 1, *input_layer_constants(DIGITS, layer))
    images, labels = train_split.images.float() / 255, train_split.labels
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(labels), (64,), generator=g)
        x = images[idx] + sigma * torch.randn(images[idx].shape, generator=g)
        loss = nn.functional.cross_entropy(model(x), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def centring_net(digits_check) -> nn.Module:
    """A network trained behind SmoothAdv's centring layer (x − mean)."""
    return _train(digits_check[1], "center", steps=60)


@pytest.fixture(scope="module")
def macer_net(digits_check) -> nn.Module:
    """A network trained on [0, 1] pixels with no input layer (MACER's)."""
    return _train(digits_check[1], "none", steps=40, seed=1)


def _digits_slot(**kw):
    return dict(dataset="digits", arch="resnet20", sigma=0.25, method="smoothadv", seed=0) | kw


def test_threshold_is_twice_chance_and_at_least_20_percent():
    assert plausibility_threshold(10) == 0.2 and plausibility_threshold(1000) == 0.2
    assert plausibility_threshold(5) == 0.4


def test_a_wrong_input_layer_is_refused_the_right_one_recorded(tmp_path, digits_check, centring_net):
    """A centring network in SmoothAdv's layout, in a release folder whose rule normalises
    (finetune_cifar_from_imagenetPGD2steps): imported as "normalize" it is refused — the centring
    layer classifies clearly more of the same noisy images; with input_layer: center it passes
    and the measurement is recorded in the model file."""
    check, _ = digits_check
    path = release_path(tmp_path, "pretrained_models", "cifar10", "finetune_cifar_from_imagenetPGD2steps",
                        "PGD_10steps", "eps_64", "cifar10", "resnet20", "noise_0.25", "checkpoint.pth.tar")
    cohen_file(path, centring_net[1], "cifar_resnet20", ForeignCenter(DIGITS.mean))
    out = tmp_path / "out" / "model.pt"
    entry = "methods.smoothadv.digits.released.0.25"
    with pytest.raises(CheckpointError, match=(
            rf"^{re.escape(str(path))}: implausible import: \d+% of 100 evaluation images correct under one noise "
            r"draw at sigma=0.25 \(threshold 20%\), but input layer center gets \d+% on the same noisy images; "
            r"suspects: input layer normalize, sigma 0.25, format smoothadv; correct them, or set "
            rf"accept_implausible: true in {re.escape(entry)} to import it anyway$")) as info:
        import_released(path, "smoothadv", out, check=check, entry=entry, **_digits_slot())
    assert "\n" not in str(info.value)
    assert not out.parent.exists()

    record = import_released(path, "smoothadv", out, check=check, entry=entry, **_digits_slot(input_layer="center"))
    _, spec, extra = load_model(out, dataset="digits", sigma=0.25)
    measured = extra["imported"]["plausibility"]
    assert measured == json.loads(json.dumps(record["plausibility"]))
    assert measured["images"] == 100 and measured["threshold"] == 0.2 and measured["passed"] is True
    assert measured["accepted_implausible"] is False and measured["problem"] is None
    assert measured["accuracy"] >= 0.5 and measured["correct"] == round(100 * measured["accuracy"])
    by_layer = measured["accuracy_by_input_layer"]
    assert by_layer["center"] == measured["accuracy"] >= by_layer["normalize"] + 0.10
    assert spec.std == (1.0,)
    # one seeded draw: the same measurement on every rerun
    again = import_released(path, "smoothadv", tmp_path / "again.pt", check=check, **_digits_slot(input_layer="center"))
    assert again["plausibility"] == record["plausibility"]


def test_accept_implausible_imports_and_marks_the_model(tmp_path, digits_check, centring_net):
    check, _ = digits_check
    path = release_path(tmp_path, "pretrained_models", "cifar10", "self_training", "noise_0.25", "checkpoint.pth.tar")
    cohen_file(path, centring_net[1], "cifar_resnet20", ForeignCenter(DIGITS.mean))
    out = tmp_path / "model.pt"
    record = import_released(path, "smoothadv", out, check=check, accept_implausible=True, **_digits_slot())
    measured = load_model(out)[2]["imported"]["plausibility"]
    assert record["input_layer"] == "normalize"
    assert measured["passed"] is False and measured["accepted_implausible"] is True
    assert measured["problem"].startswith(f"{round(100 * measured['accuracy'])}% of 100 evaluation images correct")


def test_a_macer_file_at_a_much_larger_sigma_is_refused(tmp_path, digits_check, macer_net):
    """MACER's paths have no noise_<σ> folder, so only the accuracy can tell. A network trained
    at σ = 0.25 passes in its own slot; configured at σ = 4.0 it is at chance and refused. On the
    easy 8×8 digits it keeps about a third of the images at σ = 1.0 and about a fifth at σ = 2.0,
    at the threshold: a single draw catches only mismatches the data turns into chance, and
    never a file trained at a larger σ than its slot's (less noise does not hurt)."""
    check, _ = digits_check
    path = tmp_path / "macer" / "440.pth"
    path.parent.mkdir()
    torch.save({"net": macer_net[1].state_dict(), "epoch": 440}, path)
    slot = _digits_slot(method="macer")
    record = import_released(path, "macer", tmp_path / "ok.pt", check=check, **slot)
    assert record["plausibility"]["passed"] and record["plausibility"]["accuracy"] >= 0.5
    entry = "methods.macer.digits.released.4.0"
    out = tmp_path / "out" / "model.pt"
    with pytest.raises(CheckpointError, match=(
            rf"^{re.escape(str(path))}: implausible import: 1?\d% of 100 evaluation images correct under one noise "
            r"draw at sigma=4, below the threshold 20% \(chance 10%\); suspects: input layer none, sigma 4, "
            rf"format macer; correct them, or set accept_implausible: true in {re.escape(entry)} to import it "
            r"anyway$")):
        import_released(path, "macer", out, check=check, entry=entry, **(slot | {"sigma": 4.0}))
    assert not out.parent.exists()


def test_the_check_reads_the_first_100_evaluation_images_or_all_of_a_smaller_subset(digits_check):
    check, _ = digits_check
    test = [(torch.full((1, 8, 8), i / 500), i % 10) for i in range(500)]
    assert check.indices == tuple(range(100)) and check.images.shape == (100, 1, 8, 8)
    small = CheckImages.from_dataset(test, [3, 28, 53], noise_seed=5)
    assert small.indices == (3, 28, 53) and small.labels.tolist() == [3, 8, 3] and small.noise_seed == 5
    torch.testing.assert_close(small.images[:, 0, 0, 0], torch.tensor([3, 28, 53]) / 500)


# --- models of other codebases: TorchScript archives and state dicts with their builder ---------------
@pytest.fixture(scope="module")
def digits_mlp_net(digits_check) -> nn.Module:
    """A DigitsMLP (an architecture rslib does not define) trained on [0, 1] pixels under noise."""
    from foreign_models import DigitsMLP, train_on_digits

    return train_on_digits(DigitsMLP(), digits_check[1])


def _generic_slot(**kw):
    return dict(dataset="digits", arch=None, sigma=0.25, method="gaussian", seed=0) | kw


def test_a_torchscript_release_is_imported_checked_and_recorded(tmp_path, digits_check, digits_mlp_net):
    """format torchscript: σ from a noise_<σ> folder, the class count from one forward pass, the
    plausibility check (input layer none by default), the SHA-256 of the archive; the model file
    loads (allow_code) and computes the scripted network's logits."""
    from rslib.runtime.io import file_digest

    check, _ = digits_check
    path = release_path(tmp_path, "mine", "noise_0.25", "mlp.ts")
    torch.jit.save(torch.jit.script(digits_mlp_net), str(path))
    out = tmp_path / "out" / "model.pt"
    record = import_released(path, "torchscript", out, check=check, **_generic_slot())
    assert record["format"] == "torchscript" and record["sha256"] == file_digest(path, "sha256")
    assert record["input_layer"] == "none" and record["mean"] == [0.0] and record["std"] == [1.0]
    assert record["builder"] is None and record["sigma_in_path"] == 0.25
    measured = record["plausibility"]
    assert measured["passed"] and measured["accuracy"] >= 0.5 and set(measured["accuracy_by_input_layer"]) == {
        "normalize", "center", "none"}
    model, spec, extra = load_model(out, dataset="digits", sigma=0.25, allow_code=True)
    assert spec.arch == "torchscript" and extra["imported"] == json.loads(json.dumps(record))
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), digits_mlp_net(x))

    wrong_sigma = release_path(tmp_path, "mine", "noise_0.50", "mlp.ts")
    wrong_sigma.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match=re.escape(
            f"{wrong_sigma}: expected a model for sigma=0.25, found one trained at sigma=0.5 (its folder noise_0.5)")):
        import_released(wrong_sigma, "torchscript", tmp_path / "x.pt", check=check, **_generic_slot())


def export_to(path, net: nn.Module, batch=None, example_batch: int = 2) -> None:
    """``torch.export.save`` of ``net`` exported on digits-shaped inputs; ``batch``: the batch
    dimension's Dim (None: a fixed batch of ``example_batch``)."""
    dynamic = ({0: batch},) if batch is not None else None
    program = torch.export.export(net, (torch.rand(example_batch, 1, 8, 8),), dynamic_shapes=dynamic)
    torch.export.save(program, str(path))


def test_an_exported_release_is_imported_checked_and_recorded(tmp_path, digits_check, digits_mlp_net):
    """format exported (a torch.export archive, .pt2): imported like TorchScript, recognised by its
    contents, stored whole in the model file, which loads (allow_code) and computes the exported
    network's logits on batches of any size."""
    from rslib.models.checkpoint import ExportedNetwork
    from rslib.models.released import load_any_model
    from rslib.runtime.io import file_digest

    check, _ = digits_check
    path = release_path(tmp_path, "mine", "noise_0.25", "mlp.pt2")
    export_to(path, digits_mlp_net.eval(), torch.export.Dim("batch"))
    out = tmp_path / "out" / "model.pt"
    record = import_released(path, "exported", out, check=check, **_generic_slot())
    assert record["format"] == "exported" and record["sha256"] == file_digest(path, "sha256")
    assert record["input_layer"] == "none" and record["plausibility"]["passed"]
    model, spec, extra = load_model(out, dataset="digits", sigma=0.25, allow_code=True)
    assert spec.arch == "exported" and extra["imported"] == json.loads(json.dumps(record))
    assert isinstance(model[1], ExportedNetwork) and model[1].archive == path.read_bytes()
    with pytest.raises(CheckpointError, match="holds its network as a torch.export archive"):
        load_model(out, dataset="digits", sigma=0.25)
    found, found_spec, _ = load_any_model(path, dataset="digits", sigma=0.25)  # no format named: its contents say
    assert found_spec.arch == "exported"
    with torch.no_grad():
        for size in (1, 7, 300):
            x = torch.rand(size, 1, 8, 8)
            torch.testing.assert_close(model(x), digits_mlp_net(x), rtol=1e-5, atol=1e-5)
            assert torch.equal(found(x), model(x))


class _BatchNormMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)


def _linear(classes: int = 10, inputs: int = 64) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, classes)).eval()


def _scripted(net: nn.Module):
    return lambda path: torch.jit.save(torch.jit.script(net), str(path))


def _exported(net: nn.Module, batch=torch.export.Dim("batch"), example_batch: int = 2):
    return lambda path: export_to(path, net, batch, example_batch)


def _not_an_archive(path) -> None:
    torch.save({"w": torch.zeros(3)}, path)


@pytest.mark.parametrize("fmt, make, message", [
    ("torchscript", _scripted(_linear(classes=5)), "{path}: expected 10 classes (digits), found 5"),
    ("torchscript", _scripted(_linear(inputs=192)),
     "{path}: the network fails on a batch of digits images of shape (2, 1, 8, 8): "),
    ("torchscript", _not_an_archive,
     "{path} is not a TorchScript archive that torch.jit.load reads: PytorchStreamReader failed locating file "
     "constants.pkl: file not found"),
    ("exported", _exported(_linear(), batch=None),
     "{path}: the program was exported for batches of exactly 2 images, but certification feeds batches of any "
     "size: export it with torch.export.export(net.eval(), (x,), dynamic_shapes=({{0: torch.export.Dim('batch')}},))"),
    ("exported", _exported(_linear(), batch=torch.export.Dim("batch", max=512)),
     "{path}: the program was exported for batches of at most 512 images, but certification feeds batches as large "
     "as its batch size (--batch, certify.batch_size): "),
    ("exported", _exported(_BatchNormMLP().train(), example_batch=4),
     "{path}: the exported network's logits for an image depend on the rest of its batch or change between calls, "
     "as in training mode (batch norm on batch statistics, dropout); an exported graph keeps the mode it was "
     "exported in: "),
    ("exported", _exported(_linear(classes=5)), "{path}: expected 10 classes (digits), found 5"),
    ("exported", _not_an_archive, "{path} is not a torch.export archive that torch.export.load reads: "),
])
def test_an_archive_that_does_not_fit_the_dataset_or_cannot_run_is_refused(tmp_path, fmt, make, message):
    """TorchScript and torch.export archives: the class count and the forward pass on the dataset's
    shape; an exported program also needs a dynamic, unbounded batch and eval-mode behaviour."""
    path = tmp_path / "net"
    make(path)
    with pytest.raises(CheckpointError) as info:
        import_released(path, fmt, tmp_path / "out.pt", check=None, **_generic_slot())
    assert str(info.value).startswith(message.format(path=path)) and "\n" not in str(info.value)
    assert not (tmp_path / "out.pt").exists()


def test_a_state_dict_release_with_its_builder_and_normalisation(tmp_path, digits_check):
    """format state_dict: the builder rebuilds the network, a DataParallel 'module.' prefix is
    dropped, mean/std of the entry become the input layer (compared with the dataset's three by
    the plausibility check), and the model file names the builder."""
    from foreign_models import DigitsMLP, train_on_digits

    check, train = digits_check
    net = train_on_digits(DigitsMLP(), train, steps=200, mean=0.5, std=0.5)
    path = tmp_path / "weights.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    out = tmp_path / "model.pt"
    slot = _generic_slot(arch="foreign_models:digits_mlp", input_layer={"mean": [0.5], "std": [0.5]})
    record = import_released(path, "state_dict", out, check=check, **slot)
    assert record["builder"] == "foreign_models:digits_mlp" and record["input_layer"] == "mean=[0.5] std=[0.5]"
    assert set(record["plausibility"]["accuracy_by_input_layer"]) == {"mean=[0.5] std=[0.5]", "normalize", "center",
                                                                      "none"}
    assert record["plausibility"]["passed"]
    model, spec, _ = load_model(out, allow_code=True)
    assert spec.arch == "foreign_models:digits_mlp" and spec.mean == (0.5,) and spec.std == (0.5,)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), net((x - 0.5) / 0.5))

    for bad_slot, message in [
        (_generic_slot(), f"{path}: format state_dict needs the function that builds its network, "
                          "'package.module:function', got None"),
        (slot | {"input_layer": {"mean": [0.5, 0.5], "std": [0.5, 0.5]}},
         f"{path}: mean and std need 1 values each (digits has 1-channel images), got 2 and 2"),
        (slot | {"arch": "torchvision.models:resnet18"}, f"{path}: weights do not fit 'torchvision.models:resnet18': "
                                                         "missing keys ['conv1.weight', 'bn1.weight', 'bn1.bias']…"),
    ]:
        with pytest.raises(CheckpointError) as info:
            import_released(path, "state_dict", tmp_path / "refused.pt", check=check, **bad_slot)
        assert str(info.value).startswith(message), str(info.value)
    assert not (tmp_path / "refused.pt").exists()
