"""The plausibility check of an imported released checkpoint, and the import itself.

A released file does not record everything a slot assumes (the input layer of SmoothAdv's
releases, the σ of MACER's): after :func:`rslib.models.released.released_model` has rebuilt it,
:func:`plausibility` measures it under one seeded Gaussian draw at the slot's σ on the first
evaluation images, and :func:`import_released` writes the model file only when it passes (or is
accepted anyway). A measurement under noise, so it lives with certification.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rslib.certification.noise import NoiseStream
from rslib.data.registry import dataset_info
from rslib.models.architectures import InputNormalization
from rslib.models.checkpoint import save_model
from rslib.models.released import INPUT_LAYERS, RELEASED_FORMATS, input_layer_constants, load_any_model
from rslib.runtime.errors import CheckpointError

#: the plausibility check reads at most this many images, the first of the evaluation subset
PLAUSIBILITY_IMAGES = 100

#: its accuracy threshold on the 10-class datasets (twice chance); see plausibility_threshold
PLAUSIBLE_ACCURACY = 0.20

#: another input layer correct on at least this many more of the same noisy images → refused
LAYER_MARGIN = 10


# --- plausibility: what no path or key shows --------------------------------------------------------
@dataclass(frozen=True)
class CheckImages:
    """The images of the plausibility check: the first :data:`PLAUSIBILITY_IMAGES` of the
    dataset's evaluation subset ([0, 1] pixels, N×C×H×W), their labels, their dataset indices
    (which address the noise: phase ``"import_check"`` of ``NoiseStream(noise_seed)``, so every
    rerun, machine and slot of the dataset sees the same draw on the CPU) and the seed."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: tuple[int, ...]
    noise_seed: int

    @classmethod
    def from_dataset(cls, dataset: Any, evaluation_indices: Sequence[int], noise_seed: int,
                     limit: int = PLAUSIBILITY_IMAGES) -> CheckImages:
        """``dataset[i]`` → (image, label) for the first ``limit`` of ``evaluation_indices``
        (fewer when the subset is smaller): :func:`rslib.data.load.load_split`'s test split and
        :func:`rslib.data.load.evaluation_subset`'s indices."""
        indices = tuple(int(i) for i in list(evaluation_indices)[:limit])
        if not indices:
            raise CheckpointError("the plausibility check needs at least one evaluation image")
        pairs = [dataset[i] for i in indices]
        images = torch.stack([torch.as_tensor(x, dtype=torch.float32) for x, _ in pairs])
        labels = torch.tensor([int(y) for _, y in pairs], dtype=torch.int64)
        return cls(images, labels, indices, int(noise_seed))


def plausibility_threshold(num_classes: int) -> float:
    """Accuracy a correctly imported model must reach in :func:`plausibility`: 20 %, and at
    least twice chance (2/classes; the same 20 % on every registered dataset).

    Why 20 %: chance is 10 % on CIFAR-10, SVHN and digits and 0.1 % on ImageNet; a model that
    ignores its input and names one class gets that class's share, at most 13 % of the first
    100 digits test images. A chance-level 10-class classifier reaches 20 of 100 with
    probability 0.2 % (binomial tail), a 1000-class one practically never. The weakest models
    000 reports are at σ = 1.00: 42.4 % (MACER, CIFAR-10, Table 1) and 37.8 % (MACER,
    ImageNet, Table 4) clean accuracy of the smoothed classifier; the reference repositories
    agree (MACER's README: Cohen 47 %, Salman 45 %, MACER 45 % on CIFAR-10 at σ = 1.00). One
    noisy draw of the base classifier scores lower than the smoothed classifier's majority vote;
    we have not measured it on the released files, but even a model at 30 % per draw falls
    below 20 of 100 with probability 0.9 %, one at 35 % with 0.03 % (and the draw is seeded,
    so a model passes or fails the same way on every rerun; accept_implausible overrides)."""
    return max(PLAUSIBLE_ACCURACY, 2.0 / int(num_classes))


