"""Released checkpoints of the reference implementations as ordinary rslib models.

``000`` did not retrain SmoothAdv: "For SmoothAdv, we pick the best models under different
σ = 0.25, 0.50, 1.00 from the Github repository of [19]" (Sec. 4, "Baseline models"). This
module turns such a file into an rslib model file (architecture, dataset, σ, method and input
normalisation recorded beside the weights), so that certification, stored member outputs,
ensembles, tables and figures treat it like a model the workflow trained.

Formats (read from the public code of each repository; the loader is ours):

``cohen`` — Cohen et al. (locuslab/smoothing), and the same layout written by
    ``consistency`` (jh-jeong/smoothing-consistency) and ``smoothmix`` (jh-jeong/smoothmix):
    ``torch.save({'epoch', 'arch', 'state_dict', 'optimizer'})`` of
    ``Sequential(NormalizeLayer(mean, std), net)``. The normalisation layer holds no state, so
    keys start at ``1.`` (``1.conv1.weight`` …) and the constants are those of the repository
    (CIFAR-10 mean/std, ImageNet mean/std: the values of :mod:`rslib.data.registry`). On
    ImageNet ``net`` is ``DataParallel(resnet50)``: keys ``1.module.conv1.weight`` ….
    ``arch`` is ``cifar_resnet20``, ``cifar_resnet110`` or ``resnet50``.
``smoothadv`` — Salman et al. (Hadisalman/smoothing-adversarial): Cohen's layout, but the
    input layer is either ``NormalizeLayer`` or ``InputCenterLayer`` (x − mean, no division),
    and the file does not record which. The authors' README gives the rule by release folder,
    below the root ``pretrained_models/`` of their archive: ``imagenet32/``,
    ``cifar10/finetune_cifar_from_imagenetPGD2steps/`` and ``cifar10/self_training/``
    normalise; ``imagenet/`` and every other ``cifar10/`` folder centre.
    :func:`smoothadv_input_layer` applies that rule to the folders after the path's last
    ``pretrained_models`` component, and only there: any other path needs ``input_layer``
    (the folder names alone also occur elsewhere — Cohen's ``models/cifar10/…`` normalises).
    An explicit ``input_layer`` overrides the rule.
``macer`` — Zhai et al. (RuntianZ/macer): ``torch.save({'net', 'epoch'})`` of the bare
    ResNet-110 (``conv1.weight`` …, no prefix) that takes [0, 1] pixels with no normalisation
    at all (its data pipeline is ``ToTensor()`` only).

Models of any other codebase (:data:`GENERIC_FORMATS`), whose architecture rslib does not define:

``torchscript`` — a TorchScript archive (``torch.jit.save`` of a scripted or traced network);
    the model file stores the archive (:mod:`rslib.models.checkpoint`).
``exported`` — a ``torch.export`` archive (``torch.export.save`` of an ``ExportedProgram``, a
    ``.pt2`` file) of the network in eval mode, with a dynamic, unbounded batch dimension
    (:func:`rslib.models.checkpoint.load_exported` checks both); the model file stores the archive.
``state_dict`` — ``torch.save(net.state_dict())`` (a ``module.`` prefix of ``DataParallel`` is
    dropped) with the builder of ``net``, ``arch="package.module:function"``: a function called
    with no arguments that returns the network (:func:`rslib.models.architectures.resolve_builder`);
    the model file names the builder.

These networks take what their input layer gives them: by default nothing is done to the [0, 1]
pixels (input layer ``none``); ``input_layer`` names one of the dataset's layers (``normalize``
with the dataset's mean and std, ``center``) or gives ``{"mean": [...], "std": [...]}``
(:func:`generic_input_layer`). Their class count is checked on one forward pass over a batch of
the dataset's image shape.

:func:`load_any_model` is the one loader of a model file of any supported kind: an rslib
model file, a TorchScript or torch.export archive (all three recognised by their contents), or a
file of a named format; the ``import_model`` rule and ``rslib certify`` (:mod:`rslib.cli`) use it.

The CIFAR ResNets of all these repositories have the key names and shapes of
:class:`rslib.models.architectures.CifarResNet` (``conv1``, ``bn1``, ``layer{1,2,3}.k.{conv1,bn1,conv2,bn2}``,
``layer{2,3}.0.downsample.{0,1}``, ``fc``); their average pooling is ``AvgPool2d(8)``, equal to
our adaptive pooling on 32×32 inputs.

What a file does not record is checked where it can be: the architecture against the
dataset's configured one (``arch`` key, or the ResNet depth counted from the keys), the number
of classes against the dataset, σ against a ``noise_<σ>`` folder in the path (the layout of
Cohen's and Salman's releases: ``…/noise_0.25/checkpoint.pth.tar``), and the format against
the release archive the path lies in (:func:`release_root`): a file below SmoothAdv's
``pretrained_models/`` declared ``cohen``/``consistency``/``smoothmix`` (which always
normalise), or one in Cohen et al.'s ``models/<cifar10|imagenet>/<arch>/noise_<σ>/`` declared
``smoothadv`` (which would centre a normalising model), is refused unless ``input_layer`` says
which layer the file has. A mismatch, or a file of another format, is refused with one line
naming what was expected and what was found, and nothing is written.

What no path or key can show — a wrong input layer, σ or format that still loads — is caught
after the import where the data allows it, by :func:`rslib.certification.plausibility.plausibility`: the model's accuracy on
the first 100 evaluation images under one seeded Gaussian draw at the slot's σ must reach
:func:`rslib.certification.plausibility.plausibility_threshold` (20 %), and no other input layer may do clearly better on the
same noisy images (see there for the threshold and for which mistakes it cannot see).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rslib.data.registry import DatasetInfo, dataset_info
from rslib.models.architectures import (
    ARCHITECTURES,
    EXPORTED,
    TORCHSCRIPT,
    build_model,
    is_builder,
    with_input_layer,
)
from rslib.models.checkpoint import (
    FORMAT,
    ModelSpec,
    is_exported_archive,
    is_torchscript_archive,
    load_exported,
    load_model,
    load_torchscript,
    pickled_object,
    read_checkpoint,
)
from rslib.models.formats import (
    GENERIC_FORMATS,
    GENERIC_FORMATS_TEXT,
    INPUT_LAYERS,
    REFERENCE_FORMATS,
    RELEASED_FORMATS,
)
from rslib.runtime.errors import CheckpointError
from rslib.runtime.io import file_digest

#: format name → (dictionary key of the weights, default input layer)
FORMATS: dict[str, tuple[str, str]] = {
    "cohen": ("state_dict", "normalize"),
    "consistency": ("state_dict", "normalize"),
    "smoothmix": ("state_dict", "normalize"),
    "smoothadv": ("state_dict", "by_folder"),
    "macer": ("net", "none"),
}


assert tuple(sorted(FORMATS)) == REFERENCE_FORMATS


#: formats that always normalise: Cohen et al.'s, and the repositories that kept its layout
COHEN_LAYOUT = ("cohen", "consistency", "smoothmix")


#: ``arch`` names of the Cohen-layout repositories → our architectures
FOREIGN_ARCHS = {"cifar_resnet20": "resnet20", "cifar_resnet110": "resnet110", "resnet50": "resnet50"}


#: root folder of SmoothAdv's release archive (the authors' README: "pretrained_models/cifar10/ contains …")
SMOOTHADV_ROOT = "pretrained_models"


#: SmoothAdv's input layer by the first folder below the root (the authors' README) …
SMOOTHADV_TOP_FOLDERS = {"imagenet32": "normalize", "imagenet": "center", "cifar10": "center"}


#: … except these second folders below ``cifar10/``, which normalise
SMOOTHADV_NORMALIZE_CIFAR10 = ("finetune_cifar_from_imagenetPGD2steps", "self_training")


#: Cohen et al.'s release archive (locuslab/smoothing): models/<dataset>/<arch>/noise_<σ>/checkpoint.pth.tar
COHEN_ROOT, COHEN_DATASETS = "models", ("cifar10", "imagenet")


_NOISE_FOLDER = re.compile(r"(?:^|/)noise_(\d+(?:\.\d+)?)(?:/|$)")


_NOISE_NAME = re.compile(r"noise_\d+(?:\.\d+)?")








def _folders(path: str | os.PathLike) -> list[str]:
    """The folder components of ``path`` (its file name dropped)."""
    return Path(path).as_posix().split("/")[:-1]


def release_root(path: str | os.PathLike) -> str | None:
    """Whose release archive ``path`` lies in, by the archive's own root folder: ``"smoothadv"``
    below a ``pretrained_models/`` folder (Salman et al.'s archive), ``"cohen"`` in a
    ``models/<cifar10|imagenet>/<arch>/noise_<σ>/`` folder (Cohen et al.'s:
    ``models/cifar10/resnet110/noise_0.25/checkpoint.pth.tar``), None elsewhere. When both
    occur, the deeper one is the archive the file was unpacked from."""
    folders = _folders(path)
    smoothadv = max((i for i, f in enumerate(folders) if f == SMOOTHADV_ROOT), default=-1)
    cohen = max((i for i in range(len(folders) - 3) if folders[i] == COHEN_ROOT
                 and folders[i + 1] in COHEN_DATASETS and _NOISE_NAME.fullmatch(folders[i + 3])), default=-1)
    if smoothadv < 0 and cohen < 0:
        return None
    return "smoothadv" if smoothadv > cohen else "cohen"


def smoothadv_input_layer(path: str | os.PathLike) -> str:
    """SmoothAdv's input layer by release folder (the authors' README): "normalize" or "center".

    The rule reads the folders after the path's last ``pretrained_models`` component (the
    root of the authors' archive), where it agrees with the README on every release folder;
    a path without that root needs ``input_layer`` in the configuration."""
    folders = _folders(path)
    if SMOOTHADV_ROOT not in folders:
        raise CheckpointError(
            f"{path}: SmoothAdv checkpoints do not record their input layer, and the path is not below the "
            f"release archive's {SMOOTHADV_ROOT}/ folder whose subfolders decide it (the authors' README); "
            f"set input_layer: normalize or center"
        )
    below = folders[len(folders) - folders[::-1].index(SMOOTHADV_ROOT):]
    top = below[0] if below else None
    if top == "cifar10" and len(below) > 1 and below[1] in SMOOTHADV_NORMALIZE_CIFAR10:
        return "normalize"
    if top in SMOOTHADV_TOP_FOLDERS:
        return SMOOTHADV_TOP_FOLDERS[top]
    raise CheckpointError(
        f"{path}: below {SMOOTHADV_ROOT}/ the folder {top!r} is none of {', '.join(SMOOTHADV_TOP_FOLDERS)} that "
        f"decide SmoothAdv's input layer (the authors' README); set input_layer: normalize or center"
    )


def _check_release_root(path: str | os.PathLike, fmt: str) -> None:
    """Refuse a format that contradicts the release archive the file lies in (see
    :func:`release_root`); called only when no explicit ``input_layer`` says otherwise."""
    root = release_root(path)
    if fmt == "smoothadv" and root == "cohen":
        raise CheckpointError(
            f"{path}: the file lies in Cohen et al.'s release layout "
            f"{COHEN_ROOT}/<cifar10|imagenet>/<arch>/noise_<σ>/ (locuslab/smoothing), whose models normalise their "
            f"input, but format smoothadv would centre it; set format: cohen (or input_layer: if this really is a "
            f"SmoothAdv file)"
        )
    if fmt in COHEN_LAYOUT and root == "smoothadv":
        raise CheckpointError(
            f"{path}: the file lies below {SMOOTHADV_ROOT}/, the root of SmoothAdv's release archive "
            f"(Hadisalman/smoothing-adversarial) whose input layer follows the release folder, but format {fmt} "
            f"always normalises; set format: smoothadv (or input_layer: if this really is a {fmt} file)"
        )


def sigma_in_path(path: str | os.PathLike) -> float | None:
    """σ of a ``…/noise_<σ>/…`` release folder, or None when the path has none."""
    match = _NOISE_FOLDER.search(Path(path).as_posix())
    return float(match.group(1)) if match else None


def _cifar_depth(keys: list[str]) -> int | None:
    """Depth 6n + 2 of a CIFAR ResNet from its keys (n BasicBlocks in layer1), None if not one."""
    blocks = {int(m.group(1)) for k in keys if (m := re.match(r"layer1\.(\d+)\.conv1\.weight$", k))}
    if not blocks or any(k.startswith("layer4.") for k in keys):
        return None
    return 6 * (max(blocks) + 1) + 2


def _strip(state: Mapping[str, Any], prefixes: tuple[str, ...]) -> dict[str, Any]:
    """Remove the first of ``prefixes`` that every key starts with (in order, repeatedly)."""
    out = dict(state)
    for prefix in prefixes:
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def _json_value(value: Any) -> Any:
    """``value`` for the import record (JSON): a pickled file may hold numpy scalars and the like."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return int(value) if hasattr(value, "__index__") else str(value)


