"""Model files that say what they are.

A model file records the architecture, dataset, input normalisation, noise level σ, training
method, seed and hyper-parameters beside the weights, so that a mismatched use (certifying a
σ = 0.50 model at σ = 0.25, a CIFAR model on SVHN) is refused with a one-line error instead
of silently producing wrong certificates.

Two kinds of network are stored differently. A registered architecture or a builder
``"package.module:function"`` (:mod:`rslib.models.architectures`) is rebuilt from its name and
loaded with the weights in ``state_dict``. A TorchScript network (``arch`` :data:`TORCHSCRIPT`,
imported by :mod:`rslib.models.released`) is stored whole: its archive, as written by
``torch.jit.save``, is the uint8 tensor ``torchscript`` of the file, and ``state_dict`` is
empty. An exported network (``arch`` :data:`EXPORTED`: ``torch.export.save`` of an
``ExportedProgram``, the ``.pt2`` archive that torch 2.14 recommends over TorchScript) is stored
the same way, as the uint8 tensor ``exported``. The file itself is always read with torch's
weights-only loader; rebuilding a TorchScript, exported or builder network runs code (the
graph from the file, or the named function), so :func:`load_model` does it only with
``allow_code=True``.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from rslib.models.architectures import EXPORTED, TORCHSCRIPT, build_model, is_builder, with_input_layer
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
        """The untrained model of a registered architecture or builder (not of :data:`TORCHSCRIPT`)."""
        return build_model(self.arch, self.num_classes, self.in_channels, self.mean, self.std)


def save_model(path: str | os.PathLike, model: torch.nn.Module, spec: ModelSpec, extra: dict[str, Any] | None = None) -> None:
    """Write ``model``'s weights with ``spec`` and ``extra`` (e.g. provenance, timings), atomically.

    ``extra`` must be JSON-like (dicts, lists, str, numbers): the weights-only loader reads
    nothing else, so anything richer is refused here rather than at load time."""
    try:
        json.dumps(extra or {}, allow_nan=True)
    except TypeError as exc:
        raise TypeError(f"save_model: extra must hold only JSON types ({exc})") from None
    blob = {"format": FORMAT, "spec": asdict(spec), "extra": extra or {}}
    if spec.arch == TORCHSCRIPT:
        network = model[1]
        if not isinstance(network, torch.jit.ScriptModule):
            raise TypeError(f"save_model: arch {TORCHSCRIPT!r} needs a TorchScript network behind the input layer, "
                            f"got {type(network).__name__}")
        archive = io.BytesIO()
        with torchscript_deprecation_silenced():
            torch.jit.save(network, archive)
        blob["state_dict"] = {}
        blob["torchscript"] = torch.frombuffer(bytearray(archive.getvalue()), dtype=torch.uint8)
    elif spec.arch == EXPORTED:
        network = model[1]
        if not isinstance(network, ExportedNetwork):
            raise TypeError(f"save_model: arch {EXPORTED!r} needs an ExportedNetwork (load_exported) behind the input "
                            f"layer, got {type(network).__name__}")
        blob["state_dict"] = {}
        blob["exported"] = torch.frombuffer(bytearray(network.archive), dtype=torch.uint8)
    else:
        blob["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
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
    allow_code: bool = False,
) -> tuple[torch.nn.Sequential, ModelSpec, dict[str, Any]]:
    """Rebuild a saved model; refuse it if it was trained for another dataset, σ or method.

    Returns ``(model in eval mode on device, spec, extra)``. The file is read weights-only; a
    TorchScript or exported network, or one built by a ``"package.module:function"`` builder
    (module docstring), is rebuilt only with ``allow_code=True`` — loading it runs code — and
    refused with one line otherwise.
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
    if (spec.arch in (TORCHSCRIPT, EXPORTED) or is_builder(spec.arch)) and not allow_code:
        how = {TORCHSCRIPT: "holds its network as a TorchScript archive, which torch runs as code when it loads it",
               EXPORTED: "holds its network as a torch.export archive, whose graph torch rebuilds and runs when it "
                         "loads it"}.get(spec.arch, f"rebuilds its network by importing and calling {spec.arch!r}")
        raise CheckpointError(f"{path} {how}; load it only if you trust its source: load_model(..., allow_code=True), "
                              f"or rslib certify --allow-code")
    if spec.arch in (TORCHSCRIPT, EXPORTED):
        what, load = ("TorchScript", load_torchscript) if spec.arch == TORCHSCRIPT else ("torch.export", load_exported)
        archive = blob.get(spec.arch)
        if not isinstance(archive, torch.Tensor) or archive.dtype != torch.uint8:
            raise CheckpointError(f"{path}: arch {spec.arch!r} but no {what} archive in the file; "
                                  f"recover: {force_rebuild(path)}")
        model = with_input_layer(load(archive.numpy().tobytes(), f"the archive in {path}"), spec.mean, spec.std)
    else:
        try:
            model = spec.build()
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        try:
            model.load_state_dict(blob["state_dict"])
        except RuntimeError as exc:
            raise CheckpointError(f"weights in {path} do not fit architecture {spec.arch!r}: "
                                  f"{str(exc).splitlines()[0]}") from None
    # Smooth reads this to refuse certifying the model at another σ (allow_sigma_mismatch=True to opt out)
    model.rslib_spec = spec
    return model.to(device).eval(), spec, blob.get("extra", {})


