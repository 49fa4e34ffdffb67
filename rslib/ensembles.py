"""Ensembles of smoothed classifiers: shared-noise member outputs, aggregation rules and
certification by reduction over stored outputs.

EsbRS (``000`` Sec. 3.2, "Formulation") smooths the *hard decision* of an ensemble:
h(x) = argmax_c H(x)_c with H(x) = Σ_l w_l F^l(x) over the members' softmax outputs, and
Theorem 3.1 gives the usual Cohen et al. certificate for the smoothed h. Every member sees the
same noise draw. Because the ensemble decision on a noisy input is a deterministic function of
the members' logits on that input, we run each member *once* on the seeded noise stream
(:class:`rslib.noise.NoiseStream`, same phases and indices as :class:`rslib.smoothing.Smooth`)
and store its logits; every ensemble (rule, weights, subset, size; SPEC "Performance", Figure 3)
is then a cheap reduction over the stored tensors and certifies exactly like running
``Smooth(EnsembleClassifier(...))`` on the same noise.

Aggregation rules (:data:`RULES`), all ``(member_logits[members, samples, K], weights) ->
LongTensor[samples]``:

* ``soft``  — EsbRS: argmax Σ_l w_l softmax(z_l) (``000`` Sec. 3.2; average weights 1/k);
* ``logit`` — soft-voting on logits, argmax Σ_l w_l z_l (``004`` Sec. 3, Eq. (2); App. on
  aggregation choices: soft-voting without softmax is their default);
* ``vote``  — hard (weighted) majority vote of member argmaxes (``004``'s "hard-voting");
* ``mme``   — Max-Margin Ensemble (``000`` ref. [21], Table 3): the member with the largest
  top-1 − top-2 softmax margin on that sample decides;
* ``k_consensus`` — ``004`` Sec. 6 "K-Consensus Aggregation": if the first K members agree,
  return their class, else the logit (soft-voting) average of all members;
* ``sween_adaptive`` — ``002`` Sec. 4.3 / App. B.1 Algorithm 1: weighted adaptive early exit.

Soundness: every rule here is a fixed function of the members' outputs on the noisy input (no
label, no data-dependent weights computed from the query's label), so the smoothed ensemble
is an ordinary base classifier and Cohen et al.'s CERTIFY applies unchanged.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import norm
from torch import nn

from .certify import HEADER, certificate_row
from .io import atomic_path
from .noise import NoiseStream
from .progress import progress
from .smoothing import certify_from_counts, noisy_batches
from .weights import pseudo_model_probabilities

#: An aggregation rule: (member logits [members, samples, K], weights [members] or None)
#: -> predicted class per sample, LongTensor[samples].
Rule = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]

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

    The inputs are exactly those :meth:`rslib.smoothing.Smooth.sample_counts` builds (same
    noise stream, same block-aligned batches: both use :func:`rslib.smoothing.noisy_batches`),
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
    """
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
            logits = member_logits(model, x, num, batch_size, noise, sigma, int(i), phase)
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
    (:func:`rslib.weights.pseudo_model_probabilities`) and ``"indices"``.
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


