"""Certify named ensemble schemes (:mod:`rslib.ensembles.schemes`) and fit their held-out weights.

Certification from stored member outputs (:func:`certify_scheme_from_outputs`) and direct
evaluation of the member networks (:func:`certify_scheme_direct`, for datasets where storing
outputs is too large, config ``ensemble_evaluation: direct``) run the same decisions on the same
noise (:class:`rslib.certification.noise.NoiseStream`).

EsbRS (``000`` Sec. 3.2, "Formulation") smooths the *hard decision* of an ensemble, h(x) =
argmax_c Σ_l w_l F^l(x)_c, and Theorem 3.1 gives the usual Cohen et al. certificate for the
smoothed h; every member sees the same noise draw. Certifying from the members' stored outputs
(:mod:`rslib.ensembles.outputs`) is therefore exactly ``Smooth(EnsembleClassifier(...))`` on
the same noise, at the cost of a reduction.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from rslib.certification.smooth import Smooth, certify_from_counts
from rslib.certification.tsv import HEADER, certificate_row
from rslib.ensembles.outputs import _check_compatible
from rslib.ensembles.rules import EnsembleClassifier, Rule, get_rule, soft_rule
from rslib.ensembles.schemes import Scheme
from rslib.ensembles.weights import (
    coefficients_from_probabilities,
    pseudo_model_probabilities,
    solve_weights,
)
from rslib.runtime.io import atomic_path
from rslib.runtime.progress import progress


def rule_for(scheme: Scheme, settings: Mapping[str, Any]) -> Callable[..., torch.Tensor]:
    """The scheme's aggregation rule with its parameters from ``settings`` (config ``ensembles``)."""
    if scheme.aggregation == "k_consensus":
        return get_rule("k_consensus", k=int(settings["k_consensus"]["k"]))
    if scheme.aggregation == "sween_adaptive":
        sw = settings["sween"]
        return get_rule("sween_adaptive", threshold=float(sw["threshold"]), alpha=float(sw["alpha"]))
    return get_rule(scheme.aggregation)


def point_optimal_weights(perturbation: torch.Tensor, label: int, closed_form: str = "corrected") -> torch.Tensor:
    """EsbRS optimal weights for one query point from the members' pseudo-model outputs
    ``perturbation`` (k, m·n, c): Alg. 2 ComputeWeight with reference class ``label``.

    k = 2 uses the closed form (``closed_form="as_printed"`` selects ``000``'s printed Eq. 10,
    see :mod:`rslib.ensembles.weights`); k > 2 the exact simplex QP.
    """
    return solve_weights(coefficients_from_probabilities(perturbation, int(label)), closed_form == "as_printed")


def _selected_class(selection_logits: torch.Tensor) -> int:
    """The class the average-weight soft ensemble selects from the n0 selection samples."""
    counts = torch.bincount(soft_rule(selection_logits), minlength=selection_logits.shape[2])
    return int(counts.argmax())


def certify_scheme_from_outputs(
    outputs_list: Sequence[Mapping[str, Any]],
    scheme: Scheme,
    settings: Mapping[str, Any],
    alpha: float,
    sigma: float,
    out_tsv: str | os.PathLike,
    fitted_weights: Sequence[float] | None = None,
) -> list[list[float]]:
    """Certify an ensemble under ``scheme`` by reduction over stored member outputs.

    ``settings`` is the config's ``ensembles`` block (k of K-consensus, SWEEN's exit rule, the
    closed form); ``fitted_weights`` the weights fitted on held-out data for fitted schemes.
    Returns the weights used per image.
    """
    weights: torch.Tensor | PointWeights | None
    if scheme.fitted:
        if fitted_weights is None:
            raise ValueError(f"scheme {scheme.name} needs weights fitted on held-out data")
        weights = torch.as_tensor(fitted_weights, dtype=torch.float32)
    elif scheme.per_point:
        if any("perturbation" not in o for o in outputs_list):
            raise ValueError(f"scheme {scheme.name} needs member outputs computed with pseudo-model perturbations")
        perturbation = [o["perturbation"] for o in outputs_list]
        closed_form = settings["optimal"]["closed_form"]

        def weights(pos: int, label: int, selection: torch.Tensor) -> torch.Tensor:
            reference = label if scheme.weights == "point-true" else _selected_class(selection)
            return point_optimal_weights(torch.stack([p[pos] for p in perturbation]), reference, closed_form)

    else:
        weights = None
    return certify_ensemble(outputs_list, rule_for(scheme, settings), weights, alpha, sigma, out_tsv)