def load_torchscript(source: str | os.PathLike | bytes, where: str | None = None) -> torch.jit.ScriptModule:
    """A TorchScript network (``torch.jit.load`` on the CPU, eval mode) from a file or an archive's
    bytes; one :class:`CheckpointError` line, naming ``where`` (default: the file), when it is not one."""
    where = where or str(source)
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise CheckpointError(f"checkpoint not found: {source}")
    try:
        with torchscript_deprecation_silenced():
            network = torch.jit.load(io.BytesIO(source) if isinstance(source, bytes) else str(source),
                                     map_location="cpu")
    except Exception as exc:  # torch.jit.load raises RuntimeError, ValueError … on files of other kinds
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:160]
        raise CheckpointError(f"{where} is not a TorchScript archive that torch.jit.load reads: {reason}") from None
    return network.eval()


class ExportedNetwork(torch.nn.Module):
    """The network of a ``torch.export`` archive (``ExportedProgram.module()``), with the archive's
    bytes, which :func:`save_model` stores unchanged. An exported graph keeps the mode it was
    exported in (torch refuses ``eval()`` on it), so ``train``/``eval`` set only this wrapper's
    flag; :func:`load_exported` checks that the graph computes each image on its own, as an
    eval-mode network does."""

    def __init__(self, program: torch.nn.Module, archive: bytes):
        super().__init__()
        self.program = program
        self.archive = archive

    def train(self, mode: bool = True) -> ExportedNetwork:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)


def load_exported(source: str | os.PathLike | bytes, where: str | None = None) -> ExportedNetwork:
    """The network of a ``torch.export.save`` archive (``.pt2``; a file or its bytes), on the CPU;
    one :class:`CheckpointError` line, naming ``where`` (default: the file), when it is not one, or
    when it cannot classify batches of any size: certification feeds 1 to ``batch_size`` noisy
    images at a time, so the program must take one input whose first dimension is dynamic, with
    no upper bound, and classify each image on its own (:data:`EXPORT_HINT`)."""
    where = where or str(source)
    if isinstance(source, (str, os.PathLike)):
        if not Path(source).is_file():
            raise CheckpointError(f"checkpoint not found: {source}")
        source = Path(source).read_bytes()
    try:
        program = torch.export.load(io.BytesIO(source))
    except Exception as exc:  # torch.export.load raises RuntimeError, KeyError … on files of other kinds
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:160]
        raise CheckpointError(f"{where} is not a torch.export archive that torch.export.load reads: {reason}") from None
    image_shape = _check_batch_dimension(program, where)
    network = ExportedNetwork(program.module(), bytes(source))
    if image_shape is not None:
        _check_inference_behaviour(network, image_shape, where)
    return network


