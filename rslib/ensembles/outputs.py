"""Members' outputs on the shared, seeded noise stream, computed once per member and stored.

Because an ensemble's decision on a noisy input is a deterministic function of its members'
logits on that input, each member is run *once* on the noise stream
(:class:`rslib.certification.noise.NoiseStream`, the phases and indices of
:class:`rslib.certification.smooth.Smooth`) and its logits stored; every ensemble (rule, weights,
subset, size; SPEC "Performance", ``000`` Figure 3) is then a cheap reduction over the stored
tensors (:mod:`rslib.ensembles.certify`). Members of per-point EsbRS weights also store their
pseudo-model outputs (``000`` Alg. 2's m·n samples per image).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from rslib.certification.noise import BLOCK, NoiseStream, round_batch_size
from rslib.certification.smooth import noisy_batches
from rslib.ensembles.weights import pseudo_model_probabilities
from rslib.runtime.devices import free_cached_memory, is_out_of_memory
from rslib.runtime.io import atomic_path
from rslib.runtime.progress import progress

#: Keys of a member-output record (see :func:`compute_member_outputs`).
OUTPUT_KEYS = ("selection", "estimation", "indices", "labels", "noise_seed", "sigma")


# ---------------------------------------------------------------------------------------------
# 1. Shared-noise member outputs
# ---------------------------------------------------------------------------------------------
@torch.inference_mode()
def member_logits(
    model: nn.Module,
    x: torch.Tensor,
    n: int,
    batch_size: int,
    noise: NoiseStream,
    sigma: float,
    index: int,
    phase: str,
) -> torch.Tensor:
    """Logits of ``model`` on the ``n`` noisy copies x + σ·ε of ``phase`` for image ``index``.

    The inputs are exactly those :meth:`rslib.certification.smooth.Smooth.sample_counts` builds (same
    noise stream, same block-aligned batches: both use :func:`rslib.certification.smooth.noisy_batches`),
    so ``bincount(member_logits(...).argmax(1))`` equals ``Smooth(...).sample_counts(...)``
    for the same seed, index and phase. Returns float32 logits of shape (n, K) on the CPU.
    """
    # keep on the device until the end: one host transfer per image, not per batch
    chunks = [model(noisy).float() for noisy in noisy_batches(x, n, batch_size, noise, sigma, index, phase)]
    return torch.cat(chunks).cpu()


def compute_member_outputs(
    model: nn.Module,
    dataset: Any,
    indices: Sequence[int],
    n0: int,
    n: int,
    batch_size: int,
    noise_seed: int,
    sigma: float,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one member on CERTIFY's selection (n0) and estimation (n) noise of every image.

    Returns ``{"selection": (num_images, n0, K), "estimation": (num_images, n, K)}`` logits in
    ``dtype`` (SPEC "Performance": a member is run once and reused by every ensemble), plus
    ``indices``, ``labels`` (int64), ``noise_seed`` and ``sigma`` so that outputs of different
    members can be checked for compatibility.
    float32 (the default, config ``datasets.<d>.stored_output_dtype``) makes every ensemble
    certificate identical to direct float32 evaluation of the same members on the same noise:
    ~2 GB per model at n = 100,000, 500 images and 10 classes. float16 halves that, but its
    rounding flips a member's argmax where two logits agree to ~3 significant digits, and on
    the demo 1 to 3 of 100 average-ensemble certificates then differ from direct evaluation
    (``benchmarks/ensemble_certify.py --dtype float16``). Those certificates stay sound: they
    certify the ensemble of float16-rounded members, a fixed base classifier (as with bf16
    autocast in :class:`Smooth`); ``EnsembleClassifier(..., output_dtype=torch.float16)``
    evaluates exactly that classifier directly.

    ``selection_counts`` / ``estimation_counts`` (num_images, K) are the member's own class counts
    from its float32 logits — exactly :meth:`Smooth.sample_counts`, so the member's single-model
    certificate is a reduction too (:func:`certify_member_from_outputs`) — and ``seconds`` the
    time its forward passes took per image. Pseudo-model outputs for per-point EsbRS weights are
    computed separately (:func:`compute_pseudo_outputs`, :func:`attach_pseudo_outputs`).

    Out-of-memory back-off, as :class:`Smooth`'s: when the device runs out of memory
    (:func:`rslib.runtime.devices.is_out_of_memory`), the batch is halved (whole noise blocks),
    one line goes to ``log`` (default: stderr) and the phase is run again from its first sample;
    later images keep the smaller batch. The noise of a sample is fixed by its stream position,
    so the stored logits are those of a run at the smaller batch from the start. At one block
    the error is raised.
    """
    log = log if log is not None else lambda line: print(line, file=sys.stderr, flush=True)
    batch = round_batch_size(batch_size)
    device = torch.device(device)
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    noise = NoiseStream(noise_seed, device)
    selection: list[torch.Tensor] = []
    estimation: list[torch.Tensor] = []
    labels: list[int] = []
    counts: dict[str, list[torch.Tensor]] = {"selection": [], "estimation": []}
    seconds: list[float] = []
    started = time.perf_counter()
    for done, i in enumerate(indices, start=1):
        x, label = dataset[int(i)]
        t0 = time.perf_counter()
        for phase, num, store in (("selection", n0, selection), ("estimation", n, estimation)):
            while True:
                try:
                    logits = member_logits(model, x, num, batch, noise, sigma, int(i), phase)
                    break
                except Exception as error:
                    if not is_out_of_memory(error) or batch <= BLOCK:
                        raise
                free_cached_memory(device)  # outside the handler: the error's frames no longer hold the batch
                smaller = round_batch_size(batch // 2)
                log(f"out of memory on {device} at {batch} noisy samples per batch: continuing with {smaller} "
                    f"(the same noise samples: the stored outputs do not change)")
                batch = smaller
            counts[phase].append(torch.bincount(logits.argmax(dim=1), minlength=logits.shape[1]))
            store.append(logits.to(dtype))
        seconds.append(time.perf_counter() - t0)
        labels.append(int(label))
        if done % 10 == 0 or done == len(indices):
            print(f"member outputs: {progress(done, len(indices), started, 'images')}",
                  file=sys.stderr, flush=True)
    return {
        "selection_counts": torch.stack(counts["selection"]),
        "estimation_counts": torch.stack(counts["estimation"]),
        "seconds": torch.tensor(seconds, dtype=torch.float64),
        "selection": torch.stack(selection),
        "estimation": torch.stack(estimation),
        "indices": torch.tensor([int(i) for i in indices], dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "noise_seed": int(noise_seed),
        "sigma": float(sigma),
    }


def compute_pseudo_outputs(
    model: nn.Module,
    dataset: Any,
    indices: Sequence[int],
    noise_seed: int,
    sigma: float,
    perturbation: Mapping[str, Any],
    batch_size: int,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """One member's pseudo-model outputs for EsbRS's per-point optimal weights, for every image:
    ``"perturbation"`` (num_images, m·n, K) float32 softmax outputs
    (:func:`rslib.ensembles.weights.pseudo_model_probabilities`) and ``"indices"``.
    ``perturbation = {"member_key", "m", "n", "t", "sigma_tilde"}``. Stored apart from
    :func:`compute_member_outputs`: only members of per-point weighted ensembles need them."""
    model = model.to(torch.device(device)).eval()
    p = perturbation
    perturbed = [
        pseudo_model_probabilities(model, dataset[int(i)][0], int(i), int(p["member_key"]), noise_seed, sigma,
                                   int(p["n"]), int(p["m"]), float(p["t"]), float(p["sigma_tilde"]), batch_size).float()
        for i in indices
    ]
    return {"perturbation": torch.stack(perturbed), "indices": torch.tensor([int(i) for i in indices])}


def _save_npz(path: str | os.PathLike, arrays: Mapping[str, Any]) -> None:
    """An uncompressed ``.npz``, written atomically (SPEC "Reliability")."""
    arrays = {k: (v.cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in arrays.items()}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # a file object, not a name: np.savez would append ".npz" to the temporary name
        np.savez(f, **arrays)


def save_outputs(path: str | os.PathLike, outputs: Mapping[str, Any]) -> None:
    """Write member outputs (:func:`compute_member_outputs`)."""
    missing = [k for k in OUTPUT_KEYS if k not in outputs]
    if missing:
        raise ValueError(f"member outputs lack {', '.join(missing)}")
    _save_npz(path, outputs)


def save_pseudo_outputs(path: str | os.PathLike, pseudo: Mapping[str, torch.Tensor]) -> None:
    """Write pseudo-model outputs (:func:`compute_pseudo_outputs`)."""
    _save_npz(path, {k: pseudo[k] for k in ("perturbation", "indices")})


def attach_pseudo_outputs(outputs: dict[str, Any], shards: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Add a member's pseudo-model outputs (its shards, in order) to its outputs as
    ``"perturbation"``, checking that both cover the same images."""
    parts = []
    for path in shards:
        with np.load(path, allow_pickle=False) as data:
            parts.append((np.array(data["indices"]), np.array(data["perturbation"])))
    indices = np.concatenate([i for i, _ in parts])
    if not np.array_equal(indices, torch.as_tensor(outputs["indices"]).numpy()):
        raise ValueError("pseudo-model outputs cover other images than the member's outputs")
    outputs["perturbation"] = torch.from_numpy(np.concatenate([p for _, p in parts]))
    return outputs


def load_outputs(path: str | os.PathLike) -> dict[str, Any]:
    """Read outputs written by :func:`save_outputs` (tensors keep their stored dtype)."""
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in OUTPUT_KEYS if k not in data.files]
        if missing:
            raise ValueError(f"{path} is not a member-output file (missing {', '.join(missing)})")
        out: dict[str, Any] = {k: torch.from_numpy(np.array(data[k])) for k in data.files}
    out["noise_seed"] = int(out["noise_seed"])
    out["sigma"] = float(out["sigma"])
    return out


def _check_compatible(outputs_list: Sequence[Mapping[str, Any]]) -> None:
    """Members must share images, labels, noise seed, σ and sample counts, or the
    reduction would mix different noise draws."""
    if not outputs_list:
        raise ValueError("an ensemble needs at least one member's outputs")
    ref = outputs_list[0]
    for m, out in enumerate(outputs_list[1:], start=1):
        for key in ("indices", "labels"):
            if not torch.equal(torch.as_tensor(out[key]), torch.as_tensor(ref[key])):
                raise ValueError(f"member {m} was evaluated on different {key} than member 0")
        for key in ("noise_seed", "sigma"):
            if out[key] != ref[key]:
                raise ValueError(f"member {m} has {key}={out[key]} but member 0 has {ref[key]}")
        for key in ("selection", "estimation"):
            if tuple(out[key].shape) != tuple(ref[key].shape):
                raise ValueError(f"member {m} {key} shape {tuple(out[key].shape)} != {tuple(ref[key].shape)}")


def concat_outputs(shards: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Join one member's output shards (contiguous ranges of the evaluation subset) in order."""
    if not shards:
        raise ValueError("no output shards")
    for key in ("noise_seed", "sigma"):
        if len({s[key] for s in shards}) != 1:
            raise ValueError(f"output shards disagree on {key}")
    tensor_keys = [k for k, v in shards[0].items() if isinstance(v, torch.Tensor)]
    out: dict[str, Any] = {k: torch.cat([s[k] for s in shards]) for k in tensor_keys}
    out["noise_seed"], out["sigma"] = shards[0]["noise_seed"], shards[0]["sigma"]
    return out
