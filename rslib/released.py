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
    (CIFAR-10 mean/std, ImageNet mean/std: the values of :mod:`rslib.dataset_registry`). On
    ImageNet ``net`` is ``DataParallel(resnet50)``: keys ``1.module.conv1.weight`` ….
    ``arch`` is ``cifar_resnet20``, ``cifar_resnet110`` or ``resnet50``.
``smoothadv`` — Salman et al. (Hadisalman/smoothing-adversarial): Cohen's layout, but the
    input layer is either ``NormalizeLayer`` or ``InputCenterLayer`` (x − mean, no division),
    and the file does not record which. The authors' README gives the rule by release folder:
    ``imagenet32/``, ``cifar10/finetune_cifar_from_imagenetPGD2steps/`` and
    ``cifar10/self_training/`` normalise; ``imagenet/`` and every other ``cifar10/`` folder
    centre. :func:`smoothadv_input_layer` applies that rule to the file's path; an explicit
    ``input_layer`` overrides it.
``macer`` — Zhai et al. (RuntianZ/macer): ``torch.save({'net', 'epoch'})`` of the bare
    ResNet-110 (``conv1.weight`` …, no prefix) that takes [0, 1] pixels with no normalisation
    at all (its data pipeline is ``ToTensor()`` only).

The CIFAR ResNets of all these repositories have the key names and shapes of
:class:`rslib.models.CifarResNet` (``conv1``, ``bn1``, ``layer{1,2,3}.k.{conv1,bn1,conv2,bn2}``,
``layer{2,3}.0.downsample.{0,1}``, ``fc``); their average pooling is ``AvgPool2d(8)``, equal to
our adaptive pooling on 32×32 inputs.

What a file does not record is checked where it can be: the architecture against the
dataset's configured one (``arch`` key, or the ResNet depth counted from the keys), the number
of classes against the dataset, and σ against a ``noise_<σ>`` folder in the path (the layout of
Cohen's and Salman's releases: ``…/noise_0.25/checkpoint.pth.tar``). A mismatch, or a file of
another format, is refused with one line naming what was expected and what was found, and
nothing is written.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .checkpoint import ModelSpec, read_checkpoint, save_model
from .dataset_registry import dataset_info
from .errors import CheckpointError
from .io import file_digest

#: format name → (dictionary key of the weights, default input layer)
FORMATS: dict[str, tuple[str, str]] = {
    "cohen": ("state_dict", "normalize"),
    "consistency": ("state_dict", "normalize"),
    "smoothmix": ("state_dict", "normalize"),
    "smoothadv": ("state_dict", "by_folder"),
    "macer": ("net", "none"),
}
INPUT_LAYERS = ("normalize", "center", "none")

#: ``arch`` names of the Cohen-layout repositories → our architectures
FOREIGN_ARCHS = {"cifar_resnet20": "resnet20", "cifar_resnet110": "resnet110", "resnet50": "resnet50"}

#: SmoothAdv release folders whose models normalise (the authors' README); others centre
SMOOTHADV_NORMALIZE_FOLDERS = ("imagenet32", "finetune_cifar_from_imagenetPGD2steps", "self_training")

_NOISE_FOLDER = re.compile(r"(?:^|/)noise_(\d+(?:\.\d+)?)(?:/|$)")


def smoothadv_input_layer(path: str | os.PathLike) -> str:
    """SmoothAdv's input layer by release folder (the authors' README): "normalize" or "center"."""
    parts = Path(path).as_posix().split("/")
    if any(folder in parts for folder in SMOOTHADV_NORMALIZE_FOLDERS):
        return "normalize"
    if "imagenet" in parts or "cifar10" in parts:
        return "center"
    raise CheckpointError(
        f"{path}: SmoothAdv checkpoints do not record their input layer and the path has none of the release "
        f"folders (imagenet32/, imagenet/, cifar10/…) that decide it; set input_layer: normalize or center"
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
) -> tuple[torch.nn.Sequential, ModelSpec, dict[str, Any]]:
    """Rebuild a released checkpoint as ``Sequential(InputNormalization, backbone)``.

    Returns ``(model in eval mode, spec, import record)``; the record (source path, SHA-256,
    format, input layer, what the file said) goes into the model file's provenance.
    """
    if fmt not in FORMATS:
        raise CheckpointError(f"unknown released-checkpoint format {fmt!r}; known: {', '.join(sorted(FORMATS))}")
    weights_key, default_layer = FORMATS[fmt]
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

    blob = read_checkpoint(path, recover="replace it with an intact copy of the released file")
    if not isinstance(blob, dict) or not isinstance(blob.get(weights_key), dict):
        found = sorted(blob)[:6] if isinstance(blob, dict) else type(blob).__name__
        raise CheckpointError(f"{path}: expected a {fmt} checkpoint (a dict with {weights_key!r}), found keys {found}")
    file_arch = blob.get("arch")
    if weights_key == "state_dict":
        if file_arch not in FOREIGN_ARCHS:
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

    channels = info.image_shape[0]
    if layer == "normalize":
        mean, std = info.mean, info.std
    elif layer == "center":
        mean, std = info.mean, (1.0,) * channels
    else:
        mean, std = (0.0,) * channels, (1.0,) * channels
    spec = ModelSpec(arch=arch, dataset=dataset, num_classes=info.num_classes, in_channels=channels,
                     mean=tuple(mean), std=tuple(std), sigma=float(sigma), method=method, seed=int(seed),
                     hparams={})
    model = spec.build()
    expected = model[1].state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    resized = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or resized:
        found = "; ".join(f"{what} {keys[:3]}{'…' if len(keys) > 3 else ''}" for what, keys in
                          (("missing keys", missing), ("unexpected keys", unexpected), ("other shapes", resized)) if keys)
        raise CheckpointError(f"{path}: weights do not fit {arch!r}: {found}")
    model[1].load_state_dict(state)
    record = {
        "source": str(path), "sha256": file_digest(path, "sha256"), "format": fmt, "input_layer": layer,
        "arch_in_file": file_arch, "epoch_in_file": blob.get("epoch"),
        "sigma_in_path": path_sigma,
    }
    return model.eval(), spec, record


def import_released(
    path: str | os.PathLike,
    fmt: str,
    out_model: str | os.PathLike,
    *,
    provenance: Mapping[str, Any] | None = None,
    **slot: Any,
) -> dict[str, Any]:
    """Write ``path`` (a released checkpoint of format ``fmt``) as an rslib model file at
    ``out_model`` for the grid slot ``slot`` (``dataset``, ``arch``, ``sigma``, ``method``,
    ``seed``, optional ``input_layer``: see :func:`released_model`); returns the import record.
    Nothing is written when the file is refused."""
    model, spec, record = released_model(path, fmt, **slot)
    save_model(out_model, model, spec, {"imported": record, "train_seconds": None,
                                        "provenance": dict(provenance or {})})
    return record
