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
from rslib.models.checkpoint import ModelSpec, read_checkpoint
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


INPUT_LAYERS = ("normalize", "center", "none")


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
    if layer == "normalize":
        return tuple(info.mean), tuple(info.std)
    if layer == "center":
        return tuple(info.mean), (1.0,) * channels
    if layer == "none":
        return (0.0,) * channels, (1.0,) * channels
    raise CheckpointError(f"input_layer must be one of {', '.join(INPUT_LAYERS)}, got {layer!r}")


def released_model(
    path: str | os.PathLike,
    fmt: str,
    *,
    dataset: str,
    arch: str,
    sigma: float,
    method: str,
    seed: int,
    input_layer: str | None = None,
    allow_pickle: bool = False,
    entry: str = "the released entry",
) -> tuple[torch.nn.Sequential, ModelSpec, dict[str, Any]]:
    """Rebuild a released checkpoint as ``Sequential(InputNormalization, backbone)``.

    Returns ``(model in eval mode, spec, import record)``; the record (source path, SHA-256,
    format, input layer, what the file said) goes into the model file's provenance.
    ``allow_pickle`` loads a file that also pickles Python objects (``torch.load`` with
    ``weights_only=False``: only for a trusted source); without it such a file is refused with
    a line naming ``allow_pickle: true in {entry}`` (``entry``: the configuration entry).
    """
    if fmt not in FORMATS:
        raise CheckpointError(f"unknown released-checkpoint format {fmt!r}; known: {', '.join(sorted(FORMATS))}")
    weights_key, default_layer = FORMATS[fmt]
    if input_layer is None:
        _check_release_root(path, fmt)
    layer = input_layer or default_layer
    if layer == "by_folder":
        layer = smoothadv_input_layer(path)
    if layer not in INPUT_LAYERS:
        raise CheckpointError(f"input_layer must be one of {', '.join(INPUT_LAYERS)}, got {layer!r}")
    info = dataset_info(dataset)

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
    if found_arch != arch:
        raise CheckpointError(f"{path}: expected architecture {arch!r} (datasets.{dataset}.arch), found {found_arch!r}")
    fc = state.get("fc.weight")
    if not isinstance(fc, torch.Tensor) or fc.ndim != 2:
        raise CheckpointError(f"{path}: expected a classifier layer 'fc.weight', found none")
    if fc.shape[0] != info.num_classes:
        raise CheckpointError(f"{path}: expected {info.num_classes} classes ({dataset}), found {fc.shape[0]}")

    mean, std = input_layer_constants(info, layer)
    spec = ModelSpec(arch=arch, dataset=dataset, num_classes=info.num_classes, in_channels=info.image_shape[0],
                     mean=mean, std=std, sigma=float(sigma), method=method, seed=int(seed), hparams={})
    model = spec.build()
    expected = model[1].state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    resized = [k for k in expected if k in state and tuple(getattr(state[k], "shape", ())) != tuple(expected[k].shape)]
    if missing or unexpected or resized:
        found = "; ".join(f"{what} {keys[:3]}{'…' if len(keys) > 3 else ''}" for what, keys in
                          (("missing keys", missing), ("unexpected keys", unexpected), ("other shapes", resized)) if keys)
        raise CheckpointError(f"{path}: weights do not fit {arch!r}: {found}")
    model[1].load_state_dict(state)
    record = {
        "source": str(path), "sha256": file_digest(path, "sha256"), "format": fmt, "input_layer": layer,
        "arch_in_file": _json_value(file_arch), "epoch_in_file": _json_value(blob.get("epoch")),
        "sigma_in_path": path_sigma, "allow_pickle": bool(allow_pickle),
    }
    return model.eval(), spec, record