def certify_scheme_direct(
    members: Sequence[nn.Module],
    member_keys: Sequence[int],
    dataset: Any,
    indices: Sequence[int],
    scheme: Scheme,
    settings: Mapping[str, Any],
    *,
    num_classes: int,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    batch_size: int,
    noise_seed: int,
    out_tsv: str | os.PathLike,
    device: torch.device | str = "cpu",
    fitted_weights: Sequence[float] | None = None,
    output_dtype: torch.dtype | None = None,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> list[list[float]]:
    """Certify an ensemble under ``scheme`` by running the member networks on the noise
    (``Smooth(EnsembleClassifier(...))``), for outputs too large to store (config
    ``ensemble_evaluation: direct``). Same noise, same decisions as
    :func:`certify_scheme_from_outputs`; with ``output_dtype=torch.float16`` exactly the
    classifier that float16-stored outputs certify. Returns the weights used per image.
    """
    device = torch.device(device)
    members = [m.to(device).eval() for m in members]
    rule = rule_for(scheme, settings)
    k = len(members)
    if scheme.fitted and fitted_weights is None:
        raise ValueError(f"scheme {scheme.name} needs weights fitted on held-out data")
    fixed = torch.as_tensor(fitted_weights, dtype=torch.float32) if scheme.fitted else None

    def smoothed(aggregate, weights):
        return Smooth(EnsembleClassifier(members, aggregate, weights, output_dtype=output_dtype), num_classes, sigma,
                      noise_seed, device)

    # built once; only per-point weights need a new smoothed ensemble per image
    average = smoothed("soft", None) if scheme.weights == "point-predicted" else None
    fixed_smooth = None if scheme.per_point else smoothed(rule, fixed)
    used: list[list[float]] = []
    started = time.perf_counter()
    with atomic_path(out_tsv) as tmp, open(tmp, "w") as out:
        out.write(HEADER)
        for done, i in enumerate(indices, start=1):
            t0 = time.perf_counter()
            x, label = dataset[int(i)]
            w = fixed
            if scheme.per_point:
                opt = settings["optimal"]
                reference = int(label)
                if average is not None:
                    reference = int(average.sample_counts(x, n0, batch_size, int(i), "selection").argmax())
                perturbation = torch.stack([
                    pseudo_model_probabilities(member, x, int(i), int(key), noise_seed, sigma, int(opt["n"]),
                                               int(opt["m"]), float(opt["t"]), float(opt["sigma_tilde"]), batch_size)
                    for member, key in zip(members, member_keys)
                ])
                w = point_optimal_weights(perturbation, reference, opt["closed_form"])
            smooth = smoothed(rule, w) if scheme.per_point else fixed_smooth
            prediction, radius = smooth.certify(x, n0, n, alpha, batch_size, int(i))
            elapsed = time.perf_counter() - t0
            out.write(certificate_row(i, label, prediction, radius, elapsed))
            used.append([1.0 / k] * k if w is None else torch.as_tensor(w).double().tolist())
            if done % max(1, len(indices) // 10) == 0 or done == len(indices):
                log(f"certified {progress(done, len(indices), started, 'images')}")
    return used


def fit_weights(
    kind: str,
    members: Sequence[nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    sigma: float,
    settings: Mapping[str, Any],
    seed: int,
    device: torch.device | str = "cpu",
) -> list[float]:
    """Weights fitted once on held-out training images (``images``, ``labels``), for the fitted
    schemes: ``"optimal"`` — EsbRS's objective averaged over the held-out points
    (:func:`rslib.ensembles.weights.fit_global_weights`); ``"sween"`` — SWEEN's cross-entropy under
    Gaussian noise (:func:`rslib.ensembles.sween.sween_weights`). ``settings`` is the config's
    ``ensembles`` block; all randomness comes from ``seed``.
    """
    from rslib.certification.noise import mix_seed
    from rslib.ensembles.sween import SweenFit, sween_weights
    from rslib.ensembles.weights import fit_global_weights

    device = torch.device(device)
    members = [m.to(device).eval() for m in members]
    images = images.to(device)
    generator = torch.Generator(device=device).manual_seed(mix_seed(seed, 907))
    if kind == "optimal":
        opt = settings["optimal"]
        w = fit_global_weights(members, images, labels, sigma, int(opt["n"]), int(opt["m"]), float(opt["t"]),
                               float(opt["sigma_tilde"]), generator)
    elif kind == "sween":
        w = sween_weights(members, images, labels, sigma, SweenFit.from_settings(settings["sween"]), generator)
    else:
        raise ValueError(f"unknown fitted weights {kind!r}; known: optimal, sween")
    return torch.as_tensor(w).double().tolist()


# ---------------------------------------------------------------------------------------------
# 3. Certification from stored outputs
# ---------------------------------------------------------------------------------------------
def certify_from_outputs(
    selection_logits: torch.Tensor,
    estimation_logits: torch.Tensor,
    rule: str | Rule,
    weights: torch.Tensor | None,
    alpha: float,
    sigma: float,
) -> tuple[int, float]:
    """Cohen et al.'s CERTIFY for one image, from stored member logits.

    ``selection_logits`` is [members, n0, K], ``estimation_logits`` [members, n, K], both from
    the same noise stream as :meth:`Smooth.certify` uses. Class counts are the bincount of the
    ensemble's decisions; the decision is :func:`rslib.certification.smooth.certify_from_counts`, exactly
    as in :meth:`Smooth.certify` (``000`` Thm. 3.1 with p̲_B = 1 − p̲_A).
    """
    fn = get_rule(rule)
    num_classes = selection_logits.shape[2]
    selection = torch.bincount(fn(selection_logits, weights), minlength=num_classes)
    estimation = torch.bincount(fn(estimation_logits, weights), minlength=num_classes)
    return certify_from_counts(selection, estimation, alpha, sigma)


def certify_member_from_outputs(
    outputs: Mapping[str, Any],
    alpha: float,
    sigma: float,
    out_tsv: str | os.PathLike,
) -> None:
    """The member's own CERTIFY (single model) from its stored float32 class counts: identical
    to :func:`rslib.certification.certify.certify_images` on the same noise, without re-running the network.
    ``time`` is the seconds its forward passes took for that image in :func:`compute_member_outputs`."""
    if float(outputs["sigma"]) != float(sigma):
        raise ValueError(f"outputs were computed at sigma={outputs['sigma']} but certifying at sigma={sigma}")
    with atomic_path(out_tsv) as tmp, open(tmp, "w") as out:
        out.write(HEADER)
        for pos, (i, label) in enumerate(zip(outputs["indices"].tolist(), outputs["labels"].tolist())):
            prediction, radius = certify_from_counts(
                outputs["selection_counts"][pos], outputs["estimation_counts"][pos], alpha, sigma
            )
            out.write(certificate_row(i, label, prediction, radius, float(outputs["seconds"][pos])))


#: Per-image weights: (position in the outputs, true label, selection logits [members, n0, K])
#: -> weights. Used by EsbRS's per-point optimal weights (:mod:`rslib.ensembles.schemes`).
PointWeights = Callable[[int, int, torch.Tensor], torch.Tensor]


def certify_ensemble(
    outputs_list: Sequence[Mapping[str, Any]],
    rule: str | Rule,
    weights: torch.Tensor | Sequence[float] | PointWeights | None,
    alpha: float,
    sigma: float,
    out_tsv: str | os.PathLike,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> list[list[float]]:
    """Certify an ensemble of members given their stored outputs; write the Cohen TSV atomically.

    ``weights`` is fixed (a vector, or None for 1/k) or a :data:`PointWeights` callable giving
    each image its own weights. Same columns and row format as
    :func:`rslib.certification.certify.certify_images`; ``time`` is the seconds spent on the reduction for
    that image (members' forward passes are paid once in :func:`compute_member_outputs` and
    shared by all ensembles). Returns the weights used for each image.
    """
    _check_compatible(outputs_list)
    if float(outputs_list[0]["sigma"]) != float(sigma):
        raise ValueError(f"outputs were computed at sigma={outputs_list[0]['sigma']} but certifying at sigma={sigma}")
    fn = get_rule(rule)
    members = len(outputs_list)
    fixed = None if weights is None or callable(weights) else torch.as_tensor(weights, dtype=torch.float32)
    indices = torch.as_tensor(outputs_list[0]["indices"]).tolist()
    labels = torch.as_tensor(outputs_list[0]["labels"]).tolist()
    used: list[list[float]] = []
    started = time.perf_counter()
    with atomic_path(out_tsv) as tmp, open(tmp, "w") as out:
        out.write(HEADER)
        for pos, (i, label) in enumerate(zip(indices, labels)):
            t0 = time.perf_counter()
            selection = torch.stack([o["selection"][pos] for o in outputs_list])
            estimation = torch.stack([o["estimation"][pos] for o in outputs_list])
            w = weights(pos, int(label), selection) if callable(weights) else fixed
            prediction, radius = certify_from_outputs(selection, estimation, fn, w, alpha, sigma)
            elapsed = time.perf_counter() - t0
            out.write(certificate_row(i, label, prediction, radius, elapsed))
            used.append([1.0 / members] * members if w is None else torch.as_tensor(w).double().tolist())
    log(f"certified ensemble of {members} members on {len(indices)} images in {time.perf_counter() - started:.2f}s")
    return used