# ---------------------------------------------------------------------------------------------
# 2. Aggregation rules
# ---------------------------------------------------------------------------------------------
def _prepare(member_logits: torch.Tensor, weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 logits (stored outputs may be float16) and float32 weights (default 1/k)."""
    if member_logits.dim() != 3:
        raise ValueError(f"member logits must be [members, samples, classes], got shape {tuple(member_logits.shape)}")
    z = member_logits.float()
    members = z.shape[0]
    if weights is None:
        w = torch.full((members,), 1.0 / members, dtype=torch.float32, device=z.device)
    else:
        w = torch.as_tensor(weights, dtype=torch.float32, device=z.device).flatten()
        if w.numel() != members:
            raise ValueError(f"got {w.numel()} weights for {members} members")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
    return z, w


def soft_rule(member_logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """EsbRS soft ensemble: argmax_c Σ_l w_l softmax(z_l)_c (``000`` Sec. 3.2, H(x) = Σ w_l F^l(x)).

    ``weights=None`` is the average-weight EsbRS (w_l = 1/k). Ties → lowest class.
    """
    z, w = _prepare(member_logits, weights)
    return torch.einsum("m,msk->sk", w, z.softmax(dim=2)).argmax(dim=1)


def logit_rule(member_logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Soft-voting on logits: argmax_c Σ_l w_l z_{l,c} (``004`` Sec. 3, Eq. (2), γ = identity)."""
    z, w = _prepare(member_logits, weights)
    return torch.einsum("m,msk->sk", w, z).argmax(dim=1)


def vote_rule(member_logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Hard (weighted) majority vote of the members' argmaxes (``004`` App., "hard-voting").

    Ties between classes → lowest class index (``argmax`` returns the first maximum).
    """
    z, w = _prepare(member_logits, weights)
    votes = F.one_hot(z.argmax(dim=2), z.shape[2]).float()  # [members, samples, K]
    return torch.einsum("m,msk->sk", w, votes).argmax(dim=1)


def mme_rule(member_logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Max-Margin Ensemble (``000`` ref. [21], compared in ``000`` Table 3).

    On each sample the member with the largest softmax margin p_top1 − p_top2 decides (ties
    → lowest member index). MME has no weights; members with weight 0 are excluded, so a
    weight vector can select a sub-ensemble like for the other rules.
    """
    z, w = _prepare(member_logits, weights)
    if z.shape[2] < 2:
        return torch.zeros(z.shape[1], dtype=torch.long, device=z.device)
    top2 = z.softmax(dim=2).topk(2, dim=2).values
    margin = top2[..., 0] - top2[..., 1]  # [members, samples]
    margin = margin.masked_fill((w <= 0)[:, None], -math.inf)
    decider = margin.argmax(dim=0)  # [samples]
    classes = z.argmax(dim=2)  # [members, samples]
    return classes.gather(0, decider[None]).squeeze(0)


def k_consensus_rule(member_logits: torch.Tensor, weights: torch.Tensor | None = None, *, k: int = 2) -> torch.Tensor:
    """K-Consensus aggregation (``004`` Sec. 6).

    Members are assumed ordered (``004``: by accuracy under noise on a holdout set). If the
    first ``k`` members agree on the predicted class, ``004`` soft-votes those k and returns
    the result; soft-voting of k members that all predict c gives c (each z_l has its maximum
    at c, hence so does their sum), so that class is returned. Otherwise the (weighted) logit
    average of *all* members decides, as in ``004``'s Eq. (2) soft-voting. ``k`` larger than the
    ensemble is clamped (then the rule equals ``logit``). Members with weight 0 are not queried.
    """
    if k < 1:
        raise ValueError(f"k-consensus needs k >= 1, got {k}")
    z, w = _prepare(member_logits, weights)
    active = z[w > 0]  # zero-weight members take no part in the consensus either
    first = active[: min(k, active.shape[0])].argmax(dim=2)  # [k, samples]
    agree = (first == first[:1]).all(dim=0)
    fallback = torch.einsum("m,msk->sk", w, z).argmax(dim=1)
    return torch.where(agree, first[0], fallback)


def sween_adaptive_rule(
    member_logits: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    threshold: float = 0.999,
    alpha: float = 0.05,
) -> torch.Tensor:
    """SWEEN adaptive prediction for weighted ensembles (``002`` Sec. 4.3, App. B.1 Alg. 1), with
    the constants and the exit rule of the authors' code (github SWEEN-author/SWEEN,
    ``model/ensemble.py``, class ``AEnsemble``): T = 0.999, confidence level 0.95 (``alpha`` =
    1 − level), z = Φ⁻¹(1 − α/2) of the standard normal.

    Members are queried in descending weight order π (stable: ties keep member order). After
    i members, with ŵ_j = w_πj / Σ_{j≤i} w_πj, p̄_i = Σ_{j≤i} ŵ_j p_πj (softmax outputs) and
    L = argmax p̄_i, evaluation stops at the first i with

    * i = 1 and p̄_{1,L} > T (the top member is confident), or
    * i > 1 and p̄_{i,L} > 1/2 + z · sqrt(Σ_{j≤i} ŵ_j²) · sqrt(Σ_{j≤i} ŵ_j (p_πj,L − p̄_{i,L})²)
      (the standard error of a weighted mean, with the weighted variance uncorrected, exactly
      as their code computes it), or
    * i = K (all members used),

    and returns L. The rule is a deterministic function of the member outputs on each noisy
    sample, so smoothing it is sound (``002`` App. B.1). Unlike the authors' code we compute all
    members' outputs (they are stored anyway) and reproduce the decision, not the saving.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    z, w = _prepare(member_logits, weights)
    order = torch.sort(w, descending=True, stable=True).indices
    w = w[order].double()
    # float64: the variance is formed from running sums, which cancel in float32
    p = z[order].softmax(dim=2).double()  # [members, samples, K]
    members = p.shape[0]
    cum_w = torch.cumsum(w, 0)[:, None, None]  # W_i
    cum_wp = torch.cumsum(w[:, None, None] * p, 0)  # Σ w p
    cum_wp2 = torch.cumsum(w[:, None, None] * p * p, 0)  # Σ w p²
    mean = cum_wp / cum_w  # p̄_i  [members, samples, K]
    k_i = mean.argmax(dim=2, keepdim=True)  # [members, samples, 1]
    m_k = mean.gather(2, k_i).squeeze(2)
    W = cum_w[..., 0]
    # Σ_j ŵ_j (p_j − p̄)² = (Σ w p² − 2 p̄ Σ w p + p̄² W) / W, all at class L
    sum_wp = cum_wp.gather(2, k_i).squeeze(2)
    sum_wp2 = cum_wp2.gather(2, k_i).squeeze(2)
    variance = ((sum_wp2 - 2 * m_k * sum_wp + m_k * m_k * W) / W).clamp_min(0)
    sum_w2_hat = torch.cumsum(w * w, 0)[:, None] / (W * W)  # Σ ŵ²
    z_crit = float(norm.ppf(1 - alpha / 2))
    half_width = z_crit * torch.sqrt(sum_w2_hat) * torch.sqrt(variance)
    stop = torch.zeros_like(m_k, dtype=torch.bool)
    stop[0] = m_k[0] > threshold
    if members > 1:
        stop[1:] = m_k[1:] > 0.5 + half_width[1:]
    stop[-1] = True
    first_stop = stop.to(torch.uint8).argmax(dim=0)  # argmax returns the first True
    return k_i.squeeze(2).gather(0, first_stop[None]).squeeze(0)


#: Registry of aggregation rules by name. Rules with parameters take them as keywords
#: (``k`` for ``k_consensus``, ``threshold``/``alpha`` for ``sween_adaptive``); see :func:`get_rule`.
RULES: dict[str, Callable[..., torch.Tensor]] = {
    "soft": soft_rule,
    "logit": logit_rule,
    "vote": vote_rule,
    "mme": mme_rule,
    "k_consensus": k_consensus_rule,
    "sween_adaptive": sween_adaptive_rule,
}


def get_rule(rule: str | Rule, **params: Any) -> Rule:
    """Resolve a rule name (or pass a callable through), binding keyword parameters.

    ``get_rule("k_consensus", k=5)`` is the 5-consensus rule of ``004`` Sec. 6.
    """
    if callable(rule):
        return functools.partial(rule, **params) if params else rule
    try:
        fn = RULES[rule]
    except KeyError:
        raise ValueError(f"unknown ensemble rule {rule!r}; known: {', '.join(RULES)}") from None
    return functools.partial(fn, **params) if params else fn


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
    ensemble's decisions; the decision is :func:`rslib.smoothing.certify_from_counts`, exactly
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
    to :func:`rslib.certify.certify_images` on the same noise, without re-running the network.
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


#: Per-image weights: (position in the outputs, true label, selection logits [members, n0, K])
#: -> weights. Used by EsbRS's per-point optimal weights (:mod:`rslib.schemes`).
PointWeights = Callable[[int, int, torch.Tensor], torch.Tensor]


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
    :func:`rslib.certify.certify_images`; ``time`` is the seconds spent on the reduction for
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


# ---------------------------------------------------------------------------------------------
# 4. Direct evaluation
# ---------------------------------------------------------------------------------------------
class EnsembleClassifier(nn.Module):
    """The ensemble's hard decision as a base classifier, for ``Smooth`` to certify directly.

    ``forward`` runs every member on the batch, aggregates with ``rule`` (``rule_params`` are
    bound as in :func:`get_rule`) and returns ``one_hot(decision).float()`` so that
    ``Smooth``'s argmax counts are the rule's decisions.
    Used where storing outputs is too large (many classes × large n) and as the reference that
    :func:`certify_from_outputs` must reproduce.
    """

    def __init__(
        self,
        members: Sequence[nn.Module],
        rule: str | Rule = "soft",
        weights: torch.Tensor | Sequence[float] | None = None,
        output_dtype: torch.dtype | None = None,
        **rule_params: Any,
    ):
        super().__init__()
        #: round member logits to this dtype before aggregating, to evaluate exactly the
        #: classifier that outputs stored in that dtype certify (see compute_member_outputs)
        self.output_dtype = output_dtype
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.rule = get_rule(rule, **rule_params)
        w = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if w is not None and w.numel() != len(members):
            raise ValueError(f"got {w.numel()} weights for {len(members)} members")
        # a buffer so that .to(device) moves the weights with the members
        self.register_buffer("weights", w, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 reduction even under bf16 autocast, as for stored outputs
        outputs = [member(x).float() for member in self.members]
        if self.output_dtype is not None:
            outputs = [z.to(self.output_dtype).float() for z in outputs]
        logits = torch.stack(outputs)
        decision = self.rule(logits, self.weights)
        return F.one_hot(decision, logits.shape[2]).float()