#: how to export a network that certification can run (:func:`load_exported`)
EXPORT_HINT = ("export it with torch.export.export(net.eval(), (x,), "
               "dynamic_shapes=({0: torch.export.Dim('batch')},))")


def _check_batch_dimension(program: Any, where: str) -> tuple[int, ...] | None:
    """One user input, whose first dimension is symbolic with no upper bound; returns the shape of
    one image when its other dimensions are fixed (None when they are dynamic too)."""
    inputs = [node for node in program.graph.nodes
              if node.op == "placeholder" and node.name in program.graph_signature.user_inputs]
    if len(inputs) != 1:
        raise CheckpointError(f"{where}: the exported program takes {len(inputs)} inputs; a classifier takes one "
                              f"batch of images: {EXPORT_HINT}")
    value = inputs[0].meta.get("val")
    if not isinstance(value, torch.Tensor) or value.dim() < 2:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else "not recorded"
        raise CheckpointError(f"{where}: the exported program's input is not a batch of images (its shape: {shape}): "
                              f"{EXPORT_HINT}")
    batch = value.shape[0]
    if not isinstance(batch, torch.SymInt):
        raise CheckpointError(f"{where}: the program was exported for batches of exactly {batch} images, but "
                              f"certification feeds batches of any size: {EXPORT_HINT}")
    # torch checks an upper bound at every call; a lower one of 2 (torch's own for a batch exported as
    # dynamic) is not enforced, and the batch of one in _check_inference_behaviour shows it
    bounds = program.range_constraints.get(batch.node.expr)
    if bounds is not None and bounds.upper.is_Integer:
        raise CheckpointError(f"{where}: the program was exported for batches of at most {int(bounds.upper)} images, "
                              f"but certification feeds batches as large as its batch size (--batch, "
                              f"certify.batch_size): {EXPORT_HINT}")
    image = tuple(value.shape[1:])
    return image if all(isinstance(d, int) for d in image) else None


@torch.inference_mode()
def _check_inference_behaviour(network: ExportedNetwork, image_shape: tuple[int, ...], where: str) -> None:
    """Four random images classified together, the first alone, and the four again: an image's
    logits must not depend on the rest of its batch (batch norm on batch statistics) nor change
    between calls (dropout), as with a network exported in training mode, whose mode the graph
    keeps. (Differences of float rounding between batch sizes pass.)"""
    images = torch.rand((4, *image_shape), generator=torch.Generator().manual_seed(0))
    try:
        together, alone, again = network(images), network(images[:1]), network(images)
    except Exception as exc:  # the graph's own failures: shapes, dtypes, ops
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"{where}: the exported network fails on a batch of 4 images of shape "
                              f"{image_shape}: {reason}") from None
    if not (torch.allclose(together[:1], alone, rtol=1e-4, atol=1e-4)
            and torch.allclose(together, again, rtol=1e-4, atol=1e-4)):
        raise CheckpointError(f"{where}: the exported network's logits for an image depend on the rest of its batch "
                              f"or change between calls, as in training mode (batch norm on batch statistics, "
                              f"dropout); an exported graph keeps the mode it was exported in: {EXPORT_HINT}")


@contextmanager
def torchscript_deprecation_silenced() -> Iterator[None]:
    """Without torch's FutureWarning "`torch.jit.load` is deprecated" (torch 2.14): TorchScript
    still loads and runs, and the warning would repeat in every job log."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def is_exported_archive(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a ``torch.export.save`` archive (a zip file with an ``archive_format``
    record at its root folder), not a TorchScript archive or a ``torch.save`` file; reads only the
    zip directory."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.count("/") == 1 and name.endswith("/archive_format") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``: a zip file with a ``code/``
    folder), not a ``torch.save`` file (a zip file without one); reads only the zip directory."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
