"""Model files that say what they are.

A model file records the architecture, dataset, input normalisation, noise level σ, training
method, seed and hyper-parameters beside the weights, so that a mismatched use (certifying a
σ = 0.50 model at σ = 0.25, a CIFAR model on SVHN) is refused with a one-line error instead
of silently producing wrong certificates.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from rslib.models.architectures import build_model
from rslib.runtime.errors import CheckpointError, force_rebuild
from rslib.runtime.io import atomic_path

FORMAT = "rslib-model/1"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model and check that it is used as trained."""

    arch: str
    dataset: str
    num_classes: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sigma: float
    method: str
    seed: int
    hparams: dict[str, Any] = field(default_factory=dict)

    def build(self) -> torch.nn.Sequential:
        return build_model(self.arch, self.num_classes, self.in_channels, self.mean, self.std)


def save_model(path: str | os.PathLike, model: torch.nn.Module, spec: ModelSpec, extra: dict[str, Any] | None = None) -> None:
    """Write ``model``'s weights with ``spec`` and ``extra`` (e.g. provenance, timings), atomically.

    ``extra`` must be JSON-like (dicts, lists, str, numbers): the weights-only loader reads
    nothing else, so anything richer is refused here rather than at load time."""
    try:
        json.dumps(extra or {}, allow_nan=True)
    except TypeError as exc:
        raise TypeError(f"save_model: extra must hold only JSON types ({exc})") from None
    blob = {
        "format": FORMAT,
        "spec": asdict(spec),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def read_checkpoint(
    path: str | os.PathLike,
    recover: str | None = None,
    *,
    allow_pickle: bool = False,
    pickle_switch: str | None = None,
) -> dict[str, Any]:
    """Load a torch file with ``weights_only=True``; a missing or corrupt file → CheckpointError
    whose message ends with ``recover`` (default: :func:`rslib.runtime.errors.force_rebuild`, for workflow outputs).

    Released files of other repositories only (:mod:`rslib.models.released`; rslib's own files stay
    weights-only): ``pickle_switch`` names the setting that allows a file that also pickles
    Python objects (an ``argparse.Namespace``, numpy scalars …), which torch's weights-only
    loader refuses although the file is intact; such a file is then reported as what it is,
    not as corrupt. ``allow_pickle=True`` is that setting: ``torch.load(weights_only=False)``,
    which runs whatever code the pickle names, so only for files whose source is trusted."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as exc:  # torch's loaders raise many types on damaged files (KeyError, IndexError, …)
        pickled = pickled_object(exc) if not allow_pickle else None
        if pickled is not None and pickle_switch is not None:
            raise CheckpointError(
                f"{path} holds Python objects besides tensors ({pickled}), which torch's weights-only loader "
                f"refuses; the file is not damaged: load it only if you trust its source, by setting {pickle_switch}"
            ) from None
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        reason = reason.split(". ")[0][:120]  # torch's first line can be a paragraph
        raise CheckpointError(f"corrupt checkpoint {path}: {reason}; {recover or 'recover: ' + force_rebuild(path)}") from None


#: torch's weights-only refusal of a pickled class or function: "Unsupported global: GLOBAL
#: argparse.Namespace" (torch 2.14, the pinned version), "Unsupported class argparse.Namespace"
#: (the wording of older releases)
_PICKLED_GLOBAL = re.compile(r"Unsupported (?:global: GLOBAL |class )([\w.]+)")


def pickled_object(exc: BaseException) -> str | None:
    """The Python class or function a weights-only load refused (``_pickle.UnpicklingError``
    "Weights only load failed … Unsupported global: GLOBAL argparse.Namespace"), or None when
    ``exc`` is another failure. A damaged file also fails with "Weights only load failed", but
    on an unsupported opcode ("Unsupported operand 110"), not on a named global."""
    if not isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" not in str(exc):
        return None
    match = _PICKLED_GLOBAL.search(str(exc))
    return match.group(1) if match else None


def load_model(
    path: str | os.PathLike,
    *,
    dataset: str | None = None,
    sigma: float | None = None,
    method: str | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.nn.Sequential, ModelSpec, dict[str, Any]]:
    """Rebuild a saved model; refuse it if it was trained for another dataset, σ or method.

    Returns ``(model in eval mode on device, spec, extra)``.
    """
    blob = read_checkpoint(path)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rslib model file (expected format {FORMAT!r})")
    raw = dict(blob["spec"])
    raw["mean"], raw["std"] = tuple(raw["mean"]), tuple(raw["std"])
    spec = ModelSpec(**raw)
    if dataset is not None and spec.dataset != dataset:
        raise CheckpointError(f"model {path} was trained on {spec.dataset!r}, not {dataset!r}")
    if sigma is not None and not math.isclose(spec.sigma, sigma, rel_tol=0, abs_tol=1e-9):
        raise CheckpointError(f"model {path} was trained at sigma={spec.sigma:g} but is used at sigma={sigma:g}")
    if method is not None and spec.method != method:
        raise CheckpointError(f"model {path} was trained with {spec.method!r}, not {method!r}")
    model = spec.build()
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {path} do not fit architecture {spec.arch!r}: {str(exc).splitlines()[0]}") from None
    # Smooth reads this to refuse certifying the model at another σ (allow_sigma_mismatch=True to opt out)
    model.rslib_spec = spec
    return model.to(device).eval(), spec, blob.get("extra", {})