def _pct(value: float) -> str:
    return f"{100 * value:.3g}%"


@torch.inference_mode()
def _correct(backbone: torch.nn.Module, layers: Mapping[str, InputNormalization], noisy: torch.Tensor,
             labels: torch.Tensor, batch: int = 25) -> dict[str, int]:
    """Images classified correctly by ``backbone`` behind each input layer, on the same ``noisy`` batch."""
    counts = dict.fromkeys(layers, 0)
    for start in range(0, len(noisy), batch):
        x, y = noisy[start:start + batch], labels[start:start + batch]
        for name, layer in layers.items():
            counts[name] += int((backbone(layer(x)).argmax(dim=1) == y).sum())
    return counts


def plausibility(
    model: torch.nn.Sequential,
    check: CheckImages,
    *,
    dataset: str,
    sigma: float,
    input_layer: str,
    fmt: str,
    source: str | os.PathLike,
    accept: bool = False,
    entry: str = "the released entry",
) -> dict[str, Any]:
    """Is ``model`` (an imported ``Sequential(input layer, backbone)``) plausibly the model the
    slot says — right input layer, σ and format? Returns the record for the model file; refuses
    an implausible model with one line unless ``accept`` (``accept_implausible: true`` in
    ``entry``), which imports it anyway and marks the record.

    The measurement: ``check``'s images (the first 100 of the evaluation subset), each with ONE
    seeded Gaussian draw at ``sigma`` added to its [0, 1] pixels, not clipped (as everywhere in
    rslib: Cohen et al.'s ``Smooth``), classified by the base network behind each of the three
    input layers (normalise, centre, none) — the same noisy images for all three. Refused when

    * the configured layer's accuracy is below :func:`plausibility_threshold` (20 %), or
    * another input layer classifies at least :data:`LAYER_MARGIN` (10) more of the images
      correctly: a wrong input layer need not fall to chance (it shifts and rescales the
      input of a network whose ReLUs and batch norms partly absorb that), but the right layer
      is the one the network was trained behind, so it should not lose clearly to another.
      With fewer than 100 images both rules still count images, so they get weaker, not
      stricter; with 10 images the second rule practically never fires.

    What one accuracy can see, and what not. A wrong input layer: when it hurts accuracy, as
    in the tests (a centre-layer network behind a normalise layer, on digits). A wrong σ: only
    a model trained at a much smaller σ than the slot's (its accuracy collapses under more
    noise than it was trained for) — how much smaller depends on the data: on the 8×8 digits a
    network trained at σ = 0.25 still classifies about a third of the images at σ = 1.0 and
    20–25 % at σ = 2.0, around the threshold; tests/unit/test_released.py refuses it at σ = 4.0.
    On CIFAR-10 and ImageNet we have not measured how far a released σ = 0.25 model falls at
    σ = 1.0. The other direction — a file trained at a larger σ in a smaller-σ slot — is
    invisible: less noise rarely lowers accuracy; the ``noise_<σ>`` folder check is the guard
    there, and MACER's files have none. A wrong format shows as a wrong input layer (the
    formats that load the same keys differ in nothing else).

    ``input_layer`` names the layer ``model[0]`` computes (the configured one); the others of
    :data:`INPUT_LAYERS` are built from the dataset's constants (:func:`input_layer_constants`).
    A network of another codebase with its own mean and std (``"mean=[…] std=[…]"``,
    :func:`rslib.models.released.generic_input_layer`) is compared with all three.
    """
    info = dataset_info(dataset)
    if not isinstance(input_layer, str) or not input_layer:
        raise CheckpointError(f"input_layer must name the model's input layer, got {input_layer!r}")
    if check.images.ndim != 4 or check.images.shape[1] != info.image_shape[0]:
        raise CheckpointError(f"plausibility check: expected {info.image_shape[0]}-channel images of {dataset}, "
                              f"found a batch of shape {tuple(check.images.shape)}")
    noise = NoiseStream(check.noise_seed, "cpu")
    shape = tuple(check.images.shape[1:])
    draws = torch.cat([noise.sample(i, "import_check", 0, 1, shape) for i in check.indices])
    noisy = check.images + float(sigma) * draws
    names = INPUT_LAYERS if input_layer in INPUT_LAYERS else (input_layer, *INPUT_LAYERS)
    layers = {name: model[0] if name == input_layer else InputNormalization(*input_layer_constants(info, name))
              for name in names}
    backbone = model[1].eval()
    counts = _correct(backbone, layers, noisy, check.labels)
    n, correct = len(check.indices), counts[input_layer]
    accuracy, threshold = correct / n, plausibility_threshold(info.num_classes)
    best = max((name for name in names if name != input_layer), key=lambda name: counts[name])
    problem = None
    measured = (f"{_pct(accuracy)} of {n} evaluation images correct under one noise draw at sigma={sigma:g}")
    if accuracy < threshold:
        hint = f"; input layer {best} gets {_pct(counts[best] / n)}" if counts[best] >= correct + LAYER_MARGIN else ""
        problem = f"{measured}, below the threshold {_pct(threshold)} (chance {_pct(1 / info.num_classes)}){hint}"
    elif counts[best] >= correct + LAYER_MARGIN:
        problem = (f"{measured} (threshold {_pct(threshold)}), but input layer {best} gets "
                   f"{_pct(counts[best] / n)} on the same noisy images")
    if problem is not None and not accept:
        raise CheckpointError(
            f"{source}: implausible import: {problem}; suspects: input layer {input_layer}, sigma {sigma:g}, "
            f"format {fmt}; correct them, or set accept_implausible: true in {entry} to import it anyway"
        )
    return {
        "images": n, "correct": correct, "accuracy": accuracy, "threshold": threshold,
        "chance": 1 / info.num_classes, "sigma": float(sigma), "noise_seed": check.noise_seed,
        "noise_phase": "import_check", "input_layer": input_layer,
        "accuracy_by_input_layer": {name: counts[name] / n for name in names},
        "passed": problem is None, "accepted_implausible": problem is not None, "problem": problem,
    }