def input_layer_constants(info: DatasetInfo, layer: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of :class:`rslib.models.architectures.InputNormalization` that computes the input layer
    ``layer`` on ``info``'s images: normalise (x − mean) / std, centre x − mean, or none."""
    channels = info.image_shape[0]
    if layer in ("normalize", "center") and not info.mean:
        raise CheckpointError(f"input layer {layer} takes the dataset's mean and std, and {info.name} has none (images "
                              f"of your own to certify): give the network's own mean and std (rslib certify --mean "
                              f"--std)")
    if layer == "normalize":
        return tuple(info.mean), tuple(info.std)
    if layer == "center":
        return tuple(info.mean), (1.0,) * channels
    if layer == "none":
        return (0.0,) * channels, (1.0,) * channels
    raise CheckpointError(f"input_layer must be one of {', '.join(INPUT_LAYERS)}, got {layer!r}")


def _dataset(dataset: str | DatasetInfo) -> tuple[DatasetInfo, int | None]:
    """(info, the class count a model must have) of the ``dataset`` argument of the loaders: a
    registered dataset's name (its classes), or the :class:`DatasetInfo` of images of the user's
    own to certify (``None``: the network's own count, which the caller checks against the labels)."""
    if isinstance(dataset, DatasetInfo):
        return dataset, None
    info = dataset_info(dataset)
    return info, info.num_classes


def released_model(
    path: str | os.PathLike,
    fmt: str,
    *,
    dataset: str | DatasetInfo,
    arch: str | None,
    sigma: float,
    method: str,
    seed: int,
    input_layer: str | Mapping[str, Any] | None = None,
    allow_pickle: bool = False,
    entry: str = "the released entry",
) -> tuple[torch.nn.Sequential, ModelSpec, dict[str, Any]]:
    """Rebuild a released checkpoint as ``Sequential(InputNormalization, backbone)``.

    Returns ``(model in eval mode, spec, import record)``; the record (source path, SHA-256,
    format, input layer, what the file said) goes into the model file's provenance.
    ``allow_pickle`` loads a file that also pickles Python objects (``torch.load`` with
    ``weights_only=False``: only for a trusted source); without it such a file is refused with
    a line naming ``allow_pickle: true in {entry}`` (``entry``: the configuration entry).

    ``arch`` is the architecture the slot expects (``datasets.<name>.arch``; None: whatever the
    file holds), and for format ``state_dict`` the builder ``"package.module:function"`` of its
    network; formats ``torchscript`` and ``exported`` ignore it. ``input_layer``: the module docstring.
    """
    if fmt in GENERIC_FORMATS:
        return _generic_model(path, fmt, dataset=dataset, builder=arch, sigma=sigma, method=method, seed=seed,
                              input_layer=input_layer, allow_pickle=allow_pickle, entry=entry)
    if fmt not in FORMATS:
        raise CheckpointError(f"unknown released-checkpoint format {fmt!r}; known: {', '.join(RELEASED_FORMATS)}")
    if input_layer is not None and not isinstance(input_layer, str):
        raise CheckpointError(f"format {fmt} takes input_layer {', '.join(INPUT_LAYERS)}; mean/std apply to formats "
                              f"{GENERIC_FORMATS_TEXT}")
    weights_key, default_layer = FORMATS[fmt]
    if input_layer is None:
        _check_release_root(path, fmt)
    layer = input_layer or default_layer
    if layer == "by_folder":
        layer = smoothadv_input_layer(path)
    if layer not in INPUT_LAYERS:
        raise CheckpointError(f"input_layer must be one of {', '.join(INPUT_LAYERS)}, got {layer!r}")
    info, classes = _dataset(dataset)

    path_sigma = sigma_in_path(path)
    if path_sigma is not None and not math.isclose(path_sigma, sigma, abs_tol=1e-9):
        raise CheckpointError(f"{path}: expected a model for sigma={sigma:g}, found one trained at sigma={path_sigma:g} "
                              f"(its folder noise_{path_sigma:g})")

    blob = read_checkpoint(path, recover="replace it with an intact copy of the released file",
                           allow_pickle=allow_pickle, pickle_switch=f"allow_pickle: true in {entry}")
    if not isinstance(blob, dict) or not isinstance(blob.get(weights_key), dict):
        found = sorted(map(str, blob))[:6] if isinstance(blob, dict) else type(blob).__name__
        raise CheckpointError(f"{path}: expected a {fmt} checkpoint (a dict with {weights_key!r}), found keys {found}")
    file_arch = blob.get("arch")
    if weights_key == "state_dict":
        if not isinstance(file_arch, str) or file_arch not in FOREIGN_ARCHS:
            raise CheckpointError(f"{path}: expected arch {arch!r} ({', '.join(FOREIGN_ARCHS)} in the file), "
                                  f"found arch {file_arch!r}")
        found_arch = FOREIGN_ARCHS[file_arch]
        state = _strip(blob[weights_key], ("1.", "module."))
        if any(k.startswith("0.") for k in blob[weights_key]):
            raise CheckpointError(f"{path}: expected Cohen's layout (no state in the input layer), found keys under '0.'")
    else:
        state = _strip(blob[weights_key], ("module.",))
        depth = _cifar_depth(list(state))
        found_arch = f"resnet{depth}" if depth else "not a CIFAR ResNet"
    if arch is not None and found_arch != arch:
        raise CheckpointError(f"{path}: expected architecture {arch!r} (datasets.{info.name}.arch), found "
                              f"{found_arch!r}")
    if found_arch not in ARCHITECTURES:
        raise CheckpointError(f"{path}: expected an architecture rslib defines ({', '.join(sorted(ARCHITECTURES))}), "
                              f"found {found_arch!r}")
    arch = found_arch
    fc = state.get("fc.weight")
    if not isinstance(fc, torch.Tensor) or fc.ndim != 2:
        raise CheckpointError(f"{path}: expected a classifier layer 'fc.weight', found none")
    if classes is not None and fc.shape[0] != classes:
        raise CheckpointError(f"{path}: expected {classes} classes ({info.name}), found {fc.shape[0]}")

    mean, std = input_layer_constants(info, layer)
    spec = ModelSpec(arch=arch, dataset=info.name, num_classes=fc.shape[0], in_channels=info.image_shape[0],
                     mean=mean, std=std, sigma=float(sigma), method=method, seed=int(seed), hparams={})
    model = spec.build()
    _load_weights(path, model[1], state, arch)
    record = {
        "source": str(path), "sha256": file_digest(path, "sha256"), "format": fmt, "input_layer": layer,
        "arch_in_file": _json_value(file_arch), "epoch_in_file": _json_value(blob.get("epoch")),
        "sigma_in_path": path_sigma, "allow_pickle": bool(allow_pickle),
    }
    return model.eval(), spec, record


def _load_weights(path: str | os.PathLike, network: torch.nn.Module, state: Mapping[str, Any], arch: str) -> None:
    """Load ``state`` into ``network``, refusing missing, unexpected or reshaped keys with one line."""
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    resized = [k for k in expected if k in state and tuple(getattr(state[k], "shape", ())) != tuple(expected[k].shape)]
    if missing or unexpected or resized:
        found = "; ".join(f"{what} {keys[:3]}{'…' if len(keys) > 3 else ''}" for what, keys in
                          (("missing keys", missing), ("unexpected keys", unexpected), ("other shapes", resized)) if keys)
        raise CheckpointError(f"{path}: weights do not fit {arch!r}: {found}")
    network.load_state_dict(state)


def generic_input_layer(info: DatasetInfo, input_layer: str | Mapping[str, Any] | None
                        ) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
    """(name, mean, std) of the input layer of a network of :data:`GENERIC_FORMATS`: ``None`` →
    ``none`` (the [0, 1] pixels as they are); a name of :data:`INPUT_LAYERS` → that layer on
    ``info``'s constants; ``{"mean": [...], "std": [...]}`` → (x − mean) / std, named like the
    dataset's layer it equals, else ``"mean=[…] std=[…]"``."""
    if input_layer is None or isinstance(input_layer, str):
        name = input_layer or "none"
        return (name, *input_layer_constants(info, name))
    channels = info.image_shape[0]
    try:
        mean = tuple(float(v) for v in input_layer["mean"])
        std = tuple(float(v) for v in input_layer["std"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"the input normalisation must give mean and std as lists of numbers, got "
                              f"{dict(input_layer)!r}") from None
    if len(mean) != channels or len(std) != channels:
        raise CheckpointError(f"mean and std need {channels} values each ({info.name} has {channels}-channel images), "
                              f"got {len(mean)} and {len(std)}")
    if not all(math.isfinite(v) for v in mean) or not all(math.isfinite(v) and v > 0 for v in std):
        raise CheckpointError(f"mean must be finite and std finite and > 0, got mean={list(mean)} std={list(std)}")
    for name in INPUT_LAYERS if info.mean else ("none",):
        if input_layer_constants(info, name) == (mean, std):
            return name, mean, std
    return f"mean={list(mean)} std={list(std)}", mean, std


def _generic_model(
    path: str | os.PathLike,
    fmt: str,
    *,
    dataset: str | DatasetInfo,
    builder: str | None,
    sigma: float,
    method: str,
    seed: int,
    input_layer: str | Mapping[str, Any] | None,
    allow_pickle: bool,
    entry: str,
) -> tuple[torch.nn.Sequential, ModelSpec, dict[str, Any]]:
    """:func:`released_model` for :data:`GENERIC_FORMATS`."""
    info, classes = _dataset(dataset)
    path_sigma = sigma_in_path(path)
    if path_sigma is not None and not math.isclose(path_sigma, sigma, abs_tol=1e-9):
        raise CheckpointError(f"{path}: expected a model for sigma={sigma:g}, found one trained at sigma={path_sigma:g} "
                              f"(its folder noise_{path_sigma:g})")
    try:
        layer, mean, std = generic_input_layer(info, input_layer)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if fmt in (TORCHSCRIPT, EXPORTED):
        arch = fmt
        model = with_input_layer((load_torchscript if fmt == TORCHSCRIPT else load_exported)(path), mean, std)
    else:
        if not isinstance(builder, str) or not is_builder(builder):
            raise CheckpointError(f"{path}: format state_dict needs the function that builds its network, "
                                  f"'package.module:function', got {builder!r}")
        arch = builder
        state = read_checkpoint(path, recover="replace it with an intact copy of the file",
                                allow_pickle=allow_pickle, pickle_switch=f"allow_pickle: true in {entry}")
        if not isinstance(state, Mapping) or not state or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
            found = sorted(map(str, state))[:6] if isinstance(state, Mapping) else type(state).__name__
            raise CheckpointError(f"{path}: expected a state dict (parameter names → tensors, torch.save("
                                  f"net.state_dict())), found {found}")
        try:
            model = build_model(builder, info.num_classes, info.image_shape[0], mean, std)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        _load_weights(path, model[1], _strip(state, ("module.",)), builder)
    model.eval()
    classes = _check_outputs(path, model, info, classes)
    spec = ModelSpec(arch=arch, dataset=info.name, num_classes=classes, in_channels=info.image_shape[0],
                     mean=mean, std=std, sigma=float(sigma), method=method, seed=int(seed), hparams={})
    record = {
        "source": str(path), "sha256": file_digest(path, "sha256"), "format": fmt, "input_layer": layer,
        "mean": list(mean), "std": list(std), "builder": builder if fmt == "state_dict" else None,
        "sigma_in_path": path_sigma, "allow_pickle": bool(allow_pickle),
    }
    return model, spec, record


@torch.inference_mode()
def _check_outputs(path: str | os.PathLike, model: torch.nn.Module, info: DatasetInfo, classes: int | None) -> int:
    """One forward pass over a batch of two blank images of ``info``'s shape: the network must
    run on them and give ``classes`` logits (None: any number of them); returns that number."""
    shape = (2, *info.image_shape)
    try:
        logits = model(torch.zeros(shape))
    except Exception as exc:  # a network of any codebase fails in its own ways
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"{path}: the network fails on a batch of {info.name} images of shape {shape}: "
                              f"{reason}") from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != shape[0]:
        found = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise CheckpointError(f"{path}: expected logits of shape (batch, {info.num_classes}), found {found}")
    if classes is not None and logits.shape[1] != classes:
        raise CheckpointError(f"{path}: expected {classes} classes ({info.name}), found {logits.shape[1]}")
    return int(logits.shape[1])


def load_any_model(
    path: str | os.PathLike,
    fmt: str | None = None,
    *,
    dataset: str | DatasetInfo,
    sigma: float,
    arch: str | None = None,
    input_layer: str | Mapping[str, Any] | None = None,
    allow_pickle: bool = False,
    allow_code: bool = False,
    method: str = "external",
    seed: int = 0,
    entry: str = "the released entry",
    device: torch.device | str = "cpu",
) -> tuple[torch.nn.Sequential, ModelSpec, dict[str, Any]]:
    """A model file of any supported kind as ``(model in eval mode on device, spec, record)``.

    ``fmt``: ``"rslib"`` — an rslib model file (:func:`rslib.models.checkpoint.load_model`,
    refused when trained for another dataset or σ; ``allow_code`` there; the record is the file's
    ``extra``); a format of :data:`RELEASED_FORMATS` — :func:`released_model` with ``arch``,
    ``input_layer``, ``allow_pickle``, ``method``, ``seed`` and ``entry`` (the record is the import
    record; ``method`` and ``seed`` only label the spec); None — an rslib model file, a
    TorchScript archive or a torch.export archive, told apart by their contents, anything else
    refused with a line that lists the formats to name.

    ``dataset`` is a registered dataset's name, or the :class:`DatasetInfo` of images of the
    user's own to certify (``rslib certify FILE.npz|FOLDER``,
    :func:`rslib.data.registry.evaluation_dataset_info`), which no model was trained "on": then
    the dataset an rslib model file records is not compared, the network must run on a batch of
    the images' shape, and its class count is its own (``spec.num_classes``; the caller checks
    the labels against it).
    """
    if fmt is None:
        fmt = (TORCHSCRIPT if is_torchscript_archive(path) else EXPORTED if is_exported_archive(path)
               else "rslib")
        if fmt == "rslib":
            _require_rslib_file(path)
    if fmt == "rslib":
        if arch is not None or input_layer is not None:
            raise CheckpointError(f"{path}: an rslib model file records its architecture and input layer; arch and "
                                  f"input_layer apply to the released formats ({', '.join(RELEASED_FORMATS)})")
        if isinstance(dataset, DatasetInfo):
            model, spec, extra = load_model(path, sigma=sigma, allow_code=allow_code)
            _check_outputs(path, model, dataset, spec.num_classes)
            return model.to(device), spec, extra
        return load_model(path, dataset=dataset, sigma=sigma, device=device, allow_code=allow_code)
    model, spec, record = released_model(path, fmt, dataset=dataset, arch=arch, sigma=sigma, method=method, seed=seed,
                                         input_layer=input_layer, allow_pickle=allow_pickle, entry=entry)
    model.rslib_spec = spec  # as load_model does: Smooth refuses it at another σ
    return model.to(device), spec, record


def _require_rslib_file(path: str | os.PathLike) -> None:
    """Refuse, with the formats to name, a file that is not an rslib model file, a TorchScript or a
    torch.export archive."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's loaders raise many types
        pickled = pickled_object(exc)
        found = f"it pickles Python objects ({pickled})" if pickled else "not a file torch.load reads"
    else:
        if isinstance(blob, dict) and blob.get("format") == FORMAT:
            return
        found = f"a dict with keys {sorted(map(str, blob))[:6]}" if isinstance(blob, dict) else type(blob).__name__
    raise CheckpointError(
        f"{path} is not an rslib model file, a TorchScript or a torch.export archive ({found}); name its format: "
        f"{', '.join(REFERENCE_FORMATS)} (checkpoints of the reference repositories) or state_dict (a state dict, "
        f"with the function that builds its network)")