def import_released(
    path: str | os.PathLike,
    fmt: str,
    out_model: str | os.PathLike,
    *,
    check: CheckImages | None,
    accept_implausible: bool = False,
    entry: str = "the released entry",
    provenance: Mapping[str, Any] | None = None,
    **slot: Any,
) -> dict[str, Any]:
    """Write ``path`` (a released checkpoint of format ``fmt``) as an rslib model file at
    ``out_model`` for the grid slot ``slot`` (``dataset``, ``arch``, ``sigma``, ``method``,
    ``seed``, optional ``input_layer``, ``allow_pickle``: see
    :func:`rslib.models.released.released_model`, read through
    :func:`rslib.models.released.load_any_model`); returns the import record, whose
    ``plausibility`` is :func:`plausibility`'s record on ``check`` (None: not checked — the
    workflow always checks; ``check=None`` is for tests of the layouts with random weights).
    ``entry`` names the configuration entry in the messages. Nothing is written when the file
    is refused."""
    if fmt not in RELEASED_FORMATS:
        raise CheckpointError(f"unknown released-checkpoint format {fmt!r}; known: {', '.join(RELEASED_FORMATS)}")
    model, spec, record = load_any_model(path, fmt, entry=entry, **slot)
    record["plausibility"] = None if check is None else plausibility(
        model, check, dataset=spec.dataset, sigma=spec.sigma, input_layer=record["input_layer"], fmt=fmt,
        source=path, accept=accept_implausible, entry=entry)
    save_model(out_model, model, spec, {"imported": record, "train_seconds": None,
                                        "provenance": dict(provenance or {})})
    return record
